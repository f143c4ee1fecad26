//! The request a `switchyard:platform/handler2` guest is lent, and the host
//! side of `switchyard:platform/incoming`, through which the guest reads it.
//!
//! It owns [`IncomingRequest`]: the request as the gateway received it
//! (headers still the parsed map, the body one shared buffer), copied into
//! the guest only part by part, as the guest asks. It must never let a guest
//! keep a request past its call: the guest gets a borrow, and the call
//! takes the request back from the instance's table when it returns.

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, Method};
use wasmtime::component::{HasData, Linker, Resource, ResourceTable};

mod bindings {
    wasmtime::component::bindgen!({
        inline: "
            package switchyard:host;
            world lent {
                export switchyard:platform/handler2@0.1.0;
            }
        ",
        path: [
            "../../wit/deps/keyvalue",
            "../../wit/deps/config",
            "../../wit/deps/logging",
            "../../wit/platform",
        ],
        world: "switchyard:host/lent",
        imports: { default: trappable },
        exports: { default: async },
        with: {
            "switchyard:platform/incoming.request": super::IncomingRequest,
        },
    });
}

pub use bindings::exports::switchyard::platform::handler2::{Guest as Handler2, GuestIndices};
use bindings::switchyard::platform::incoming;
pub use incoming::Response;

/// The interface through which the guest reads its request.
pub const INTERFACE: &str = "switchyard:platform/incoming@0.1.0";

/// A request as a `handler2` guest reads it. Cloning it is cheap: a call
/// that is retried lends the same request again.
#[derive(Clone)]
pub struct IncomingRequest(Arc<Parts>);

struct Parts {
    method: Method,
    path: String,
    query: String,
    headers: HeaderMap,
    body: Bytes,
}

impl IncomingRequest {
    /// `path` is what follows the service's name, `query` the raw query
    /// string without its `?`.
    pub fn new(
        method: Method,
        path: String,
        query: String,
        headers: HeaderMap,
        body: Bytes,
    ) -> IncomingRequest {
        IncomingRequest(Arc::new(Parts {
            method,
            path,
            query,
            headers,
            body,
        }))
    }

    pub fn method(&self) -> &Method {
        &self.0.method
    }

    pub fn path(&self) -> &str {
        &self.0.path
    }

    /// The first value of header `name`, if it is text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.0.headers.get(name)?.to_str().ok()
    }
}

/// A header value as the guest gets it: text, bad bytes replaced.
fn text(value: &http::HeaderValue) -> String {
    String::from_utf8_lossy(value.as_bytes()).into_owned()
}

/// Define `switchyard:platform/incoming` in `linker`, on the instance's
/// resource table.
pub fn add_to_linker<T: Send + 'static>(
    linker: &mut Linker<T>,
    table: fn(&mut T) -> &mut ResourceTable,
) -> wasmtime::Result<()> {
    incoming::add_to_linker::<_, HasTable>(linker, table)
}

struct HasTable;

impl HasData for HasTable {
    type Data<'a> = &'a mut ResourceTable;
}

impl incoming::Host for ResourceTable {}

impl incoming::HostRequest for ResourceTable {
    fn method(&mut self, request: Resource<IncomingRequest>) -> wasmtime::Result<String> {
        Ok(self.get(&request)?.0.method.as_str().to_string())
    }

    fn path(&mut self, request: Resource<IncomingRequest>) -> wasmtime::Result<String> {
        Ok(self.get(&request)?.0.path.clone())
    }

    fn query(&mut self, request: Resource<IncomingRequest>) -> wasmtime::Result<String> {
        Ok(self.get(&request)?.0.query.clone())
    }

    fn header(
        &mut self,
        request: Resource<IncomingRequest>,
        name: String,
    ) -> wasmtime::Result<Vec<String>> {
        let headers = &self.get(&request)?.0.headers;
        // `get_all` matches the name in any case; a name that cannot be a
        // header's has no values.
        Ok(headers.get_all(name.as_str()).iter().map(text).collect())
    }

    fn headers(
        &mut self,
        request: Resource<IncomingRequest>,
    ) -> wasmtime::Result<Vec<(String, String)>> {
        let headers = &self.get(&request)?.0.headers;
        Ok(headers
            .iter()
            .map(|(name, value)| (name.as_str().to_string(), text(value)))
            .collect())
    }

    fn body(&mut self, request: Resource<IncomingRequest>) -> wasmtime::Result<Vec<u8>> {
        Ok(self.get(&request)?.0.body.to_vec())
    }

    fn drop(&mut self, request: Resource<IncomingRequest>) -> wasmtime::Result<()> {
        self.delete(request)?;
        Ok(())
    }
}
