//! Configuration of a networked node: addresses, peers to join through, limits.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use mau_proto::{Contact, Fingerprint, LimitScope, PeerAddress};

/// Resource limits of the HTTP server and client.
///
/// When a server limit bites, the node logs a `warn!` line, at most one per
/// limit and source IP or peer every 10 s (with the number suppressed in
/// between). See `docs/hardening.md` for the attacks they were tested with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// TLS handshake must finish within this, however slowly its bytes
    /// trickle in (slowloris before TLS).
    pub handshake_timeout: Duration,
    /// A request head must be complete within this, counted from its first
    /// byte (for the first request of a connection: from the end of the
    /// handshake). Trickled bytes do not extend it (slowloris after TLS).
    pub header_timeout: Duration,
    /// A keep-alive connection with no request for this long is closed.
    pub idle_timeout: Duration,
    /// An answer the peer takes no byte of for this long (its receive
    /// window stays shut) is dropped with its connection: a peer that asks
    /// and never reads would otherwise hold its connection, and its
    /// in-flight slot, for ever. Any progress restarts it, so a slow link
    /// keeps its download.
    pub send_timeout: Duration,
    /// A whole outgoing RPC (connect, TLS, request, body) must finish within this.
    pub rpc_timeout: Duration,
    /// Connect timeout for outgoing TCP connections.
    pub connect_timeout: Duration,
    /// Largest request header block the server reads (hyper's read buffer,
    /// at least 8 KiB); beyond it the answer is 431 and the connection closes.
    pub max_header_bytes: usize,
    /// Largest request body accepted. Our routes are GETs and never read a
    /// body: a request announcing more than this, or a body of unknown
    /// length, is answered 413 and the connection closed, unread.
    pub max_body_bytes: u64,
    /// Connections the server serves at once; more wait in the kernel backlog.
    pub max_connections: usize,
    /// Connections served at once from one source IP (an IPv6 source counts
    /// by its /64), checked before TLS: a connection over it is closed at
    /// once. Keeps one host from holding all of `max_connections`. Which
    /// sources it applies to: [`Limits::per_ip_scope`].
    pub max_connections_per_ip: usize,
    /// Which source addresses `max_connections_per_ip` counts:
    /// [`LimitScope::AllButLoopback`] (the default) counts every source but
    /// loopback, so a loopback devnet (every node on 127.0.0.1) is not
    /// throttled as one host while one machine on a shared LAN still is;
    /// loopback is then bounded by `max_connections` alone.
    /// [`LimitScope::All`] counts loopback too (tests of the cap);
    /// [`LimitScope::PublicOnly`] exempts every private source.
    pub per_ip_scope: LimitScope,
    /// Requests of one peer (fingerprint, over all its connections) being
    /// answered at once, streamed bodies included; one more waits up to 1 s
    /// for a slot, then is answered `503 Service Unavailable` with
    /// `Retry-After: 1`.
    pub max_in_flight_per_peer: usize,
    /// Requests a second one peer (fingerprint) may make on average (token
    /// bucket). A request over it waits for its token (its connection is
    /// read no further meanwhile) if that comes within 1 s; otherwise it is
    /// answered after 1 s with `429 Too Many Requests`, `Retry-After` and a
    /// JSON `{"error":...}` body. Applies to every route
    /// but the content routes (`/p2p/`): a friend's sync asks for each file
    /// as fast as it can, and is bounded by `max_in_flight_per_peer`.
    pub peer_rate: u32,
    /// Requests one peer may make at once before `peer_rate` applies (the
    /// bucket's size).
    pub peer_burst: u32,
    /// Peers whose request rate is tracked at once; idle (refilled) buckets
    /// are dropped first, so the map stays bounded.
    pub rate_tracked_peers: usize,
    /// Idle pooled connections kept per peer.
    pub pool_per_peer: usize,
    /// Idle pooled connections a client keeps in total, over all peers:
    /// when full, the least recently used one is closed. A production
    /// bound: without it a node kept connections (about 94 kB each, both
    /// ends) to every peer it ever asked, so memory grew with the network.
    /// 0 pools nothing.
    pub pool_max_idle: usize,
    /// A pooled connection idle longer than this is closed rather than
    /// reused. Shorter than a server's `idle_timeout` (ours: 60 s), so we
    /// rarely reuse one the peer is closing.
    pub pool_idle_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            handshake_timeout: Duration::from_secs(10),
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            send_timeout: Duration::from_secs(60),
            rpc_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(5),
            max_header_bytes: 16 * 1024,
            max_body_bytes: 64 * 1024,
            max_connections: 1024,
            max_connections_per_ip: 128,
            per_ip_scope: LimitScope::AllButLoopback,
            max_in_flight_per_peer: 32,
            peer_rate: 50,
            peer_burst: 100,
            rate_tracked_peers: 4096,
            pool_per_peer: 2,
            pool_max_idle: 64,
            pool_idle_timeout: Duration::from_secs(30),
        }
    }
}

