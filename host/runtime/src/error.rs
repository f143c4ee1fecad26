//! How a call failed: [`CallError`], and [`DependencyFailure`], the error
//! a guest's call to another service fails with. Types only; instances
//! tell which applies.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// The most data one call may hand the host: a response (status, headers and
/// body together), or the arguments of one import call. wasmtime counts it
/// ("hostcall fuel"); past it the call fails with [`CallError::TooMuchData`].
pub const MAX_CALL_DATA: usize = 128 << 20;

/// How a call failed.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// It ran past its deadline and was interrupted.
    #[error("did not finish within {0:?}")]
    Timeout(Duration),
    /// It tried to grow its memory past the service's limit.
    #[error("tried to use more than its memory limit of {0} MiB")]
    OutOfMemory(usize),
    /// No instance could be started (the component's start-up failed, or the
    /// host has no room for another instance).
    #[error("cannot start an instance: {0:#}")]
    Start(anyhow::Error),
    /// It tried to hand the host more than [`MAX_CALL_DATA`] bytes at once.
    #[error("tried to hand the host more than {} MiB in one call", MAX_CALL_DATA >> 20)]
    TooMuchData,
    /// A call it made to another service failed; the message names that service.
    #[error("{0}")]
    Dependency(DependencyFailure),
    /// The guest trapped (a panic, a stack overflow, ...).
    #[error("trapped: {0}")]
    Trap(Trap),
}

/// A trap, and the guest's own account of it: the end of what the call
/// wrote to stderr (a panic message, a Python traceback, a JavaScript
/// exception), when it wrote anything there. That text is the operator's to
/// read (the log, the admin view), never a client's: it may hold anything.
#[derive(Debug)]
pub struct Trap {
    pub error: anyhow::Error,
    pub stderr: Option<String>,
}

impl From<anyhow::Error> for Trap {
    /// A trap the guest said nothing about (or the host found: an answer
    /// that breaks the rules).
    fn from(error: anyhow::Error) -> Self {
        Trap {
            error,
            stderr: None,
        }
    }
}

impl Trap {
    /// The trap itself, in one line: the innermost error, without the
    /// wasm backtrace around it.
    pub fn cause(&self) -> String {
        root_cause(&self.error)
    }
}

/// The innermost error of `e`'s chain, in one line: what is worth showing
/// a client (a trap without its wasm backtrace, why an instance could not
/// start).
pub fn root_cause(e: &anyhow::Error) -> String {
    e.chain().last().map(|c| c.to_string()).unwrap_or_default()
}

/// The trap in one line ([`Trap::cause`]): what a message that may reach
/// a client (a dependency's failure) says. The log has the whole chain.
impl fmt::Display for Trap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.cause())
    }
}

/// A call to another service's interface failed (that service trapped, timed
/// out, is unavailable...). The error a guest's import call fails with, so the
/// caller's own failure can be told from its dependency's by downcasting.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{cause}")]
pub struct DependencyFailure {
    pub interface: String,
    pub function: String,
    /// What went wrong, naming the service that was called.
    pub cause: DependencyCause,
}

/// Why a call to another service's interface failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum DependencyCause {
    #[error("the host is shutting down")]
    ShuttingDown,
    /// No service's routed version exports the interface.
    #[error("no service with a healthy version provides {interface}")]
    NoProvider { interface: String },
    /// The chain of calls would go deeper than the callee allows.
    #[error("calling {callee} would exceed the call depth limit of {limit}: is there a cycle?")]
    TooDeep { callee: Callee, limit: u32 },
    /// No instance of the callee could take the call (its pool is full past
    /// its queue timeout, or an instance could not start).
    #[error("{callee} is unavailable: {reason:#}")]
    Unavailable {
        callee: Callee,
        reason: Arc<anyhow::Error>,
    },
    /// The callee's call failed.
    #[error("{callee} failed: {failure}")]
    Failed {
        callee: Callee,
        failure: Arc<CallError>,
    },
}

/// The service version a call went to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Callee {
    pub service: String,
    pub version: String,
}

impl fmt::Display for Callee {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "service {} {}", self.service, self.version)
    }
}
