//! LAN discovery over mDNS-SD (RFC 6762/6763), with the `mdns-sd` crate.
//!
//! A node advertises `<lowercase fingerprint>._mau._tcp.local.` (SRV, TXT
//! `fpr=<fingerprint>`, A/AAAA of its listening address) and browses
//! `_mau._tcp.local.`. Every peer seen is recorded in a bounded [`LanPeers`]
//! map and handed to the core as a *candidate* (`Node::probe`): it enters the
//! routing table only after it answered a ping over mutual TLS, so a forged
//! advertisement cannot place anyone in the table.
//!
//! `mdns-sd` runs its own thread and talks through channels, so it works the
//! same under every async runtime. All packet parsing is the crate's; this
//! module only validates what the crate resolved (instance name, TXT, addresses).
//!
//! No peer is lost to a full queue (the Go implementation uses a one-slot
//! channel): the browse task drains the crate's event channel continuously
//! into a map keyed by fingerprint; when the map is full the peer seen least
//! recently makes room.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mau_proto::{Contact, Fingerprint, PeerAddress};
use mdns_sd::{ServiceDaemon, ServiceEvent, ServiceInfo, UnregisterStatus};
use serde::{Deserialize, Serialize};
use tracing::{debug, info, warn};

use crate::lock::lock;
use crate::resolver::{BoxFuture, Resolve};
use crate::runtime::Runtime;

/// The DNS-SD service type of Mau peers.
pub const SERVICE_TYPE: &str = "_mau._tcp.local.";

/// Peers remembered at once; beyond it the one seen least recently goes.
pub const MAX_LAN_PEERS: usize = 1024;

/// Addresses remembered per peer.
const MAX_ADDRESSES: usize = 8;

/// How long [`Mdns::withdraw`] waits for the goodbye packets to go out.
const GOODBYE_WAIT: Duration = Duration::from_secs(2);

/// mDNS could not start or failed.
#[derive(Debug, thiserror::Error)]
pub enum MdnsError {
    /// The mDNS daemon (socket, thread) failed.
    #[error("mDNS: {0}")]
    Daemon(#[from] mdns_sd::Error),
}

/// A peer seen on the LAN.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LanPeer {
    /// Its fingerprint (from the instance name).
    pub fingerprint: Fingerprint,
    /// Where it says it listens, IPv4 first.
    pub addresses: Vec<PeerAddress>,
    /// Seconds since it was first seen.
    pub first_seen_secs: u64,
    /// Seconds since it was last announced or answered.
    pub last_seen_secs: u64,
}

struct Entry {
    addresses: Vec<PeerAddress>,
    first_seen: Instant,
    last_seen: Instant,
}

/// The peers seen on the LAN, bounded by [`MAX_LAN_PEERS`].
#[derive(Default)]
pub struct LanPeers {
    inner: Mutex<BTreeMap<Fingerprint, Entry>>,
}

impl LanPeers {
    /// Every peer seen, most recently seen first.
    pub fn list(&self) -> Vec<LanPeer> {
        let map = lock(&self.inner);
        let mut v: Vec<LanPeer> = map
            .iter()
            .map(|(fp, e)| LanPeer {
                fingerprint: *fp,
                addresses: e.addresses.clone(),
                first_seen_secs: e.first_seen.elapsed().as_secs(),
                last_seen_secs: e.last_seen.elapsed().as_secs(),
            })
            .collect();
        v.sort_by_key(|p| p.last_seen_secs);
        v
    }

    /// The addresses of `fp`, if it was seen.
    pub fn get(&self, fp: &Fingerprint) -> Option<Vec<PeerAddress>> {
        let map = lock(&self.inner);
        map.get(fp).map(|e| e.addresses.clone())
    }

    /// How many peers are remembered.
    pub fn len(&self) -> usize {
        lock(&self.inner).len()
    }

