//! A running networked node: the handle applications use, and the short
//! builder that starts its parts.
//!
//! The core (`mau_proto::Node`, behind the private `core` module) makes every protocol
//! decision; the driver (`driver`) carries its requests out; the
//! server answers peers; persistence, mDNS, UPnP and the control socket are
//! services that each hold the core handle. Each runs as one of the node's
//! tasks, and [`RunningNode::shutdown`] returns once all of them ended.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use mau_identity::{IdentityError, TlsIdentity};
use mau_proto::{Contact, Fingerprint, LookupOutcome, Node, PeerAddress};
use tracing::{info, warn};

use crate::client::Client;
use crate::config::NodeConfig;
use crate::core::Core;
use crate::driver::Driver;
pub use crate::error::NetError;
use crate::identity::{Identities, ServerCert};
use crate::persist::TableSaver;
use crate::portmap::{ActiveMapping, PortMapStatus, PortMapper};
use crate::runtime::Runtime;
use crate::serve_context::ServeContext;
use crate::{control, mdns, persist, punch, reach, relay, reservation, server};

/// A node serving the Kademlia RPCs over mutual TLS.
pub struct RunningNode<R: Runtime> {
    core: Arc<Core<R>>,
    client: Arc<Client<R>>,
    identity: TlsIdentity,
    advertised: PeerAddress,
    local_addr: SocketAddr,
    lan_peers: Arc<mdns::LanPeers>,
    mdns: bool,
    port_map: Arc<PortMapStatus>,
    reach: Arc<reach::Reach>,
    relay: Option<Arc<relay::RelayServer<R>>>,
    reservations: Option<Arc<reservation::ReservationService<R>>>,
}

impl<R: Runtime> RunningNode<R> {
    /// Binds `config.listen`, builds the TLS identity with the advertised
    /// address (`identity(Some("host:port"))`), loads the saved table, starts
    /// serving and joins through the saved and bootstrap peers.
    ///
    /// The certificate is built once: it names the first of
    /// `config.relays` (if any) for good, and is not reissued when the
    /// address changes. [`Self::start_reissuing`] does both.
    pub async fn start(
        rt: R,
        config: NodeConfig,
        identity: impl FnOnce(Option<&str>) -> Result<TlsIdentity, IdentityError>,
    ) -> Result<Self, NetError> {
        Self::start_with(rt, config, |config, direct| {
            let advertised = config
                .relays
                .first()
                .and_then(mau_proto::relay::relayed_address)
                .unwrap_or(direct);
            Ok(Identities::fixed(identity(Some(advertised.as_str()))?))
        })
        .await
    }

    /// As [`Self::start`], with a certificate reissued (by `identity`)
    /// whenever the node's address changes: a port mapping gained or lost,
    /// a public IP its peers agree on, a relay reservation obtained or lost
    /// (see [`crate::identity`]). A relayed address is shown only to peers
    /// known to understand it, never to a Go peer.
    pub async fn start_reissuing(
        rt: R,
        config: NodeConfig,
        identity: impl Fn(Option<&str>) -> Result<TlsIdentity, IdentityError> + Send + Sync + 'static,
    ) -> Result<Self, NetError> {
        Self::start_with(rt, config, |_, direct| {
            Identities::reissuing(Box::new(identity), direct)
        })
        .await
    }

