//! Builds every guest component for `wasm32-wasip2` (the shop's services and
//! the test fixtures, each a crate of its own), then writes
//! `components.rs`: a path constant per component and a `foreach_component!`
//! macro listing them.
//!
//! The components are built by a nested cargo with a target directory of its
//! own (`target/wasm`; the outer build holds the lock on `target/`), and only
//! rebuilt when the guests, the fixtures or the WIT change.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Each component's package: the shop's services, then the test fixtures.
/// A component is named after its package, with `_` for `-`.
const PACKAGES: &[&str] = &[
    "goods",
    "users",
    "orders",
    "goods-v2",
    "goods-panic",
    "goods-broken",
    "kv-probe",
    "faulty",
    "cycle",
    "pong",
    "self-import",
    "toolchain-export",
    "tax",
    "till",
];

const TARGET: &str = "wasm32-wasip2";

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let root = manifest.parent().unwrap().parent().unwrap().to_path_buf();
    for watched in ["guests", "tests/fixtures", "wit", "Cargo.lock"] {
        println!("cargo:rerun-if-changed={}", root.join(watched).display());
    }
    ensure_target();
    let target_dir = root.join("target/wasm");
    let built = target_dir.join(TARGET).join("release");
    let out = built.join("components");
    std::fs::create_dir_all(&out).unwrap();

    let mut constants = String::new();
    let mut names = String::new();
    let mut list = String::new();
    build(&root, &target_dir, PACKAGES);
    for package in PACKAGES {
        let name = package.replace('-', "_");
        let file = out.join(format!("{name}.wasm"));
        std::fs::copy(built.join(format!("{name}.wasm")), &file)
            .unwrap_or_else(|e| panic!("copying {name}: {e}"));
        let path = file.display().to_string();
        constants.push_str(&format!(
            "/// `{name}.wasm`.\npub const {}: &str = {path:?};\n",
            name.to_uppercase()
        ));
        names.push_str(&format!("        $mac!({name});\n"));
        list.push_str(&format!("    ({name:?}, {}),\n", name.to_uppercase()));
    }
    let generated = format!(
        "{constants}\n/// Every component, by name.\npub const COMPONENTS: &[(&str, &str)] = &[\n{list}];\n\n\
         /// Invoke `$mac!(name)` for every component, so that a list kept elsewhere\n\
         /// (the tests that use each one) fails to build when one is missing.\n\
         #[macro_export]\nmacro_rules! foreach_component {{\n    ($mac:ident) => {{\n{names}    }};\n}}\n"
    );
    let dest = PathBuf::from(std::env::var("OUT_DIR").unwrap()).join("components.rs");
    std::fs::write(dest, generated).unwrap();
}

/// `cargo build --release --target wasm32-wasip2 -p <package>...`, as a
/// build of its own: none of the outer build's flags or target directory
/// leak in. One cargo for all, so that the packages build in parallel.
fn build(root: &Path, target_dir: &Path, packages: &[&str]) {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut command = Command::new(cargo);
    command
        .current_dir(root)
        .args(["build", "--release", "--target", TARGET])
        .args(packages.iter().flat_map(|p| ["-p", p]))
        .env("CARGO_TARGET_DIR", target_dir)
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_BUILD_TARGET");
    let status = command.status().expect("cargo runs");
    assert!(
        status.success(),
        "building the components for {TARGET} failed"
    );
}

/// The guests are built for `wasm32-wasip2`: add the target when rustup can.
fn ensure_target() {
    let installed = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output();
    match installed {
        Ok(out)
            if String::from_utf8_lossy(&out.stdout)
                .lines()
                .any(|l| l == TARGET) => {}
        Ok(_) => {
            println!("cargo:warning=adding the {TARGET} target with rustup");
            let added = Command::new("rustup")
                .args(["target", "add", TARGET])
                .status();
            assert!(
                added.is_ok_and(|s| s.success()),
                "cannot add the {TARGET} target: run `rustup target add {TARGET}`"
            );
        }
        // No rustup: the toolchain must have the target already.
        Err(_) => {}
    }
}
