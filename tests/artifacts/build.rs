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
    "streamer",
    "hello-http",
    "hello2",
];

/// A component built from a guest in another language, by its toolchain
/// (installed into `target/tools` by `make tools`).
struct Foreign {
    /// The component's name.
    name: &'static str,
    /// The folder of its sources, from the project's root.
    folder: &'static str,
    toolchain: Toolchain,
    world: &'static str,
}

const FOREIGN: &[Foreign] = &[
    Foreign {
        name: "reviews",
        folder: "guests/reviews",
        toolchain: Toolchain::Python,
        world: "switchyard:shop/reviews",
    },
    Foreign {
        name: "wishlist",
        folder: "guests/wishlist",
        toolchain: Toolchain::JavaScript { sync: true },
        world: "switchyard:shop/wishlist",
    },
    // The same, built for the component-model async ABI, which the host
    // refuses with a reason (a test fixture).
    Foreign {
        name: "wishlist-async",
        folder: "guests/wishlist",
        toolchain: Toolchain::JavaScript { sync: false },
        world: "switchyard:shop/wishlist",
    },
    // Services that fail as newcomers' do, in each language (test fixtures).
    Foreign {
        name: "failing-py",
        folder: "tests/fixtures/failing-py",
        toolchain: Toolchain::Python,
        world: "switchyard:platform/service@0.1.0",
    },
    Foreign {
        name: "failing-js",
        folder: "tests/fixtures/failing-js",
        toolchain: Toolchain::JavaScript { sync: true },
        world: "switchyard:platform/service@0.1.0",
    },
];

/// Built into every JavaScript service ahead of its own code: `console`.
const JS_CONSOLE: &str = "guests/common/js/console.js";

#[derive(Clone, Copy)]
enum Toolchain {
    /// componentize-py: `app.py` defines the exports.
    Python,
    /// componentize-qjs (QuickJS): `app.js` exports them; `sync` for the
    /// synchronous ABI.
    JavaScript { sync: bool },
}

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
    let wit = assemble_wit(&root);
    for foreign in FOREIGN {
        build_foreign(&root, &wit, foreign, &built);
    }
    for package in PACKAGES.iter().chain(FOREIGN.iter().map(|f| &f.name)) {
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

/// The one WIT folder the guest toolchains take, assembled at `target/wit`:
/// the shop's package at the top, what it uses (the platform, wasi:keyvalue,
/// wasi:config, wasi:logging) under `deps/`.
fn assemble_wit(root: &Path) -> PathBuf {
    let wit = root.join("target/wit");
    let _ = std::fs::remove_dir_all(&wit);
    let copy_wit_files = |from: &Path, to: &Path| {
        std::fs::create_dir_all(to).unwrap();
        for entry in std::fs::read_dir(from).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "wit") {
                std::fs::copy(&path, to.join(path.file_name().unwrap())).unwrap();
            }
        }
    };
    copy_wit_files(&root.join("wit/shop"), &wit);
    copy_wit_files(&root.join("wit/platform"), &wit.join("deps/platform"));
    for dep in ["keyvalue", "config", "logging"] {
        copy_wit_files(
            &root.join("wit/deps").join(dep),
            &wit.join("deps").join(dep),
        );
    }
    wit
}

/// Build the guest in `foreign.folder` with its toolchain into `out/<name>.wasm`.
fn build_foreign(root: &Path, wit: &Path, foreign: &Foreign, out: &Path) {
    let Foreign {
        name,
        folder,
        toolchain,
        world,
    } = foreign;
    let source = root.join(folder);
    let output = out.join(format!("{}.wasm", name.replace('-', "_")));
    let (tool, mut command) = match *toolchain {
        Toolchain::Python => {
            let tool = root.join("target/tools/python/bin/componentize-py");
            // From a copy of the sources: the tool leaves __pycache__ behind.
            let copy = out.join(format!("{name}-src"));
            let _ = std::fs::remove_dir_all(&copy);
            std::fs::create_dir_all(&copy).unwrap();
            std::fs::copy(source.join("app.py"), copy.join("app.py")).unwrap();
            let mut command = Command::new(&tool);
            command
                .arg("-d")
                .arg(wit)
                .args(["-w", world, "componentize", "app", "-p"])
                .arg(&copy)
                .arg("-o")
                .arg(&output);
            (tool, command)
        }
        Toolchain::JavaScript { sync } => {
            let tool = root.join("target/tools/js/node_modules/.bin/componentize-qjs");
            // The entry runs the console module first, then the app (its
            // file and line numbers unchanged in stack traces).
            let staged = out.join(format!("{name}-src"));
            let _ = std::fs::remove_dir_all(&staged);
            std::fs::create_dir_all(&staged).unwrap();
            std::fs::copy(source.join("app.js"), staged.join("app.js")).unwrap();
            std::fs::copy(root.join(JS_CONSOLE), staged.join("console.js")).unwrap();
            std::fs::write(
                staged.join("main.js"),
                "import './console.js';\nexport * from './app.js';\n",
            )
            .unwrap();
            let mut command = Command::new(&tool);
            command
                .arg("--wit")
                .arg(wit)
                .arg("--js")
                .arg(staged.join("main.js"))
                .args(["--world", world, "-o"])
                .arg(&output);
            if sync {
                command.arg("--sync");
            }
            (tool, command)
        }
    };
    assert!(
        tool.exists(),
        "{} is missing: `make tools` installs it (`make test` and `make run` do)",
        tool.display()
    );
    let result = command.output().expect("the guest toolchain runs");
    assert!(
        result.status.success(),
        "building {name} from {folder} failed:\n{}{}",
        String::from_utf8_lossy(&result.stdout),
        String::from_utf8_lossy(&result.stderr)
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