/// How a networked node runs.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// Where the HTTPS server listens.
    pub listen: SocketAddr,
    /// The `host:port` other peers should use to reach us. `None`: the bound
    /// address (fine on loopback and LANs; behind NAT set it, or use UPnP).
    pub advertise: Option<PeerAddress>,
    /// Peers to join through.
    pub bootstrap: Vec<Contact<PeerAddress>>,
    /// Where the routing table is persisted (`None`: not persisted).
    pub table_file: Option<PathBuf>,
    /// Where the local control socket is created (`None`: no control channel).
    pub control_socket: Option<PathBuf>,
    /// Protocol parameters of the core.
    pub protocol: mau_proto::Config,
    /// Server and client limits.
    pub limits: Limits,
    /// Seed of the core's random choices (`None`: from the OS clock and address).
    pub seed: Option<u64>,
    /// The content store served under `/p2p/` (`None`: those routes answer 404).
    pub content: Option<std::sync::Arc<mau_store::Store>>,
    /// Advertise and browse `_mau._tcp.local.` over mDNS (multicast on every
    /// interface). Off by default; the `mau` command line turns it on.
    pub mdns: bool,
    /// Map the listening port on the gateway with these protocols, tried in
    /// this order (empty: off, the default), and advertise the external
    /// address (when `advertise` is not set); with PCP among them and an
    /// IPv6 listening address, also open an IPv6 pinhole. See
    /// `mau_proto::portmap`.
    pub port_mapping: Vec<mau_proto::portmap::Protocol>,
    /// The lease asked for; renewed at half of what the gateway grants.
    pub port_mapping_lease: Duration,
    /// Where a `stop` request on the control channel is passed on to the
    /// embedder, which owns the node's lifetime (`None`: such requests are
    /// refused).
    pub stop_requests: Option<async_channel::Sender<()>>,
    /// Where the node counts what operators watch (`None`: nothing counted).
    pub metrics: Option<std::sync::Arc<crate::metrics::Metrics>>,
    /// How the node learns its public address and whether peers reach it.
    pub reach: crate::reach::ReachOptions,
    /// Relay streams between other peers, within these limits (`None`, the
    /// default: refuse every relay request). Only for a node others can reach.
    pub relay: Option<mau_proto::relay::RelayLimits>,
    /// Relays to hold reservations on, in order of preference. Non-empty
    /// means "nobody can dial me", whatever the reachability checks say
    /// (the operator's override): the node advertises a relayed address
    /// through one of them to peers that understand it.
    pub relays: Vec<Contact<PeerAddress>>,
    /// With no `relays` configured: pick relays among the peers that offer
    /// to relay once the reachability verdict says the direct address is
    /// unreachable, and drop them once it is reachable (default: on).
    pub auto_relay: bool,
    /// How many reservations to hold and how to retry them.
    pub reservations: mau_proto::relay::ReservationConfig,
    /// Try a direct connection (hole punch) to peers reached through a
    /// relay, and answer their attempts (`None`: stay relayed).
    pub punch: Option<mau_proto::punch::PunchConfig>,
}

impl NodeConfig {
    /// A node listening on `listen` with defaults for everything else.
    pub fn new(listen: SocketAddr) -> Self {
        NodeConfig {
            listen,
            advertise: None,
            bootstrap: Vec::new(),
            table_file: None,
            control_socket: None,
            protocol: mau_proto::Config::default(),
            limits: Limits::default(),
            seed: None,
            content: None,
            mdns: false,
            port_mapping: Vec::new(),
            port_mapping_lease: Duration::from_secs(3600),
            stop_requests: None,
            metrics: None,
            reach: crate::reach::ReachOptions::default(),
            relay: None,
            relays: Vec::new(),
            auto_relay: true,
            reservations: mau_proto::relay::ReservationConfig::default(),
            punch: Some(mau_proto::punch::PunchConfig::default()),
        }
    }
}

/// Parses a bootstrap peer written `FINGERPRINT@HOST:PORT`.
pub fn parse_peer_spec(spec: &str) -> Result<Contact<PeerAddress>, String> {
    let (fp, addr) = spec
        .split_once('@')
        .ok_or_else(|| format!("{spec:?}: expected FINGERPRINT@HOST:PORT"))?;
    let fp = Fingerprint::parse(fp).map_err(|e| format!("{spec:?}: {e}"))?;
    let addr = PeerAddress::parse(addr).map_err(|e| format!("{spec:?}: {e}"))?;
    Ok(Contact::new(fp, addr))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_specs() {
        let fp = "0123456789abcdef0123456789abcdef01234567";
        let c = parse_peer_spec(&format!("{fp}@127.0.0.1:9000")).unwrap();
        assert_eq!(c.fingerprint.to_string(), fp);
        assert_eq!(c.address.as_str(), "127.0.0.1:9000");
        assert!(parse_peer_spec("nope").is_err());
        assert!(parse_peer_spec(&format!("{fp}@host")).is_err());
        assert!(parse_peer_spec("abcd@host:1").is_err());
    }
}