    async fn start_with(
        rt: R,
        config: NodeConfig,
        identities: impl FnOnce(&NodeConfig, PeerAddress) -> Result<Identities, IdentityError>,
    ) -> Result<Self, NetError> {
        let listener = rt
            .bind_tcp(config.listen)
            .await
            .map_err(|e| NetError::Io(format!("bind {}", config.listen), e))?;
        let local_addr =
            R::tcp_local_addr(&listener).map_err(|e| NetError::Io("local address".into(), e))?;
        let port_map = Arc::new(PortMapStatus::new(config.metrics.clone()));
        let mappers = start_port_mapping(&rt, &config, local_addr, &port_map).await;
        let mapped = port_map.ipv4().map(|m| m.external);
        let direct = direct_address(&config, mapped, local_addr);
        let identities = Arc::new(identities(&config, direct)?);
        let identity = identities.presented(true);
        let advertised = identities
            .advertised()
            .unwrap_or_else(|| PeerAddress::from(local_addr));
        let fingerprint = identity.fingerprint();
        let node = Node::new(
            fingerprint,
            config.protocol.clone(),
            seed(&config, local_addr),
        );
        let (core, wake) = Core::new(rt.clone(), node, config.metrics.clone());
        let core = Arc::new(core);
        let client = Client::with_identities(rt.clone(), identities.clone(), config.limits.clone());
        if let Some(p) = &config.punch {
            client.enable_punching(punch::Initiator::new(p.clone(), config.metrics.clone()));
        }
        info!(fingerprint = %fingerprint, listen = %local_addr, advertise = %advertised, "node started");

        let saver = Arc::new(TableSaver::new(config.table_file.clone()));
        let reach = Arc::new(reach::Reach::new(
            identities.clone(),
            config.reach.clone(),
            port_map.clone(),
            config.metrics.clone(),
        ));
        let driver = Arc::new(Driver {
            core: core.clone(),
            client: client.clone(),
            saver: saver.clone(),
            reach: reach.clone(),
            k: config.protocol.k,
        });
        core.spawn(driver.run(wake));
        core.spawn(saver.run(core.clone()));
        let (incoming_tx, incoming) = async_channel::bounded(16);
        let punch = Arc::new(punch::PunchResponder::new(
            rt.clone(),
            config.punch.clone(),
            incoming_tx.clone(),
        ));
        let relay = config.relay.clone().map(|limits| {
            relay::RelayServer::new(rt.clone(), core.clone(), limits, config.metrics.clone())
        });
        let serving = Arc::new(ServeContext {
            core: core.clone(),
            rt: rt.clone(),
            server_tls: {
                let mut tls = (*mau_identity::server_config(&identity)?).clone();
                tls.cert_resolver = Arc::new(ServerCert(identities.clone()));
                Arc::new(tls)
            },
            connections: Arc::new(async_lock::Semaphore::new(config.limits.max_connections)),
            shutdown: core.shutdown.clone(),
            dialback: reach::DialbackServer::new(rt.clone(), client.clone()),
            config: config.clone(),
            relay: relay.clone(),
            punch: punch.clone(),
        });
        core.spawn(server::serve(serving, listener, incoming));
        // Relays picked at run time are advertised only by a certificate
        // that can be reissued.
        let auto_relay = config.relays.is_empty() && config.auto_relay && identities.reissues();
        let reservations = (!config.relays.is_empty() || auto_relay).then(|| {
            let service = reservation::ReservationService::new(
                rt.clone(),
                client.clone(),
                config.reservations.clone(),
                config.relays.clone(),
                incoming_tx,
                punch,
                core.shutdown.clone(),
                config.metrics.clone(),
            );
            core.spawn(service.clone().run());
            service
        });
        core.spawn(reach::run(core.clone(), client.clone(), reach.clone()));
        let watch = crate::address::AddressWatch {
            core: core.clone(),
            client: client.clone(),
            reach: reach.clone(),
            port_map: port_map.clone(),
            configured: config.advertise.clone(),
            local: local_addr,
            auto_relay: reservations.clone().filter(|_| auto_relay),
        };
        // A build-once certificate has nothing to follow.
        if identities.reissues() {
            core.spawn(watch.run());
        }
        let lan_peers = Arc::new(mdns::LanPeers::default());
        if let Some(path) = &config.control_socket {
            let ctx = control::ControlContext {
                core: core.clone(),
                advertised: advertised.clone(),
                reach: reach.clone(),
                client: client.clone(),
                lan_peers: lan_peers.clone(),
                mdns: config.mdns,
                stop_requests: config.stop_requests.clone(),
            };
            control::start(ctx, path)?;
        }
        for mapper in mappers {
            let stop = core.shutdown.clone();
            core.spawn(mapper.run(async move { stop.wait().await }));
        }
        let mdns = config.mdns && mdns::start_service(&core, fingerprint, local_addr, &lan_peers);

        let saved = load_saved_table(&rt, &config).await;
        let peers: Vec<Contact<PeerAddress>> = saved
            .into_iter()
            .map(Contact::from)
            .chain(config.bootstrap.iter().cloned())
            .collect();
        if !peers.is_empty() {
            info!(
                peers = peers.len(),
                "joining through saved and bootstrap peers"
            );
            core.with_node(|node, now| node.join(now, peers))?;
        }
        Ok(RunningNode {
            core,
            client,
            identity,
            advertised,
            local_addr,
            lan_peers,
            mdns,
            port_map,
            reach,
            relay,
            reservations,
        })
    }

