//! A running networked node: the core behind a mutex, the driver task that
//! executes its commands, and the handle applications use.
//!
//! The core (`mau_proto::Node`) makes every protocol decision. This file only
//! moves data: inbound requests and RPC answers go in (with the time), requests
//! the core emits go out as HTTPS calls, deadlines become runtime timers.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mau_identity::{IdentityError, TlsIdentity};
use mau_proto::wire::{decode_find_peer, find_peer_path, max_find_peer_body, PING_PATH};
use mau_proto::{
    Contact, Event, Fingerprint, LookupId, LookupOutcome, Node, NodeError, Output, PeerAddress,
    Request, Response, RpcFailure, Time, Transmit,
};
use tracing::{debug, info, warn};

use crate::client::{Client, ClientError};
use crate::config::NodeConfig;
use crate::runtime::Runtime;
use crate::{control, mdns, persist, server, upnp};

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

/// Resolves when the node shuts down.
#[derive(Clone)]
pub(crate) struct Shutdown(async_channel::Receiver<()>);

impl Shutdown {
    /// Waits for shutdown.
    pub(crate) async fn wait(&self) {
        // Nothing is ever sent: the channel closes when the node stops.
        let _ = self.0.recv().await;
    }

    pub(crate) fn is_down(&self) -> bool {
        self.0.is_closed()
    }
}

/// State shared by the node's tasks.
pub(crate) struct Shared<R: Runtime> {
    pub rt: R,
    pub node: Mutex<Node<PeerAddress>>,
    started: Instant,
    wake: async_channel::Sender<()>,
    waiters: Mutex<BTreeMap<LookupId, async_channel::Sender<LookupOutcome<PeerAddress>>>>,
    pub client: Arc<Client<R>>,
    pub config: NodeConfig,
    pub identity: TlsIdentity,
    pub advertised: PeerAddress,
    pub server_tls: Arc<rustls::ServerConfig>,
    pub shutdown: Shutdown,
    table_dirty: AtomicBool,
    outgoing: async_lock::Semaphore,
    pub connections: Arc<async_lock::Semaphore>,
    /// Peers seen on the LAN (empty when mDNS is off).
    pub lan_peers: Arc<mdns::LanPeers>,
}

impl<R: Runtime> Shared<R> {
    /// Milliseconds since the node started: the core's clock.
    pub fn now(&self) -> Time {
        Time::from_duration(self.started.elapsed())
    }

    /// Runs `f` on the core, then wakes the driver to send what it emitted.
    pub fn with_node<T>(&self, f: impl FnOnce(&mut Node<PeerAddress>, Time) -> T) -> T {
        let now = self.now();
        let out = {
            let mut node = self.node.lock().unwrap_or_else(|e| e.into_inner());
            f(&mut node, now)
        };
        let _ = self.wake.try_send(());
        out
    }

    /// Starts a lookup and waits for its outcome.
    pub async fn lookup(
        &self,
        target: Fingerprint,
    ) -> Result<LookupOutcome<PeerAddress>, NetError> {
        let (tx, rx) = async_channel::bounded(1);
        // Register the waiter under the node lock, before the driver can see
        // the outcome (a lookup on an empty table finishes at once).
        self.with_node(|node, now| -> Result<(), NetError> {
            let id = node.start_lookup(now, target)?;
            self.waiters
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(id, tx);
            Ok(())
        })?;
        futures_lite::future::or(
            async { rx.recv().await.map_err(|_| NetError::Shutdown) },
            async {
                self.shutdown.wait().await;
                Err(NetError::Shutdown)
            },
        )
        .await
    }

