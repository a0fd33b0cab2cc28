//! The crate's error type. Messages say what failed and on which interface or path; the
//! underlying aya or OS error is the `source`, so `{:#}` in the CLI prints the whole chain.

use std::{io, path::PathBuf};

/// Why an attach, detach or status request failed.
#[derive(Debug, thiserror::Error)]
pub enum SteerError {
    /// Loading, attaching and pinning BPF objects needs root (CAP_BPF, CAP_NET_ADMIN).
    #[error("XDP steering needs root (CAP_BPF and CAP_NET_ADMIN)")]
    NotRoot,
    /// The binary was built without the XDP object (`RELAY_EBPF_OBJECT` unset).
    #[error("this binary was built without XDP programs; build it with `cargo xtask build`")]
    NotBuilt,
    /// The name cannot be a Linux interface name (and is never used as a path).
    #[error("invalid interface name {name:?}: {reason}")]
    InvalidInterface { name: String, reason: &'static str },
    /// No interface of that name in this network namespace.
    #[error("no interface named {0:?} in this network namespace")]
    NoSuchInterface(String),
    /// `relay_steer` is already attached (and pinned) on the interface.
    #[error("XDP steering is already attached to {0} (detach it first)")]
    AlreadyAttached(String),
    /// Nothing of ours is pinned for the interface.
    #[error("XDP steering is not attached to {0}")]
    NotAttached(String),
    /// The pin root is not on a BPF filesystem, and mounting one there would not help.
    #[error("cannot pin under {}: {reason}", path.display())]
    BpfFsUnavailable { path: PathBuf, reason: String },
    /// The embedded object lacks a program or map the loader expects.
    #[error("the embedded XDP object has no {0}")]
    InvalidObject(String),
    /// The steering config cannot be put into the maps (e.g. a next hop without a neighbour
    /// entry, or more services than the maps were attached with).
    #[error("{0}")]
    InvalidPlan(String),
    /// A BPF operation failed (load, attach, pin, map read).
    #[error("{context}")]
    Bpf {
        context: String,
        /// Boxed: aya's errors are large, and this keeps every `Result` small.
        #[source]
        source: Box<BpfError>,
    },
    /// A file-system operation under the pin root failed.
    #[error("{}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// The aya error behind [`SteerError::Bpf`].
#[derive(Debug, thiserror::Error)]
pub enum BpfError {
    #[error(transparent)]
    Ebpf(#[from] aya::EbpfError),
    #[error(transparent)]
    Program(#[from] aya::programs::ProgramError),
    #[error(transparent)]
    Map(#[from] aya::maps::MapError),
    #[error(transparent)]
    Pin(#[from] aya::pin::PinError),
    #[error(transparent)]
    Link(#[from] aya::programs::links::LinkError),
}

impl SteerError {
    pub(crate) fn bpf(context: impl Into<String>, source: impl Into<BpfError>) -> Self {
        Self::Bpf {
            context: context.into(),
            source: Box::new(source.into()),
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }
}
