//! What the registry routes to, as far as routing and compatibility care:
//! the bottom of control, which everything above it may use and which uses
//! nothing of control's.

use semver::Version;

use switchyard_runtime::{InterfaceUse, Provider};

/// A version the registry can route to, as far as routing and compatibility
/// care: its name, and the interfaces it needs and offers. The host's
/// versions carry a compiled component and instances; tests use plain data.
pub trait Deployable: Send + Sync + 'static {
    fn service(&self) -> &str;
    fn version(&self) -> &Version;
    fn imports(&self) -> &[InterfaceUse];
    fn exports(&self) -> &[InterfaceUse];

    /// The exported interface named `name`, if any.
    fn export(&self, name: &str) -> Option<&InterfaceUse> {
        self.exports().iter().find(|e| e.name == name)
    }

    /// The interfaces this version needs from other services.
    fn service_imports(&self) -> impl Iterator<Item = &InterfaceUse> {
        self.imports()
            .iter()
            .filter(|i| i.provider() == Provider::Service)
    }

    /// The interfaces this version offers other services.
    fn service_exports(&self) -> impl Iterator<Item = &InterfaceUse> {
        self.exports()
            .iter()
            .filter(|e| e.provider() == Provider::Service)
    }
}
