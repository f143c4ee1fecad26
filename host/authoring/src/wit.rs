//! The WIT a service folder builds against, embedded in the host: the
//! platform and the `wasi:*` packages it uses, and the shop's interfaces a
//! service may import. Written under the folder's `wit/deps/`, so a service
//! builds outside this project, with nothing but its own folder.

use std::path::Path;

use anyhow::{Context, Result, bail};

/// Each embedded file: its path under `wit/deps/`, and its text.
const DEPS: &[(&str, &str)] = &[
    (
        "platform/handler.wit",
        include_str!("../../../wit/platform/handler.wit"),
    ),
    (
        "platform/handler2.wit",
        include_str!("../../../wit/platform/handler2.wit"),
    ),
    (
        "platform/keyvalue-cas.wit",
        include_str!("../../../wit/platform/keyvalue-cas.wit"),
    ),
    (
        "platform/recovery.wit",
        include_str!("../../../wit/platform/recovery.wit"),
    ),
    (
        "platform/service.wit",
        include_str!("../../../wit/platform/service.wit"),
    ),
    (
        "keyvalue/atomic.wit",
        include_str!("../../../wit/deps/keyvalue/atomic.wit"),
    ),
    (
        "keyvalue/batch.wit",
        include_str!("../../../wit/deps/keyvalue/batch.wit"),
    ),
    (
        "keyvalue/store.wit",
        include_str!("../../../wit/deps/keyvalue/store.wit"),
    ),
    (
        "keyvalue/watch.wit",
        include_str!("../../../wit/deps/keyvalue/watch.wit"),
    ),
    (
        "keyvalue/world.wit",
        include_str!("../../../wit/deps/keyvalue/world.wit"),
    ),
    (
        "config/store.wit",
        include_str!("../../../wit/deps/config/store.wit"),
    ),
    (
        "config/world.wit",
        include_str!("../../../wit/deps/config/world.wit"),
    ),
    (
        "logging/logging.wit",
        include_str!("../../../wit/deps/logging/logging.wit"),
    ),
    (
        "shop/catalog.wit",
        include_str!("../../../wit/shop/catalog.wit"),
    ),
    (
        "shop/directory.wit",
        include_str!("../../../wit/shop/directory.wit"),
    ),
    (
        "shop/worlds.wit",
        include_str!("../../../wit/shop/worlds.wit"),
    ),
];

/// The package the shop's interfaces are in.
const SHOP: &str = "switchyard:shop";
const SHOP_VERSION: &str = "1.0.0";

/// Write every embedded package under `wit/deps/`.
pub fn write_deps(wit: &Path) -> Result<()> {
    for (path, text) in DEPS {
        let file = wit.join("deps").join(path);
        std::fs::create_dir_all(file.parent().expect("a file in a folder"))?;
        std::fs::write(&file, text).with_context(|| format!("writing {}", file.display()))?;
    }
    Ok(())
}

/// The interfaces a service may import: every one the shop declares, by
/// its full name (`switchyard:shop/catalog@1.0.0`).
pub fn importable() -> Vec<String> {
    DEPS.iter()
        .filter(|(path, _)| path.starts_with("shop/"))
        .flat_map(|(_, text)| text.lines())
        .filter_map(|line| line.trim_start().strip_prefix("interface "))
        .filter_map(|rest| rest.split_whitespace().next())
        .map(|name| format!("{SHOP}/{name}@{SHOP_VERSION}"))
        .collect()
}

/// The interface's short name: `switchyard:shop/catalog@1.0.0` → `catalog`.
pub fn short_name(full: &str) -> &str {
    let rest = full.rsplit('/').next().unwrap_or(full);
    rest.split('@').next().unwrap_or(rest)
}

/// The full name of the interface `asked` names: its full name, or its
/// short one (`catalog`).
pub fn resolve_import(asked: &str) -> Result<String> {
    let known = importable();
    match known
        .iter()
        .find(|full| *full == asked || short_name(full) == asked)
    {
        Some(full) => Ok(full.clone()),
        None => bail!(
            "no interface {asked:?} to import; known: {}",
            known.join(", ")
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shops_interfaces_are_importable_by_short_or_full_name() {
        assert_eq!(
            importable(),
            [
                "switchyard:shop/catalog@1.0.0",
                "switchyard:shop/directory@1.0.0"
            ]
        );
        assert_eq!(
            resolve_import("catalog").unwrap(),
            "switchyard:shop/catalog@1.0.0"
        );
        let full = "switchyard:shop/directory@1.0.0";
        assert_eq!(resolve_import(full).unwrap(), full);
        let unknown = resolve_import("ratings").unwrap_err().to_string();
        assert!(unknown.contains("no interface \"ratings\""), "{unknown}");
        assert!(
            unknown.contains("switchyard:shop/catalog@1.0.0"),
            "{unknown}"
        );
    }
}
