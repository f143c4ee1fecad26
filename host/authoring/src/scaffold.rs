//! `switchyard new`: a service's folder, ready to build. Its own WIT world
//! (the platform and the interfaces it imports, with every package it needs
//! under `wit/deps/`), an app with a handler that compiles and answers, a
//! manifest with its name and version, and a README line on building it.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use anyhow::{Context, Result, bail};

use crate::toolchain::WIT_BINDGEN;
use crate::wit;

/// The languages a service can be written in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Language {
    Rust,
    Python,
    JavaScript,
}

impl FromStr for Language {
    type Err = anyhow::Error;
    fn from_str(text: &str) -> Result<Language> {
        match text {
            "rust" => Ok(Language::Rust),
            "python" => Ok(Language::Python),
            "javascript" | "js" => Ok(Language::JavaScript),
            other => bail!("no language {other:?}: rust, python or javascript"),
        }
    }
}

impl fmt::Display for Language {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Language::Rust => "Rust",
            Language::Python => "Python",
            Language::JavaScript => "JavaScript",
        })
    }
}

/// The world every scaffolded service targets, in its own `wit/world.wit`.
pub const WORLD: &str = "local:app/app";

/// Write a new service `name` in `language` into `parent/name`, importing
/// `imports` (each a full interface name or a short one: `catalog`).
pub fn scaffold(
    parent: &Path,
    name: &str,
    language: Language,
    imports: &[String],
) -> Result<PathBuf> {
    switchyard_control::loader::valid_service_name(name)?;
    let imports = imports
        .iter()
        .map(|asked| wit::resolve_import(asked))
        .collect::<Result<Vec<_>>>()?;
    let dir = parent.join(name);
    if dir.exists() {
        bail!(
            "{} already exists: pick another name or folder",
            dir.display()
        );
    }
    let write = |file: &str, text: String| -> Result<()> {
        let path = dir.join(file);
        std::fs::create_dir_all(path.parent().expect("a file in a folder"))?;
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))
    };
    write("wit/world.wit", world(&imports))?;
    wit::write_deps(&dir.join("wit"))?;
    let app = match language {
        Language::Rust => {
            write("Cargo.toml", rust_manifest(name))?;
            write("src/lib.rs", rust_app(name, &imports))?;
            "src/lib.rs"
        }
        Language::Python => {
            write(
                "pyproject.toml",
                format!("[project]\nname = \"{name}\"\nversion = \"0.1.0\"\n"),
            )?;
            write("app.py", python_app(name, &imports))?;
            "app.py"
        }
        Language::JavaScript => {
            let manifest = serde_json::json!({
                "name": name, "version": "0.1.0", "private": true, "type": "module",
            });
            write("package.json", format!("{manifest:#}\n"))?;
            write("app.js", javascript_app(name, &imports))?;
            "app.js"
        }
    };
    write(
        ".gitignore",
        "/target/\n/.switchyard/\n__pycache__/\n*.wasm\n".into(),
    )?;
    write("README.md", readme(name, language, app))?;
    Ok(dir)
}

fn world(imports: &[String]) -> String {
    let mut text = String::from(
        "package local:app;\n\n\
         /// This service's world: what the host gives every service with an HTTP\n\
         /// front (`switchyard:platform/service`: the key-value store, config,\n\
         /// logging, and the `handler` it exports), and the interfaces of other\n\
         /// services it calls. Their packages are under `deps/`.\n\
         world app {\n    include switchyard:platform/service@0.1.0;\n",
    );
    for import in imports {
        text.push_str(&format!("    import {import};\n"));
    }
    text.push_str("}\n");
    text
}

fn rust_manifest(name: &str) -> String {
    format!(
        "[package]\nname = \"{name}\"\nversion = \"0.1.0\"\nedition = \"2024\"\n\n\
         [lib]\ncrate-type = [\"cdylib\"]\n\n\
         [dependencies]\nwit-bindgen = \"{WIT_BINDGEN}\"\n\n\
         # A project of its own, even inside another's folder.\n[workspace]\n"
    )
}

