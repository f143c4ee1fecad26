//! `switchyard build`: a service's folder (as [`crate::scaffold`] writes
//! it) into a component, `NAME-X.Y.Z.wasm` in the folder, or straight into
//! a services folder as `NAME/X.Y.Z.wasm`, where a host picks it up. The
//! language, name and version come from the folder's manifest
//! (`Cargo.toml`, `pyproject.toml` or `package.json`).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::scaffold::{Language, WORLD};
use crate::toolchain::{RUST_TARGET, Toolchains, run};

/// Loaded ahead of a JavaScript service's own module: a `console`, which
/// QuickJS as componentize-qjs embeds it lacks.
const JS_CONSOLE: &str = include_str!("../../../guests/common/js/console.js");

/// Where the built files go in a JavaScript service's folder.
const JS_STAGING: &str = ".switchyard";

/// What a build made.
#[derive(Debug)]
pub struct Built {
    pub name: String,
    pub version: String,
    pub language: Language,
    /// The component file written.
    pub file: PathBuf,
}

/// Build the service in `dir` with `toolchains`, into `services/NAME/` when
/// given, else into `dir`. `progress` hears what takes long (a toolchain
/// installed for the first time).
pub fn build(
    dir: &Path,
    services: Option<&Path>,
    toolchains: &Toolchains,
    progress: &mut dyn FnMut(&str),
) -> Result<Built> {
    let (language, name, version) = manifest(dir)?;
    switchyard_control::loader::valid_service_name(&name)
        .with_context(|| format!("the name in {}'s manifest", dir.display()))?;
    semver::Version::parse(&version).with_context(|| {
        format!(
            "the version {version:?} in {}'s manifest is not semver (like 1.2.0)",
            dir.display()
        )
    })?;
    let dest = match services {
        Some(services) => services.join(&name).join(format!("{version}.wasm")),
        None => dir.join(format!("{name}-{version}.wasm")),
    };
    if services.is_some() && dest.exists() {
        bail!(
            "{} exists: a version is never built over; raise the version in the manifest",
            dest.display()
        );
    }
    std::fs::create_dir_all(dest.parent().expect("a file in a folder"))?;
    // Built beside its place under a hidden name, then moved in at once: a
    // host watching the folder never sees half a file.
    let partial = dest.with_file_name(format!(
        ".{}.partial",
        dest.file_name().unwrap().to_string_lossy()
    ));
    let wit = dir.join("wit");
    let outcome = match language {
        Language::Rust => build_rust(dir, &name, &partial, toolchains, progress),
        Language::Python => {
            let tool = toolchains.componentize_py(progress)?;
            run(
                Command::new(tool)
                    .arg("-d")
                    .arg(&wit)
                    .args(["-w", WORLD, "componentize", "app", "-p"])
                    .arg(dir)
                    .arg("-o")
                    .arg(&partial),
                "componentize-py",
            )
        }
        Language::JavaScript => {
            let tool = toolchains.componentize_qjs(progress)?;
            // The entry loads the console, then the app: its own file and
            // line numbers stay as they are in stack traces.
            let staging = dir.join(JS_STAGING);
            std::fs::create_dir_all(&staging)?;
            std::fs::write(staging.join("console.js"), JS_CONSOLE)?;
            std::fs::write(
                staging.join("main.js"),
                "import './console.js';\nexport * from '../app.js';\n",
            )?;
            run(
                Command::new(tool)
                    .arg("--wit")
                    .arg(&wit)
                    .arg("--js")
                    .arg(staging.join("main.js"))
                    .arg("--module-root")
                    .arg(dir)
                    // The host runs the synchronous ABI.
                    .args(["--world", WORLD, "--sync", "-o"])
                    .arg(&partial),
                "componentize-qjs",
            )
        }
    };
    if let Err(e) = outcome {
        let _ = std::fs::remove_file(&partial);
        return Err(e);
    }
    std::fs::rename(&partial, &dest)
        .with_context(|| format!("moving the component to {}", dest.display()))?;
    Ok(Built {
        name,
        version,
        language,
        file: dest,
    })
}