    /// Reservations held and streams relayed now by this node's relay
    /// (`None`: it does not relay).
    pub fn relay_load(&self) -> Option<(usize, usize)> {
        self.relay.as_ref().map(|r| r.load())
    }

    /// Relays holding a reservation for this node now.
    pub fn reservations(&self) -> Vec<Contact<PeerAddress>> {
        self.reservations
            .as_ref()
            .map_or_else(Vec::new, |r| r.held())
    }

    pub(crate) fn core(&self) -> &Arc<Core<R>> {
        &self.core
    }

    /// The runtime this node runs on.
    pub fn runtime(&self) -> &R {
        &self.core.rt
    }

    /// Our fingerprint.
    pub fn fingerprint(&self) -> Fingerprint {
        self.identity.fingerprint()
    }

    /// The socket address the server is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The address advertised to peers at start (see [`Self::address`]
    /// for the one of the moment).
    pub fn advertised(&self) -> &PeerAddress {
        &self.advertised
    }

    /// The address advertised now to peers that understand relayed
    /// addresses (a relayed one while we hold a reservation).
    pub fn address(&self) -> PeerAddress {
        self.client
            .identities()
            .advertised()
            .unwrap_or_else(|| self.advertised.clone())
    }

    /// The direct address advertised now (never a relayed one: what a Go
    /// peer is shown).
    pub fn direct_address(&self) -> PeerAddress {
        self.client
            .identities()
            .direct()
            .unwrap_or_else(|| self.advertised.clone())
    }

    /// This node as a contact others can bootstrap from.
    pub fn contact(&self) -> Contact<PeerAddress> {
        Contact::new(self.fingerprint(), self.address())
    }

    /// A DHT lookup for `target`.
    pub async fn lookup(
        &self,
        target: Fingerprint,
    ) -> Result<LookupOutcome<PeerAddress>, NetError> {
        self.core.lookup(target).await
    }

    /// Joins (again) through `peers`.
    pub fn join(&self, peers: Vec<Contact<PeerAddress>>) -> Result<(), NetError> {
        self.core.with_node(|node, now| node.join(now, peers))?;
        Ok(())
    }

    /// Adds a peer found by other means after it answers a ping.
    pub fn probe(&self, peer: Contact<PeerAddress>) {
        self.core.with_node(|node, now| node.probe(now, peer));
    }

    /// Peers seen on the LAN over mDNS (empty when mDNS is off).
    pub fn lan_peers(&self) -> &Arc<mdns::LanPeers> {
        &self.lan_peers
    }

    /// A resolver answering from the peers seen on the LAN, waiting up to `deadline`.
    pub fn lan_resolver(&self, deadline: Duration) -> mdns::LanResolver<R> {
        mdns::LanResolver::new(self.core.rt.clone(), self.lan_peers.clone(), deadline)
    }

    /// True while mDNS advertises and browses.
    pub fn mdns_running(&self) -> bool {
        self.mdns && !self.core.shutdown.is_down()
    }

    /// The port mapping the gateway holds for us now (PCP, NAT-PMP or
    /// UPnP; external address; lease end), if any. It may change while the
    /// node runs (renewals, a rebooted gateway, a lost lease).
    pub fn port_mapping(&self) -> Option<ActiveMapping> {
        self.port_map.ipv4()
    }

    /// The IPv6 pinhole the gateway holds for us now (PCP), if any.
    pub fn ipv6_pinhole(&self) -> Option<ActiveMapping> {
        self.port_map.ipv6()
    }

    /// What the node knows of its public address (from the
    /// `Mau-Observed-Address` votes of peers) and of its reachability (from
    /// their dial-backs).
    pub fn reachability(&self) -> reach::ReachStatus {
        self.reach.status(self.core.now())
    }

