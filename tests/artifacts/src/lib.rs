//! The guest components the tests and benchmarks use, built from source by
//! this crate's build script (see `build.rs`): one constant per component
//! holding the path of its `.wasm` file, [`path`] to look one up by name, and
//! [`foreach_component!`] to list them all.
//!
//! Modelled on wasmtime's `test-programs-artifacts`: depending on this crate
//! is all a test needs for `cargo test` to build the components first.

include!(concat!(env!("OUT_DIR"), "/components.rs"));

/// The file of component `name` (`"goods"`, `"goods_v2"`, ...).
///
/// # Panics
/// When no component has that name: the list is [`foreach_component!`]'s.
pub fn path(name: &str) -> &'static str {
    COMPONENTS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, path)| *path)
        .unwrap_or_else(|| panic!("no component named {name:?} is built for the tests"))
}