    fn on_event(&self, event: Event<PeerAddress>) {
        match event {
            Event::LookupFinished(outcome) => {
                debug!(
                    target = %outcome.target, kind = ?outcome.kind, found = outcome.found.is_some(),
                    hops = outcome.hops, requests = outcome.requests, failures = outcome.failures,
                    "DHT lookup finished"
                );
                let waiter = self
                    .waiters
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&outcome.id);
                if let Some(tx) = waiter {
                    let _ = tx.try_send(outcome);
                }
            }
            Event::PeerAdded(c) => {
                debug!(peer = %c.fingerprint, address = %c.address, "routing table: peer added");
                self.table_dirty.store(true, Ordering::Relaxed);
            }
            Event::PeerRemoved(c) => {
                debug!(peer = %c.fingerprint, address = %c.address, "routing table: peer removed");
                self.client.forget(&c.fingerprint);
                self.table_dirty.store(true, Ordering::Relaxed);
            }
            Event::Joined { peers } => {
                info!(peers, "joined the network");
                // Keep what the join learned at once rather than at the next
                // periodic save (10 s): a node killed meanwhile restarts from it.
                self.save_table_if_dirty();
            }
        }
    }

    /// Executes one request the core emitted and reports the answer.
    async fn execute(self: Arc<Self>, t: Transmit<PeerAddress>) {
        let _permit = self.outgoing.acquire().await;
        let result = self.call(&t).await;
        if let Err(e) = &result {
            debug!(peer = %t.to.fingerprint, address = %t.to.address, request = ?t.request, error = %e, "RPC failed");
        }
        let answer = result.map_err(|e| match e {
            ClientError::Timeout(_) => RpcFailure::Timeout,
            ClientError::Status { .. } | ClientError::TooLarge(_) | ClientError::Http(_) => {
                RpcFailure::BadResponse
            }
            _ => RpcFailure::Unreachable,
        });
        let answer = answer.and_then(|r| r.ok_or(RpcFailure::BadResponse));
        self.with_node(|node, now| node.on_response(now, t.id, answer));
    }

    async fn call(
        &self,
        t: &Transmit<PeerAddress>,
    ) -> Result<Option<Response<PeerAddress>>, ClientError> {
        match &t.request {
            Request::Ping => {
                debug!(peer = %t.to.fingerprint, address = %t.to.address, "DHT ping");
                self.client.get(&t.to, PING_PATH, 1024).await?;
                Ok(Some(Response::Pong))
            }
            Request::FindPeer(target) => {
                debug!(peer = %t.to.fingerprint, address = %t.to.address, %target, "DHT find_peer");
                let k = self.config.protocol.k;
                let body = self
                    .client
                    .get(&t.to, &find_peer_path(target), max_find_peer_body(k))
                    .await?;
                match decode_find_peer(&body, k) {
                    Ok(records) => Ok(Some(Response::Peers(
                        records.into_iter().map(Contact::from).collect(),
                    ))),
                    Err(e) => {
                        debug!(peer = %t.to.fingerprint, error = %e, "malformed find_peer answer");
                        Ok(None)
                    }
                }
            }
        }
    }

    /// The table as records, for persistence.
    pub fn table_records(&self) -> Vec<mau_proto::PeerRecord> {
        let node = self.node.lock().unwrap_or_else(|e| e.into_inner());
        node.table().entries().map(|e| e.contact().into()).collect()
    }

    fn save_table_if_dirty(&self) {
        let Some(path) = &self.config.table_file else {
            return;
        };
        if !self.table_dirty.swap(false, Ordering::Relaxed) {
            return;
        }
        if let Err(e) = persist::save_table(path, &self.table_records()) {
            warn!(path = %path.display(), error = %e, "could not save the routing table");
            self.table_dirty.store(true, Ordering::Relaxed);
        }
    }
}

/// The driver: sends what the core emits, fires its deadlines.
async fn drive<R: Runtime>(shared: Arc<Shared<R>>, wake: async_channel::Receiver<()>) {
    enum Wakeup {
        Poke,
        Timer,
        Stop,
    }
    loop {
        let (outputs, deadline) = {
            let mut node = shared.node.lock().unwrap_or_else(|e| e.into_inner());
            let outputs: Vec<_> = std::iter::from_fn(|| node.poll_output()).collect();
            (outputs, node.poll_timeout())
        };
        for o in outputs {
            match o {
                Output::Transmit(t) => shared.rt.spawn(shared.clone().execute(t)),
                Output::Event(e) => shared.on_event(e),
            }
        }
        let wait = deadline
            .map(|d| Duration::from_millis(d.as_millis().saturating_sub(shared.now().as_millis())));
        let sleep = shared.rt.sleep(wait.unwrap_or(Duration::from_secs(3600)));
        let woke = futures_lite::future::or(
            futures_lite::future::or(
                async {
                    match wake.recv().await {
                        Ok(()) => Wakeup::Poke,
                        Err(_) => Wakeup::Stop,
                    }
                },
                async {
                    sleep.await;
                    if wait.is_some() {
                        Wakeup::Timer
                    } else {
                        Wakeup::Poke
                    }
                },
            ),
            async {
                shared.shutdown.wait().await;
                Wakeup::Stop
            },
        )
        .await;
        match woke {
            Wakeup::Poke => {}
            Wakeup::Timer => shared.with_node(|node, now| node.handle_timeout(now)),
            Wakeup::Stop => break,
        }
    }
}

