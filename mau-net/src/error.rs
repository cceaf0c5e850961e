//! Why a node could not start or a call on it failed.

use mau_identity::IdentityError;
use mau_proto::NodeError;

/// Why a node could not start or a call failed.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// Binding or another socket operation failed.
    #[error("{0}: {1}")]
    Io(String, std::io::Error),
    /// The TLS identity could not be built.
    #[error("identity: {0}")]
    Identity(#[from] IdentityError),
    /// The core refused a command.
    #[error(transparent)]
    Node(#[from] NodeError),
    /// The node shut down before answering.
    #[error("node is shutting down")]
    Shutdown,
    /// A bad configuration value.
    #[error("configuration: {0}")]
    Config(String),
}