fn rust_app(name: &str, imports: &[String]) -> String {
    let mut calls = String::new();
    for import in imports {
        let package = import.split('/').next().unwrap_or_default();
        let module = format!(
            "{}::{}",
            package.replace(':', "::"),
            wit::short_name(import)
        )
        .replace('-', "_");
        calls.push_str(&format!("//! - {import}: `{module}::...`\n"));
    }
    let calls = if calls.is_empty() {
        String::new()
    } else {
        format!("//!\n//! The interfaces it imports are modules of the bindings:\n{calls}")
    };
    format!(
        r##"//! The {name} service. `switchyard build` builds it into a component.
{calls}
wit_bindgen::generate!({{ path: "wit", world: "{WORLD}", generate_all }});

use exports::switchyard::platform::handler::{{Guest, Request, Response}};

struct Service;

impl Guest for Service {{
    fn handle(request: Request) -> Response {{
        let (status, body) = match (request.method.as_str(), request.path.as_str()) {{
            ("GET", "/") => (200, r#"{{"service": "{name}", "message": "hello"}}"#),
            _ => (404, r#"{{"error": "no such route"}}"#),
        }};
        Response {{
            status,
            headers: vec![("content-type".into(), "application/json".into())],
            body: body.as_bytes().to_vec(),
        }}
    }}
}}

export!(Service);
"##
    )
}

fn python_app(name: &str, imports: &[String]) -> String {
    let modules: Vec<&str> = imports.iter().map(|i| wit::short_name(i)).collect();
    let imported = if modules.is_empty() {
        String::new()
    } else {
        format!(
            "# The interfaces it imports, as modules (`catalog.get(id)`):\n\
             from wit_world.imports import {}  # noqa: F401\n",
            modules.join(", ")
        )
    };
    format!(
        r#""""The {name} service. `switchyard build` builds it into a component."""

import json

from wit_world import exports
from wit_world.exports.handler import Request, Response
{imported}

def reply(status, value):
    body = json.dumps(value).encode()
    return Response(status, [("content-type", "application/json")], body)


class Handler(exports.Handler):
    def handle(self, request: Request) -> Response:
        if request.method == "GET" and request.path == "/":
            return reply(200, {{"service": "{name}", "message": "hello"}})
        return reply(404, {{"error": f"no route for {{request.method}} {{request.path}}"}})
"#
    )
}

fn javascript_app(name: &str, imports: &[String]) -> String {
    let imported: String = imports
        .iter()
        .map(|i| format!("// import {{ ... }} from '{i}';\n"))
        .collect();
    let imported = if imported.is_empty() {
        String::new()
    } else {
        format!(
            "// The interfaces it imports, as ES modules (record fields in camelCase):\n{imported}\n"
        )
    };
    format!(
        r#"// The {name} service. `switchyard build` builds it into a component;
// `console` logs to the host's log.

{imported}// QuickJS has no TextEncoder: UTF-8 by hand.
function utf8(text) {{
  const bytes = [];
  for (const ch of text) {{
    const c = ch.codePointAt(0);
    if (c < 0x80) bytes.push(c);
    else if (c < 0x800) bytes.push(0xc0 | (c >> 6), 0x80 | (c & 63));
    else if (c < 0x10000) bytes.push(0xe0 | (c >> 12), 0x80 | ((c >> 6) & 63), 0x80 | (c & 63));
    else bytes.push(0xf0 | (c >> 18), 0x80 | ((c >> 12) & 63), 0x80 | ((c >> 6) & 63), 0x80 | (c & 63));
  }}
  return new Uint8Array(bytes);
}}

function reply(status, value) {{
  return {{ status, headers: [['content-type', 'application/json']], body: utf8(JSON.stringify(value)) }};
}}

export const handler = {{
  handle(request) {{
    if (request.method === 'GET' && request.path === '/') {{
      return reply(200, {{ service: '{name}', message: 'hello' }});
    }}
    return reply(404, {{ error: `no route for ${{request.method}} ${{request.path}}` }});
  }},
}};
"#
    )
}

fn readme(name: &str, language: Language, app: &str) -> String {
    format!(
        "# {name}\n\nA Switchyard service in {language}: `{app}` handles its HTTP requests \
         (`/{name}/...` on the host reaches it as `/...`); `wit/world.wit` says what it \
         imports.\n\n```sh\nswitchyard build                      # {name}-0.1.0.wasm, here\n\
         switchyard build --services SERVICES  # straight into a host's services folder\n```\n\n\
         The version is the one in its manifest: raise it for each new build a host \
         should take.\n\n\
         To call another service, import its interface in `wit/world.wit` \
         (`import switchyard:shop/catalog@1.0.0;`). The shop's interfaces are in \
         `wit/deps/shop/`; for a service of your own, copy the WIT package that \
         declares its interface into `wit/deps/<package>/` first. The host checks \
         at load time that some service exports what this one imports.\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_service_has_its_world_app_and_manifest() {
        let parent = tempfile::tempdir().unwrap();
        let imports = ["catalog".to_string()];
        let dir = scaffold(parent.path(), "ratings", Language::Python, &imports).unwrap();
        let world = std::fs::read_to_string(dir.join("wit/world.wit")).unwrap();
        assert!(
            world.contains("import switchyard:shop/catalog@1.0.0;"),
            "{world}"
        );
        assert!(dir.join("wit/deps/platform/service.wit").exists());
        let app = std::fs::read_to_string(dir.join("app.py")).unwrap();
        assert!(
            app.contains("from wit_world.imports import catalog"),
            "{app}"
        );
        assert!(dir.join("pyproject.toml").exists());
        let readme = std::fs::read_to_string(dir.join("README.md")).unwrap();
        assert!(readme.contains("switchyard build --services"), "{readme}");
        assert!(readme.contains("wit/deps/<package>/"), "{readme}");

        let again = scaffold(parent.path(), "ratings", Language::Rust, &[]).unwrap_err();
        assert!(again.to_string().contains("already exists"), "{again}");
        let bad = scaffold(parent.path(), "Ratings", Language::Rust, &[]).unwrap_err();
        assert!(
            format!("{bad:#}").contains("not a valid service name"),
            "{bad:#}"
        );
        let unknown = scaffold(parent.path(), "r2", Language::Rust, &["nope".into()]);
        assert!(
            unknown
                .unwrap_err()
                .to_string()
                .contains("no interface \"nope\"")
        );
        assert!(
            !parent.path().join("r2").exists(),
            "nothing written for a refusal"
        );
        assert!("cobol".parse::<Language>().is_err());
    }

    #[test]
    fn rust_names_the_imported_interfaces_modules() {
        let app = rust_app("r", &["switchyard:shop/catalog@1.0.0".into()]);
        assert!(app.contains("`switchyard::shop::catalog::...`"), "{app}");
    }
}