/// Saves the table now and then while it changes.
async fn persist_loop<R: Runtime>(shared: Arc<Shared<R>>) {
    loop {
        let tick = shared.rt.sleep(Duration::from_secs(10));
        let stop = futures_lite::future::or(
            async {
                tick.await;
                false
            },
            async {
                shared.shutdown.wait().await;
                true
            },
        )
        .await;
        shared.save_table_if_dirty();
        if stop {
            break;
        }
    }
}

/// A node serving the Kademlia RPCs over mutual TLS.
pub struct RunningNode<R: Runtime> {
    shared: Arc<Shared<R>>,
    stop: Option<async_channel::Sender<()>>,
    local_addr: SocketAddr,
    mdns: Option<mdns::Mdns>,
    upnp: Option<Arc<upnp::PortMapping>>,
}

impl<R: Runtime> RunningNode<R> {
    /// Binds `config.listen`, builds the TLS identity with the advertised
    /// address (`identity(Some("host:port"))`), loads the saved table, starts
    /// serving and joins through the saved and bootstrap peers.
    pub async fn start(
        rt: R,
        config: NodeConfig,
        identity: impl FnOnce(Option<&str>) -> Result<TlsIdentity, IdentityError>,
    ) -> Result<Self, NetError> {
        let listener = rt
            .bind_tcp(config.listen)
            .await
            .map_err(|e| NetError::Io(format!("bind {}", config.listen), e))?;
        let local_addr =
            R::tcp_local_addr(&listener).map_err(|e| NetError::Io("local address".into(), e))?;
        let upnp = if config.upnp {
            match upnp::map(&rt, local_addr, config.upnp_lease).await {
                Ok(m) => Some(Arc::new(m)),
                Err(e) => {
                    warn!(error = %e, "UPnP: no port mapping; running on the local address");
                    None
                }
            }
        } else {
            None
        };
        let advertised = match (&config.advertise, &upnp) {
            (Some(a), _) => a.clone(),
            (None, Some(m)) => PeerAddress::from(m.external),
            (None, None) => PeerAddress::from(local_addr),
        };
        if local_addr.ip().is_unspecified() && config.advertise.is_none() && upnp.is_none() {
            warn!(%local_addr, "listening on an unspecified address without --advertise: peers learn our IP from the connection");
        }
        let identity = identity(Some(advertised.as_str()))?;
        let fingerprint = identity.fingerprint();
        let server_tls = mau_identity::server_config(&identity)?;
        let client = Client::new(rt.clone(), identity.clone(), config.limits.clone());
        let seed = config.seed.unwrap_or_else(|| {
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0);
            t ^ u64::from(local_addr.port()).rotate_left(48)
        });
        let node = Node::new(fingerprint, config.protocol.clone(), Time::ZERO, seed);
        let (wake_tx, wake_rx) = async_channel::bounded(1);
        let (stop_tx, stop_rx) = async_channel::bounded::<()>(1);
        let saved = match &config.table_file {
            Some(p) => persist::load_table(p).unwrap_or_else(|e| {
                warn!(path = %p.display(), error = %e, "ignoring unreadable routing table file");
                Vec::new()
            }),
            None => Vec::new(),
        };
        let shared = Arc::new(Shared {
            rt: rt.clone(),
            node: Mutex::new(node),
            started: Instant::now(),
            wake: wake_tx,
            waiters: Mutex::new(BTreeMap::new()),
            client,
            outgoing: async_lock::Semaphore::new(config.limits.max_outgoing),
            connections: Arc::new(async_lock::Semaphore::new(config.limits.max_connections)),
            config,
            identity,
            advertised,
            server_tls,
            shutdown: Shutdown(stop_rx),
            table_dirty: AtomicBool::new(false),
            lan_peers: Arc::new(mdns::LanPeers::default()),
        });
        info!(fingerprint = %fingerprint, listen = %local_addr, advertise = %shared.advertised, "node started");
        rt.spawn(drive(shared.clone(), wake_rx));
        rt.spawn(server::serve(shared.clone(), listener));
        rt.spawn(persist_loop(shared.clone()));
        if let Some(path) = shared.config.control_socket.clone() {
            let listener = control::bind(&rt, &path)?;
            rt.spawn(control::serve(shared.clone(), listener));
        }
        if let Some(m) = &upnp {
            let stop = shared.shutdown.clone();
            rt.spawn(upnp::renew(rt.clone(), m.clone(), async move {
                stop.wait().await
            }));
        }
        let mdns = if !shared.config.mdns {
            None
        } else if local_addr.ip().is_loopback() {
            info!(%local_addr, "mDNS off: listening on loopback only");
            None
        } else {
            match mdns::Mdns::start(Some((fingerprint, local_addr))) {
                Ok((m, events)) => {
                    let s = shared.clone();
                    let stop = shared.shutdown.clone();
                    rt.spawn(mdns::browse(
                        events,
                        shared.lan_peers.clone(),
                        Some(fingerprint),
                        move |c| s.with_node(|node, now| node.probe(now, c)),
                        async move { stop.wait().await },
                    ));
                    Some(m)
                }
                Err(e) => {
                    warn!(error = %e, "mDNS: LAN discovery off");
                    None
                }
            }
        };
        let peers: Vec<Contact<PeerAddress>> = saved
            .into_iter()
            .map(Contact::from)
            .chain(shared.config.bootstrap.iter().cloned())
            .collect();
        if !peers.is_empty() {
            info!(
                peers = peers.len(),
                "joining through saved and bootstrap peers"
            );
            shared.with_node(|node, now| node.join(now, peers))?;
        }
        Ok(RunningNode {
            shared,
            stop: Some(stop_tx),
            local_addr,
            mdns,
            upnp,
        })
    }

    pub(crate) fn shared(&self) -> &Arc<Shared<R>> {
        &self.shared
    }

    /// Our fingerprint.
    pub fn fingerprint(&self) -> Fingerprint {
        self.shared.identity.fingerprint()
    }

    /// The socket address the server is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The address advertised to peers.
    pub fn advertised(&self) -> &PeerAddress {
        &self.shared.advertised
    }

    /// This node as a contact others can bootstrap from.
    pub fn contact(&self) -> Contact<PeerAddress> {
        Contact::new(self.fingerprint(), self.shared.advertised.clone())
    }

    /// A DHT lookup for `target`.
    pub async fn lookup(
        &self,
        target: Fingerprint,
    ) -> Result<LookupOutcome<PeerAddress>, NetError> {
        self.shared.lookup(target).await
    }

    /// Joins (again) through `peers`.
    pub fn join(&self, peers: Vec<Contact<PeerAddress>>) -> Result<(), NetError> {
        self.shared.with_node(|node, now| node.join(now, peers))?;
        Ok(())
    }

    /// Adds a peer found by other means after it answers a ping.
    pub fn probe(&self, peer: Contact<PeerAddress>) {
        self.shared.with_node(|node, now| node.probe(now, peer));
    }

    /// Peers seen on the LAN over mDNS (empty when mDNS is off).
    pub fn lan_peers(&self) -> &Arc<mdns::LanPeers> {
        &self.shared.lan_peers
    }

    /// A resolver answering from the peers seen on the LAN, waiting up to `deadline`.
    pub fn lan_resolver(&self, deadline: Duration) -> mdns::LanResolver<R> {
        mdns::LanResolver::new(
            self.shared.rt.clone(),
            self.shared.lan_peers.clone(),
            deadline,
        )
    }

    /// True while mDNS advertises and browses.
    pub fn mdns_running(&self) -> bool {
        self.mdns.is_some()
    }

    /// The UPnP port mapping held, if any.
    pub fn port_mapping(&self) -> Option<&upnp::PortMapping> {
        self.upnp.as_deref()
    }

    /// A snapshot of the routing table.
    pub fn snapshot(&self) -> control::TableSnapshot {
        control::snapshot(&self.shared)
    }

    /// The HTTPS client of this node (for other requests to peers, e.g. sync).
    pub fn client(&self) -> &Arc<Client<R>> {
        &self.shared.client
    }

    /// True while the join sequence (self lookup, bucket refreshes) runs.
    pub fn is_joining(&self) -> bool {
        self.shared
            .node
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_joining()
    }

    /// True once [`Self::shutdown`] ran.
    pub fn is_shut_down(&self) -> bool {
        self.shared.shutdown.is_down()
    }

    /// Stops serving, stops the driver and saves the table.
    pub fn shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            stop.close();
            if let Some(mut m) = self.mdns.take() {
                m.withdraw();
            }
            if let Some(m) = self.upnp.take() {
                m.remove(Duration::from_secs(5));
            }
            self.shared.table_dirty.store(true, Ordering::Relaxed);
            self.shared.save_table_if_dirty();
            if let Some(p) = &self.shared.config.control_socket {
                let _ = std::fs::remove_file(p);
            }
            info!(fingerprint = %self.fingerprint(), "node stopped");
        }
    }
}

impl<R: Runtime> Drop for RunningNode<R> {
    fn drop(&mut self) {
        self.shutdown();
    }
}