    /// True when no peer was seen.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Records `fp` at `addresses`; returns true if it is new or moved.
    pub fn insert(&self, fp: Fingerprint, addresses: Vec<PeerAddress>) -> bool {
        let now = Instant::now();
        let mut map = lock(&self.inner);
        if let Some(e) = map.get_mut(&fp) {
            e.last_seen = now;
            if e.addresses == addresses {
                return false;
            }
            e.addresses = addresses;
            return true;
        }
        if map.len() >= MAX_LAN_PEERS {
            let oldest = map
                .iter()
                .min_by_key(|(_, e)| e.last_seen)
                .map(|(fp, _)| *fp);
            if let Some(old) = oldest {
                map.remove(&old);
            }
        }
        map.insert(
            fp,
            Entry {
                addresses,
                first_seen: now,
                last_seen: now,
            },
        );
        true
    }

    /// Forgets `fp` (it said goodbye).
    pub fn remove(&self, fp: &Fingerprint) {
        lock(&self.inner).remove(fp);
    }
}

/// The fingerprint named by an instance `<fpr>._mau._tcp.local.`.
pub fn instance_fingerprint(fullname: &str) -> Option<Fingerprint> {
    let name = fullname.strip_suffix(SERVICE_TYPE)?.strip_suffix('.')?;
    if name.len() > 64 || !name.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    Fingerprint::parse(name).ok()
}

/// Usable addresses of a resolved service: not loopback, unspecified,
/// multicast or IPv6 link-local (which needs a zone a `host:port` cannot carry);
/// IPv4 first, deduplicated, at most a few.
pub fn usable_addresses(ips: impl IntoIterator<Item = IpAddr>, port: u16) -> Vec<PeerAddress> {
    if port == 0 {
        return Vec::new();
    }
    let mut ips: Vec<IpAddr> = ips
        .into_iter()
        .filter(|ip| !ip.is_loopback() && !ip.is_unspecified() && !ip.is_multicast())
        .filter(|ip| match ip {
            IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) != 0xfe80,
            IpAddr::V4(v4) => !v4.is_broadcast(),
        })
        .collect();
    ips.sort_by_key(|ip| (ip.is_ipv6(), *ip));
    ips.dedup();
    ips.truncate(MAX_ADDRESSES);
    ips.into_iter()
        .map(|ip| PeerAddress::from(SocketAddr::new(ip, port)))
        .collect()
}

/// A running mDNS responder and browser.
pub struct Mdns {
    daemon: ServiceDaemon,
    fullname: Option<String>,
}

impl Mdns {
    /// Starts the mDNS daemon. With `advertise = Some((fingerprint, listen))`
    /// it announces `<fpr>._mau._tcp.local.` on `listen`'s port: on every
    /// interface address (re-announced when they change) if `listen` is
    /// unspecified (`0.0.0.0`: IPv4 only; `[::]`: both), else on that address.
    /// Returns the browse events of `_mau._tcp.local.`.
    pub fn start(
        advertise: Option<(Fingerprint, SocketAddr)>,
    ) -> Result<(Self, mdns_sd::Receiver<ServiceEvent>), MdnsError> {
        let daemon = ServiceDaemon::new()?;
        let mut fullname = None;
        if let Some((fp, listen)) = advertise {
            if listen.ip() == IpAddr::from([0u8, 0, 0, 0]) {
                // An IPv4-only listener: do not announce IPv6 addresses.
                daemon.disable_interface(mdns_sd::IfKind::IPv6)?;
            }
            let name = fp.to_string().to_ascii_lowercase();
            let host = format!("mau-{}.local.", &name[..16.min(name.len())]);
            let txt = [("fpr", name.as_str())];
            let info = if listen.ip().is_unspecified() {
                ServiceInfo::new(SERVICE_TYPE, &name, &host, (), listen.port(), &txt[..])?
                    .enable_addr_auto()
            } else {
                ServiceInfo::new(
                    SERVICE_TYPE,
                    &name,
                    &host,
                    listen.ip(),
                    listen.port(),
                    &txt[..],
                )?
            };
            fullname = Some(info.get_fullname().to_owned());
            daemon.register(info)?;
            info!(instance = ?fullname, port = listen.port(), "mDNS: advertising");
        }
        let events = daemon.browse(SERVICE_TYPE)?;
        Ok((Mdns { daemon, fullname }, events))
    }

