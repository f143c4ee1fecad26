//! What a component imports and exports, read from its type: interfaces,
//! their functions with signatures, and who provides each (the host, WASI,
//! another service, the toolchain). Reading only: nothing here links or runs.

use wasmtime::component::Component;
use wasmtime::component::types::ComponentItem;

use crate::engine::Runtime;
use crate::incoming;
use crate::signature::Signature;

use switchyard_platform::{self as platform};

/// Interfaces the guest's standard library imports and wasmtime-wasi provides,
/// configured below so that they reach nothing outside the instance; and
/// `wasi:http`, which wasmtime-wasi-http provides (outgoing requests only to
/// the hosts a service allows: [`crate::outbound`]).
const WASI_SYSTEM_PREFIXES: [&str; 7] = [
    "wasi:cli/",
    "wasi:io/",
    "wasi:clocks/",
    "wasi:random/",
    "wasi:filesystem/",
    "wasi:sockets/",
    "wasi:http/",
];

/// Who provides an imported or exported interface of a component.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provider {
    /// wasmtime-wasi: clocks, random, and closed stdio, files and sockets.
    WasiSystem,
    /// This host's platform interfaces (imported), or the entry points the
    /// host calls (exported: the handler, recovery).
    Platform,
    /// Another service.
    Service,
    /// The component itself: a plain name, not an `ns:pkg/iface`
    /// interface, which a guest toolchain leaves in what it builds (such as
    /// componentize-py's `init` and `exports`). Never another service's.
    Toolchain,
}

/// One interface a component imports or exports.
#[derive(Debug, Clone)]
pub struct InterfaceUse {
    pub name: String,
    pub functions: Vec<FunctionUse>,
    pub uses_resources: bool,
}

/// One function of an interface, with its type.
#[derive(Debug, Clone)]
pub struct FunctionUse {
    pub name: String,
    pub signature: Signature,
}

impl InterfaceUse {
    pub fn provider(&self) -> Provider {
        let name = self.name.as_str();
        if !name.contains(':') {
            Provider::Toolchain
        } else if platform::INTERFACES.contains(&name)
            || platform::ENTRY_POINTS.contains(&name)
            || name == incoming::INTERFACE
        {
            Provider::Platform
        } else if WASI_SYSTEM_PREFIXES
            .iter()
            .any(|p| self.name.starts_with(p))
        {
            Provider::WasiSystem
        } else {
            Provider::Service
        }
    }
}

impl Runtime {
    /// The interfaces `component` imports.
    pub fn imports(&self, component: &Component) -> Vec<InterfaceUse> {
        let ty = component.component_type();
        ty.imports(&self.engine)
            .map(|(name, item)| self.interface_use(name, &item.ty))
            .collect()
    }

    /// The interfaces `component` exports.
    pub fn exports(&self, component: &Component) -> Vec<InterfaceUse> {
        let ty = component.component_type();
        ty.exports(&self.engine)
            .map(|(name, item)| self.interface_use(name, &item.ty))
            .collect()
    }

    fn interface_use(&self, name: &str, item: &ComponentItem) -> InterfaceUse {
        let mut use_ = InterfaceUse {
            name: name.to_string(),
            functions: Vec::new(),
            uses_resources: false,
        };
        if let ComponentItem::ComponentInstance(instance) = item {
            for (export, item) in instance.exports(&self.engine) {
                match item.ty {
                    ComponentItem::ComponentFunc(ty) => use_.functions.push(FunctionUse {
                        name: export.to_string(),
                        signature: Signature::from(&ty),
                    }),
                    ComponentItem::Resource(_) => use_.uses_resources = true,
                    _ => {}
                }
            }
        }
        use_
    }
}

#[cfg(test)]
mod tests {
    use super::{InterfaceUse, Provider};

    fn provider(name: &str) -> Provider {
        InterfaceUse {
            name: name.to_string(),
            functions: Vec::new(),
            uses_resources: false,
        }
        .provider()
    }

    #[test]
    fn names_say_who_provides_an_interface() {
        assert_eq!(provider("switchyard:shop/catalog@1.0.0"), Provider::Service);
        assert_eq!(
            provider("switchyard:platform/handler@0.1.0"),
            Provider::Platform
        );
        assert_eq!(
            provider("wasi:keyvalue/store@0.2.0-draft"),
            Provider::Platform
        );
        assert_eq!(provider("wasi:io/streams@0.2.6"), Provider::WasiSystem);
        // What toolchains leave: plain names, never another service's.
        assert_eq!(provider("init"), Provider::Toolchain);
        assert_eq!(provider("exports"), Provider::Toolchain);
    }
}
