//! What answering a peer's request needs, and nothing more: the core (to
//! feed it the request), the configuration (limits, content store), the TLS
//! server configuration and the connection budget.

use std::sync::Arc;

use mau_proto::{Node, PeerAddress, Time};

use crate::config::NodeConfig;
use crate::core::{Core, Shutdown};
use crate::runtime::Runtime;

/// The server's view of a running node.
pub(crate) struct ServeContext<R: Runtime> {
    pub core: Arc<Core<R>>,
    pub rt: R,
    pub config: NodeConfig,
    pub server_tls: Arc<rustls::ServerConfig>,
    pub connections: Arc<async_lock::Semaphore>,
    pub shutdown: Shutdown,
    /// Answers `/kad/dialback`.
    pub dialback: crate::reach::DialbackServer<R>,
    /// The relay (`None`: this node does not relay).
    pub relay: Option<Arc<crate::relay::RelayServer<R>>>,
    /// The hole-punch responder.
    pub punch: Arc<crate::punch::PunchResponder<R>>,
}

impl<R: Runtime> ServeContext<R> {
    /// Runs `f` on the core (see [`Core::with_node`]).
    pub fn with_node<T>(&self, f: impl FnOnce(&mut Node<PeerAddress>, Time) -> T) -> T {
        self.core.with_node(f)
    }
}