    /// Withdraws the advertisement (goodbye packets, TTL 0) and stops the
    /// daemon. Blocks for at most a couple of seconds.
    pub fn withdraw(&mut self) {
        if let Some(name) = self.fullname.take() {
            match self.daemon.unregister(&name) {
                Ok(rx) => match rx.recv_timeout(GOODBYE_WAIT) {
                    Ok(UnregisterStatus::OK) => info!(instance = %name, "mDNS: withdrawn"),
                    Ok(s) => warn!(instance = %name, status = ?s, "mDNS: withdraw"),
                    Err(e) => warn!(instance = %name, error = %e, "mDNS: no goodbye confirmation"),
                },
                Err(e) => warn!(instance = %name, error = %e, "mDNS: withdraw failed"),
            }
        }
        if let Ok(rx) = self.daemon.shutdown() {
            let _ = rx.recv_timeout(GOODBYE_WAIT);
        }
    }
}

impl Drop for Mdns {
    fn drop(&mut self) {
        self.withdraw();
    }
}

/// Starts advertising `fingerprint` at `local_addr` and browsing, as one of
/// the node's tasks that withdraws the advertisement when the node stops.
/// False if mDNS could not start (or the node listens on loopback only).
pub(crate) fn start_service<R: crate::runtime::Runtime>(
    core: &Arc<crate::core::Core<R>>,
    fingerprint: Fingerprint,
    local_addr: SocketAddr,
    peers: &Arc<LanPeers>,
) -> bool {
    if local_addr.ip().is_loopback() {
        info!(%local_addr, "mDNS off: listening on loopback only");
        return false;
    }
    let (mut m, events) = match Mdns::start(Some((fingerprint, local_addr))) {
        Ok(started) => started,
        Err(e) => {
            warn!(error = %e, "mDNS: LAN discovery off");
            return false;
        }
    };
    let (c, stop, peers) = (core.clone(), core.shutdown.clone(), peers.clone());
    core.spawn(async move {
        let probe = |p| c.with_node(|node, now| node.probe(now, p));
        browse(events, peers, Some(fingerprint), probe, stop.wait()).await;
        // Goodbye packets wait for the daemon: off the executor.
        let _ = c.rt.run_blocking(move || m.withdraw()).await;
    });
    true
}

/// Drains the browse events into `peers` until `stop` completes, calling
/// `on_peer` for every peer that is new or moved (not `own`).
pub async fn browse<S: Future<Output = ()>>(
    events: mdns_sd::Receiver<ServiceEvent>,
    peers: Arc<LanPeers>,
    own: Option<Fingerprint>,
    on_peer: impl Fn(Contact<PeerAddress>),
    stop: S,
) {
    let run = async {
        while let Ok(event) = events.recv_async().await {
            handle_event(event, &peers, own, &on_peer);
        }
    };
    futures_lite::future::or(run, stop).await;
}