/// `cargo build --release --target wasm32-wasip2` in `dir`; the component
/// copied to `out`.
fn build_rust(
    dir: &Path,
    name: &str,
    out: &Path,
    toolchains: &Toolchains,
    progress: &mut dyn FnMut(&str),
) -> Result<()> {
    toolchains.rust_target(progress)?;
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    run(
        Command::new(cargo)
            .current_dir(dir)
            .args(["build", "--quiet", "--release", "--target", RUST_TARGET])
            // Its own build, whatever cargo runs this one.
            .env_remove("CARGO_ENCODED_RUSTFLAGS")
            .env_remove("RUSTFLAGS")
            .env_remove("CARGO_BUILD_TARGET"),
        "cargo build",
    )?;
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| dir.join("target"));
    let built = target
        .join(RUST_TARGET)
        .join("release")
        .join(format!("{}.wasm", name.replace('-', "_")));
    std::fs::copy(&built, out).with_context(|| format!("copying {}", built.display()))?;
    Ok(())
}

/// The language, name and version of the service in `dir`, from its manifest.
fn manifest(dir: &Path) -> Result<(Language, String, String)> {
    let read = |file: &str| std::fs::read_to_string(dir.join(file)).ok();
    if let Some(text) = read("Cargo.toml") {
        let cargo: toml::Table =
            toml::from_str(&text).with_context(|| format!("{}/Cargo.toml", dir.display()))?;
        let (name, version) = name_and_version(cargo.get("package"), "Cargo.toml [package]")?;
        return Ok((Language::Rust, name, version));
    }
    if let Some(text) = read("pyproject.toml") {
        let project: toml::Table =
            toml::from_str(&text).with_context(|| format!("{}/pyproject.toml", dir.display()))?;
        let (name, version) = name_and_version(project.get("project"), "pyproject.toml [project]")?;
        return Ok((Language::Python, name, version));
    }
    if let Some(text) = read("package.json") {
        let package: serde_json::Value = serde_json::from_str(&text)
            .with_context(|| format!("{}/package.json", dir.display()))?;
        let field = |key: &str| {
            package[key]
                .as_str()
                .map(str::to_string)
                .with_context(|| format!("package.json has no {key:?}"))
        };
        return Ok((Language::JavaScript, field("name")?, field("version")?));
    }
    bail!(
        "{} holds no service: no Cargo.toml, pyproject.toml or package.json \
         (`switchyard new` writes one)",
        dir.display()
    )
}

fn name_and_version(table: Option<&toml::Value>, what: &str) -> Result<(String, String)> {
    let field = |key: &str| {
        table
            .and_then(|t| t.get(key))
            .and_then(|v| v.as_str())
            .map(str::to_string)
            .with_context(|| format!("{what} has no {key}"))
    };
    Ok((field("name")?, field("version")?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_folder_without_a_service_or_with_a_bad_manifest_is_refused_with_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        let tools = Toolchains::at(dir.path().join("tools"));
        let none = build(dir.path(), None, &tools, &mut |_| {}).unwrap_err();
        assert!(none.to_string().contains("holds no service"), "{none}");
        std::fs::write(
            dir.path().join("package.json"),
            r#"{"name": "Shout", "version": "1"}"#,
        )
        .unwrap();
        let named = build(dir.path(), None, &tools, &mut |_| {}).unwrap_err();
        assert!(
            format!("{named:#}").contains("not a valid service name"),
            "{named:#}"
        );
        std::fs::write(
            dir.path().join("package.json"),
            r#"{"name": "shout", "version": "1"}"#,
        )
        .unwrap();
        let versioned = build(dir.path(), None, &tools, &mut |_| {}).unwrap_err();
        assert!(
            versioned.to_string().contains("is not semver"),
            "{versioned:#}"
        );
        assert!(
            !dir.path().join("tools").exists(),
            "no toolchain installed for a refusal"
        );
    }
}
