//! The runtime a bench runs its listener and replicator on.

use std::sync::OnceLock;

use peerlite_proto::DocumentEvent;
use peerlite_runtime::{
    Listener, ListenerConfig, ListenerError, Replicator, ReplicatorConfigError,
    ReplicatorConfiguration, ReplicatorStatus, TlsIdentity,
};
use peerlite_smol::Smol;
use peerlite_storage::Database;
use peerlite_tokio::Tokio;

/// Which runtime both bench processes use.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum BenchRuntime {
    /// `peerlite-smol` (the default).
    #[default]
    Smol,
    /// `peerlite-tokio`, on a multi-threaded tokio runtime (tokio's default).
    Tokio,
}

impl BenchRuntime {
    /// Its name: `smol` or `tokio`.
    pub fn name(self) -> &'static str {
        match self {
            BenchRuntime::Smol => "smol",
            BenchRuntime::Tokio => "tokio",
        }
    }

    /// The runtime named `name`.
    pub fn from_name(name: &str) -> Option<BenchRuntime> {
        match name {
            "smol" => Some(BenchRuntime::Smol),
            "tokio" => Some(BenchRuntime::Tokio),
            _ => None,
        }
    }
}

/// The process's tokio runtime, made on first use.
fn tokio_runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Runtime::new().unwrap_or_else(|e| panic!("cannot start tokio: {e}"))
    })
}

/// A replicator on either runtime.
pub(crate) enum AnyReplicator {
    Smol(Replicator<Smol>),
    Tokio(Replicator<Tokio>),
}

impl AnyReplicator {
    pub(crate) fn new(
        runtime: BenchRuntime,
        db: Database,
        config: ReplicatorConfiguration,
    ) -> Result<AnyReplicator, ReplicatorConfigError> {
        Ok(match runtime {
            BenchRuntime::Smol => AnyReplicator::Smol(Replicator::new(db, config)?),
            BenchRuntime::Tokio => {
                let _inside = tokio_runtime().enter();
                AnyReplicator::Tokio(Replicator::new(db, config)?)
            }
        })
    }

    pub(crate) fn start(&self) {
        match self {
            AnyReplicator::Smol(r) => r.start(),
            AnyReplicator::Tokio(r) => r.start(),
        }
    }

    pub(crate) fn stop(&self) {
        match self {
            AnyReplicator::Smol(r) => r.stop(),
            AnyReplicator::Tokio(r) => r.stop(),
        }
    }

    /// Blocks until the replicator stopped; its final status.
    pub(crate) fn wait_until_stopped(&self) -> ReplicatorStatus {
        match self {
            AnyReplicator::Smol(r) => smol::block_on(r.wait_until_stopped()),
            AnyReplicator::Tokio(r) => smol::block_on(r.wait_until_stopped()),
        }
    }

    pub(crate) fn add_change_listener(
        &self,
        listener: impl Fn(&ReplicatorStatus) + Send + Sync + 'static,
    ) {
        match self {
            AnyReplicator::Smol(r) => r.add_change_listener(listener),
            AnyReplicator::Tokio(r) => r.add_change_listener(listener),
        };
    }

    pub(crate) fn add_document_listener(
        &self,
        listener: impl Fn(&[DocumentEvent]) + Send + Sync + 'static,
    ) {
        match self {
            AnyReplicator::Smol(r) => r.add_document_listener(listener),
            AnyReplicator::Tokio(r) => r.add_document_listener(listener),
        };
    }
}

/// A listener on either runtime.
pub(crate) enum AnyListener {
    Smol(Listener<Smol>),
    Tokio(Listener<Tokio>),
}

impl AnyListener {
    /// Blocks until the listener is listening.
    pub(crate) fn start(
        runtime: BenchRuntime,
        db: Database,
        config: ListenerConfig,
    ) -> Result<AnyListener, ListenerError> {
        Ok(match runtime {
            BenchRuntime::Smol => AnyListener::Smol(smol::block_on(Listener::start(db, config))?),
            BenchRuntime::Tokio => {
                AnyListener::Tokio(tokio_runtime().block_on(Listener::start(db, config))?)
            }
        })
    }

    pub(crate) fn port(&self) -> u16 {
        match self {
            AnyListener::Smol(l) => l.port(),
            AnyListener::Tokio(l) => l.port(),
        }
    }

    pub(crate) fn tls_identity(&self) -> Option<&TlsIdentity> {
        match self {
            AnyListener::Smol(l) => l.tls_identity(),
            AnyListener::Tokio(l) => l.tls_identity(),
        }
    }

    /// Blocks until the listener stopped.
    pub(crate) fn stop(self) {
        match self {
            AnyListener::Smol(l) => smol::block_on(l.stop()),
            AnyListener::Tokio(l) => tokio_runtime().block_on(l.stop()),
        }
    }
}
