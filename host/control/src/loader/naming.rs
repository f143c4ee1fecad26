//! The names in the services folder: which directory names are services,
//! which files are versions of them and which are left alone.

use anyhow::{Context, Result, bail};
use semver::Version;

/// Route prefixes the gateway keeps for itself.
const RESERVED_NAMES: [&str; 5] = ["admin", "healthz", "readyz", "metrics", "rpc"];

/// Is `name` usable as a service name (and so as the first path segment)?
pub fn valid_service_name(name: &str) -> Result<()> {
    let mut chars = name.chars();
    let starts_with_letter = chars.next().is_some_and(|c| c.is_ascii_lowercase());
    let rest_ok = chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if !starts_with_letter || !rest_ok || name.len() > 63 {
        bail!(
            "{name:?} is not a valid service name: use 1 to 63 lower-case letters, digits \
             and '-', starting with a letter"
        );
    }
    if RESERVED_NAMES.contains(&name) {
        bail!("{name:?} is reserved for the host's own routes");
    }
    Ok(())
}

/// The version a component file stands for: `1.2.3.wasm` → 1.2.3.
pub fn version_of_file(file_name: &str) -> Result<Version> {
    let Some(stem) = file_name.strip_suffix(".wasm") else {
        bail!("{file_name:?} is not a .wasm file");
    };
    Version::parse(stem).with_context(|| format!("{stem:?} is not a semver version (like 1.2.0)"))
}

/// Is this a file the loader looks at? Hidden files (uploads in progress,
/// editors' temporaries) and other extensions are not.
pub fn is_component_file(file_name: &str) -> bool {
    file_name.ends_with(".wasm") && !file_name.starts_with('.')
}

/// Why the component file at `parts` (its path under the services folder)
/// is not loaded, when it is not `<service>/<version>.wasm` with a valid
/// service name, saying where it belongs; `None` for a file that is not a
/// component file at all (hidden, another extension), or is in its place.
pub fn misplaced(parts: &[&str]) -> Option<String> {
    let file = parts.last()?;
    if !is_component_file(file) {
        return None;
    }
    match parts {
        [file] => {
            let stem = file.trim_end_matches(".wasm");
            let name = if valid_service_name(stem).is_ok() {
                stem
            } else {
                "<name>"
            };
            Some(format!(
                "not in a service's folder: a version goes in services/<name>/<version>.wasm, \
                 e.g. services/{name}/1.0.0.wasm"
            ))
        }
        [service, _] => valid_service_name(service).err().map(|e| format!("{e:#}")),
        _ => Some(
            "too deep: a version goes directly in its service's folder, \
             services/<name>/<version>.wasm"
                .to_string(),
        ),
    }
}