    /// Asks peers of the table to dial us back now (as the periodic check
    /// does) and returns the status after their answers.
    pub async fn check_reachability(&self) -> reach::ReachStatus {
        reach::check(&self.core, &self.client, &self.reach).await
    }

    /// A snapshot of the routing table.
    pub fn snapshot(&self) -> control::TableSnapshot {
        control::snapshot(&self.core, &self.address())
    }

    /// The HTTPS client of this node (for other requests to peers, e.g. sync).
    pub fn client(&self) -> &Arc<Client<R>> {
        &self.client
    }

    /// True while the join sequence (self lookup, bucket refreshes) runs.
    pub fn is_joining(&self) -> bool {
        self.core.read(|node, _| node.is_joining())
    }

    /// True once [`Self::shutdown`] ran (or began).
    pub fn is_shut_down(&self) -> bool {
        self.core.shutdown.is_down()
    }

    /// Stops the node and returns once every part of it has: the server
    /// answers no more, the table is saved, the mDNS advertisement is
    /// withdrawn, the port mapping removed and the control socket gone.
    pub async fn shutdown(&mut self) {
        if self.core.shutdown.is_down() {
            return;
        }
        self.core.stopped().await;
        info!(fingerprint = %self.fingerprint(), "node stopped");
    }
}

impl<R: Runtime> Drop for RunningNode<R> {
    /// Dropping a node tells its tasks to stop without waiting for them (use
    /// [`RunningNode::shutdown`] to wait); they still save the table and
    /// remove the port mapping and the control socket as they end.
    fn drop(&mut self) {
        self.core.signal_stop();
    }
}

/// When port mapping is on: the IPv4 mapper, run until its first outcome
/// (so the node can advertise the mapped address), and the IPv6 pinhole
/// mapper when listening on IPv6; both then run as node tasks.
async fn start_port_mapping<R: Runtime>(
    rt: &R,
    config: &NodeConfig,
    local_addr: SocketAddr,
    status: &Arc<PortMapStatus>,
) -> Vec<PortMapper<R>> {
    let protocols = &config.port_mapping;
    if protocols.is_empty() {
        return Vec::new();
    }
    let lease = config.port_mapping_lease;
    let ip = local_addr.ip();
    // `[::]` is dual-stack: it serves IPv4 peers too.
    let v4 = ip.is_ipv4() || ip.is_unspecified();
    let mut mappers = Vec::new();
    if v4 {
        if let Some(mut m) =
            PortMapper::new(rt, protocols, local_addr, lease, false, status.clone()).await
        {
            m.until_settled().await;
            mappers.push(m);
        }
    }
    if ip.is_ipv6() {
        match PortMapper::new(rt, protocols, local_addr, lease, true, status.clone()).await {
            Some(m) => mappers.push(m),
            None => info!("port mapping: no IPv6 pinhole (needs PCP, a global IPv6 address and an IPv6 default gateway)"),
        }
    }
    mappers
}

/// The direct address peers are told: configured, else mapped, else the
/// local one.
fn direct_address(
    config: &NodeConfig,
    mapped: Option<SocketAddr>,
    local_addr: SocketAddr,
) -> PeerAddress {
    if local_addr.ip().is_unspecified() && config.advertise.is_none() && mapped.is_none() {
        warn!(%local_addr, "listening on an unspecified address without --advertise: peers learn our IP from the connection");
    }
    mau_proto::advertise::direct_address(config.advertise.as_ref(), mapped, None, local_addr)
}

/// The core's random seed: configured, else from the clock and port.
fn seed(config: &NodeConfig, local_addr: SocketAddr) -> u64 {
    config.seed.unwrap_or_else(|| {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        t ^ u64::from(local_addr.port()).rotate_left(48)
    })
}

/// The saved table, read on the blocking pool; unreadable means empty.
async fn load_saved_table<R: Runtime>(rt: &R, config: &NodeConfig) -> Vec<mau_proto::PeerRecord> {
    let Some(path) = config.table_file.clone() else {
        return Vec::new();
    };
    let shown = path.display().to_string();
    match rt.run_blocking(move || persist::load_table(&path)).await {
        Some(Ok(peers)) => peers,
        Some(Err(e)) => {
            warn!(path = %shown, error = %e, "ignoring unreadable routing table file");
            Vec::new()
        }
        None => Vec::new(),
    }
}
