//! A service author's tools: [`scaffold`] writes a new service's folder
//! (its own WIT world, an app that compiles, a manifest with its name and
//! version), and [`build`] turns such a folder into a component, with the
//! [`toolchain`] pinned for its language, straight into a services folder
//! when asked.
//!
//! It owns the languages Switchyard knows and how each is built. It never
//! touches a running host: the host picks the built file up as any other.

pub mod build;
pub mod scaffold;
pub mod toolchain;
mod wit;

pub use build::{Built, build};
pub use scaffold::{Language, scaffold};
pub use toolchain::Toolchains;