fn handle_event(
    event: ServiceEvent,
    peers: &LanPeers,
    own: Option<Fingerprint>,
    on_peer: &impl Fn(Contact<PeerAddress>),
) {
    match event {
        ServiceEvent::ServiceResolved(s) => {
            let Some(fp) = instance_fingerprint(&s.fullname) else {
                debug!(instance = %s.fullname, "mDNS: ignoring an instance that names no fingerprint");
                return;
            };
            if Some(fp) == own {
                return;
            }
            if let Some(claimed) = s.txt_properties.get_property_val_str("fpr") {
                if Fingerprint::parse(claimed).ok() != Some(fp) {
                    debug!(instance = %s.fullname, "mDNS: TXT fpr disagrees with the instance name");
                    return;
                }
            }
            let addresses = usable_addresses(s.addresses.iter().map(|a| a.to_ip_addr()), s.port);
            if addresses.is_empty() {
                debug!(instance = %s.fullname, "mDNS: no usable address");
                return;
            }
            if peers.insert(fp, addresses.clone()) {
                info!(peer = %fp, addresses = ?addresses, "mDNS: peer seen on the LAN");
                on_peer(Contact::new(fp, addresses[0].clone()));
            }
        }
        ServiceEvent::ServiceRemoved(_, fullname) => {
            if let Some(fp) = instance_fingerprint(&fullname) {
                debug!(peer = %fp, "mDNS: peer withdrew");
                peers.remove(&fp);
            }
        }
        _ => {}
    }
}

/// The LAN resolver: addresses of a fingerprint seen over mDNS, waiting up to
/// a deadline for it to be announced.
pub struct LanResolver<R: Runtime> {
    rt: R,
    peers: Arc<LanPeers>,
    deadline: Duration,
}

impl<R: Runtime> LanResolver<R> {
    /// A resolver reading `peers` (a node's, see
    /// [`crate::RunningNode::lan_peers`]), waiting at most `deadline`.
    pub fn new(rt: R, peers: Arc<LanPeers>, deadline: Duration) -> Self {
        LanResolver {
            rt,
            peers,
            deadline,
        }
    }
}

impl<R: Runtime> Resolve for LanResolver<R> {
    fn name(&self) -> &str {
        "lan"
    }

    fn resolve(&self, fp: Fingerprint) -> BoxFuture<'_, Result<Vec<PeerAddress>, String>> {
        Box::pin(async move {
            let start = Instant::now();
            loop {
                if let Some(a) = self.peers.get(&fp) {
                    return Ok(a);
                }
                if start.elapsed() >= self.deadline {
                    return Err(format!("not seen on the LAN within {:?}", self.deadline));
                }
                let left = self.deadline.saturating_sub(start.elapsed());
                self.rt.sleep(left.min(Duration::from_millis(50))).await;
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FP: &str = "0123456789abcdef0123456789abcdef01234567";

    #[test]
    fn instance_names() {
        let fp = instance_fingerprint(&format!("{FP}._mau._tcp.local.")).unwrap();
        assert_eq!(fp.to_string(), FP);
        assert!(instance_fingerprint(&format!("{FP}._http._tcp.local.")).is_none());
        assert!(instance_fingerprint("zz._mau._tcp.local.").is_none());
        assert!(instance_fingerprint("._mau._tcp.local.").is_none());
        assert!(instance_fingerprint(&"a".repeat(300)).is_none());
    }

    #[test]
    fn address_filter() {
        let ips: Vec<IpAddr> = [
            "127.0.0.1",
            "fe80::1",
            "fd00::2",
            "10.0.0.2",
            "0.0.0.0",
            "224.0.0.251",
            "10.0.0.2",
        ]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
        let a = usable_addresses(ips, 8080);
        let a: Vec<&str> = a.iter().map(|a| a.as_str()).collect();
        assert_eq!(a, ["10.0.0.2:8080", "[fd00::2]:8080"]);
        assert!(usable_addresses(["10.0.0.1".parse().unwrap()], 0).is_empty());
    }

    #[test]
    fn bounded_and_no_loss_below_the_bound() {
        let peers = LanPeers::default();
        for i in 0..(MAX_LAN_PEERS + 10) {
            let fp = Fingerprint::parse(&format!("{i:040x}")).unwrap();
            assert!(peers.insert(fp, vec![PeerAddress::parse("10.0.0.1:1").unwrap()]));
        }
        assert_eq!(peers.len(), MAX_LAN_PEERS);
        let last = Fingerprint::parse(&format!("{:040x}", MAX_LAN_PEERS + 9)).unwrap();
        assert!(peers.get(&last).is_some());
    }
}
