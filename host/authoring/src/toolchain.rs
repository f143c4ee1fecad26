//! The toolchains services are built with, pinned: componentize-py for
//! Python, componentize-qjs for JavaScript, cargo with the `wasm32-wasip2`
//! target and wit-bindgen for Rust. Python's and JavaScript's are installed
//! on first use into a folder of their own (a venv, a local
//! `node_modules`), never system-wide; the same layout as the project's
//! `make tools`, which reads its versions from here.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

/// The componentize-py release Python services are built with.
pub const COMPONENTIZE_PY: &str = "0.25.1";
/// The componentize-qjs release JavaScript services are built with.
pub const COMPONENTIZE_QJS: &str = "0.4.5";
/// The wit-bindgen a new Rust service depends on.
pub const WIT_BINDGEN: &str = "0.46";
/// The Rust target components are built for.
pub const RUST_TARGET: &str = "wasm32-wasip2";

/// Where the toolchains are installed.
pub struct Toolchains {
    root: PathBuf,
}

impl Toolchains {
    pub fn at(root: impl Into<PathBuf>) -> Toolchains {
        Toolchains { root: root.into() }
    }

    /// The user's cache: `$XDG_CACHE_HOME/switchyard/toolchains`, or
    /// `~/.cache/switchyard/toolchains`.
    pub fn in_user_cache() -> Result<Toolchains> {
        let cache = std::env::var_os("XDG_CACHE_HOME")
            .filter(|d| !d.is_empty())
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache")))
            .context(
                "neither XDG_CACHE_HOME nor HOME is set: say where toolchains go with --toolchains",
            )?;
        Ok(Toolchains::at(cache.join("switchyard/toolchains")))
    }

    /// componentize-py, installed first if it is not (`progress` hears of it).
    pub fn componentize_py(&self, progress: &mut dyn FnMut(&str)) -> Result<PathBuf> {
        let venv = self.root.join("python");
        let tool = venv.join("bin/componentize-py");
        let installed = format!("componentize_py-{COMPONENTIZE_PY}.dist-info");
        let has_it = glob_one(&venv.join("lib"), &installed);
        if tool.exists() && has_it {
            return Ok(tool);
        }
        progress(&format!(
            "installing componentize-py {COMPONENTIZE_PY} into {} (once)",
            venv.display()
        ));
        let _ = std::fs::remove_dir_all(&venv);
        run(
            Command::new("python3").arg("-m").arg("venv").arg(&venv),
            "python3 -m venv (is python3 installed?)",
        )?;
        run(
            Command::new(venv.join("bin/pip"))
                .args(["install", "--quiet", "--disable-pip-version-check"])
                .arg(format!("componentize-py=={COMPONENTIZE_PY}")),
            "pip install componentize-py",
        )?;
        Ok(tool)
    }

    /// componentize-qjs, installed first if it is not.
    pub fn componentize_qjs(&self, progress: &mut dyn FnMut(&str)) -> Result<PathBuf> {
        let js = self.root.join("js");
        let tool = js.join("node_modules/.bin/componentize-qjs");
        let manifest = js.join("node_modules/componentize-qjs/package.json");
        let version = std::fs::read_to_string(&manifest)
            .ok()
            .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok())
            .and_then(|m| m["version"].as_str().map(str::to_string));
        if tool.exists() && version.as_deref() == Some(COMPONENTIZE_QJS) {
            return Ok(tool);
        }
        progress(&format!(
            "installing componentize-qjs {COMPONENTIZE_QJS} into {} (once)",
            js.display()
        ));
        std::fs::create_dir_all(&js)?;
        run(
            Command::new("npm")
                .current_dir(&js)
                .args([
                    "install",
                    "--silent",
                    "--no-audit",
                    "--no-fund",
                    "--save-exact",
                ])
                .arg(format!("componentize-qjs@{COMPONENTIZE_QJS}")),
            "npm install componentize-qjs (is npm installed?)",
        )?;
        Ok(tool)
    }

    /// Make sure cargo can build for [`RUST_TARGET`]: add it with rustup
    /// when it is missing.
    pub fn rust_target(&self, progress: &mut dyn FnMut(&str)) -> Result<()> {
        let Ok(listed) = Command::new("rustup")
            .args(["target", "list", "--installed"])
            .output()
        else {
            // No rustup: a toolchain managed otherwise; cargo will say.
            return Ok(());
        };
        if String::from_utf8_lossy(&listed.stdout)
            .lines()
            .any(|l| l == RUST_TARGET)
        {
            return Ok(());
        }
        progress(&format!(
            "adding the {RUST_TARGET} target with rustup (once)"
        ));
        run(
            Command::new("rustup").args(["target", "add", RUST_TARGET]),
            "rustup target add",
        )
    }
}

/// Is there an entry named `name` in a folder directly under `dir`
/// (`lib/python3.x/site-packages/<name>` under a venv's `lib`)?
fn glob_one(dir: &Path, name: &str) -> bool {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return false;
    };
    entries
        .flatten()
        .any(|e| e.path().join("site-packages").join(name).exists())
}

/// Run `command`; its output becomes the error when it fails.
pub(crate) fn run(command: &mut Command, what: &str) -> Result<()> {
    let output = command
        .output()
        .with_context(|| format!("{what}: cannot run {:?}", command.get_program()))?;
    if !output.status.success() {
        bail!(
            "{what} failed ({}):\n{}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}
