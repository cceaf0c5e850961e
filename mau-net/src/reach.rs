//! Where peers see us and whether they can reach us.
//!
//! Every `/kad/*` answer of a mau-rs peer carries `Mau-Observed-Address:
//! IP:PORT`, where it saw the connection come from (a Go peer sends none and
//! ignores it when it calls us: it reads only the body). The driver feeds
//! those into [`mau_proto::AddressVotes`]: our public IP is the one peers of
//! a quorum of distinct networks agree on. A check asks a few peers of
//! distinct networks to dial us back (`GET /kad/dialback`: the peer opens a
//! fresh mutual-TLS connection to the address in our certificate and says
//! whether its ping got through); [`mau_proto::Reachability`] turns their
//! answers into a verdict. Both state machines are sans-IO and live here,
//! owned by the node, fed with the core's clock.
//!
//! The address is in our certificate (Go peers refuse a caller without
//! one); it is reissued when the address changes ([`crate::identity`]), and
//! a dial-back always tests the *direct* address (the request shows the
//! direct certificate even while a relayed address is advertised). What
//! the node does when nobody can reach it: it says so (log, `mau status`,
//! metrics) and, unless relays are configured, picks relays itself
//! (the address watch, `address.rs`); mau-rs peers never store an unreachable address
//! (their probe of it fails).

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mau_proto::wire::PING_PATH;
use mau_proto::{
    AddressVotes, Contact, Fingerprint, HostIp, PeerAddress, Reach as Verdict, ReachConfig,
    Reachability, Time, VoteConfig, VoterGroup,
};
use serde::{Deserialize, Serialize};
use tracing::{debug, info, warn};

use crate::client::{Client, ClientError};
use crate::core::Core;
use crate::identity::Identities;
use crate::lock::lock;
use crate::metrics::Metrics;
use crate::portmap::PortMapStatus;
use crate::runtime::Runtime;

/// The answer header naming where the peer saw the caller come from.
pub const OBSERVED_HEADER: &str = "mau-observed-address";
/// The dial-back route.
pub const DIALBACK_PATH: &str = "/kad/dialback";
/// Largest dial-back answer read.
const MAX_DIALBACK_BODY: usize = 4096;

/// How the node learns its address and reachability.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReachOptions {
    /// How observed addresses are voted on.
    pub votes: VoteConfig,
    /// How dial-back results are counted.
    pub verdict: ReachConfig,
    /// Peers (of distinct networks) asked to dial back in one check.
    pub peers_per_check: usize,
    /// Checks start this long after the node (once its table has peers).
    pub first_check: Duration,
    /// Between checks while the verdict is unknown.
    pub retry: Duration,
    /// Between checks once it is known.
    pub recheck: Duration,
}

impl Default for ReachOptions {
    fn default() -> Self {
        ReachOptions {
            votes: VoteConfig::default(),
            verdict: ReachConfig::default(),
            peers_per_check: 5,
            first_check: Duration::from_secs(10),
            retry: Duration::from_secs(60),
            recheck: Duration::from_secs(1800),
        }
    }
}

/// A port mapping on the gateway, however it was made.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mapping {
    /// How: `pcp`, `natpmp` or `upnp`.
    pub protocol: String,
    /// The gateway's external address and port.
    pub external: SocketAddr,
    /// Where it forwards to (our address on its LAN).
    pub internal: SocketAddr,
    /// Seconds until the lease ends unless renewed (it is renewed at half).
    pub lease_left_secs: u64,
}

impl Mapping {
    /// The IPv4 mapping `status` holds now, as reported.
    pub(crate) fn current(status: &PortMapStatus) -> Option<Mapping> {
        status.ipv4().map(|m| Mapping {
            protocol: m.protocol.to_string(),
            external: m.external,
            internal: m.internal,
            lease_left_secs: m
                .expires
                .duration_since(std::time::SystemTime::now())
                .map(|d| d.as_secs())
                .unwrap_or(0),
        })
    }
}

/// The verdict, as reported.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReachState {
    /// Not enough dial-backs yet.
    Unknown,
    /// Peers reached us.
    Reachable,
    /// Peers could not reach us.
    Unreachable,
}

impl ReachState {
    /// `unknown`, `reachable`, `unreachable`.
    pub fn as_str(self) -> &'static str {
        match self {
            ReachState::Unknown => "unknown",
            ReachState::Reachable => "reachable",
            ReachState::Unreachable => "unreachable",
        }
    }
}

/// What the node knows about its address and reachability.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReachStatus {
    /// The verdict.
    pub state: ReachState,
    /// The address the verdict is about (where peers dialed us).
    pub address: Option<PeerAddress>,
    /// The address in our certificate, which peers probe and dial back.
    pub advertised: PeerAddress,
    /// Our public IP, as peers of a quorum of networks saw it.
    pub public_ip: Option<IpAddr>,
    /// What peers saw us at, most networks first.
    pub observed: Vec<Observed>,
    /// Networks that reached us at `address`.
    pub reached_by: usize,
    /// Networks that could not reach us at `address`.
    pub unreached_by: usize,
    /// The port mapping held, if any.
    pub mapping: Option<Mapping>,
}

/// One address peers saw us at.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Observed {
    /// The IP.
    pub ip: IpAddr,
    /// Distinct networks (voter groups) whose peers saw it.
    pub networks: usize,
}

/// A dial-back answer (`200`; refusals are `403`, `429`, `503`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DialbackAnswer {
    /// Whether a fresh connection to `address` proved the caller's fingerprint.
    pub reached: bool,
    /// Where the caller was dialed.
    pub address: PeerAddress,
    /// Why not, when not reached.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The node's address votes and reachability verdict.
pub(crate) struct Reach {
    identities: Arc<Identities>,
    /// Asks the checking task for a check soon (the address changed).
    kick: (async_channel::Sender<()>, async_channel::Receiver<()>),
    /// Tells the address watch that the public IP changed (so the
    /// certificate is reissued before the next peer is called).
    ip_changed: (async_channel::Sender<()>, async_channel::Receiver<()>),
    options: ReachOptions,
    votes: Mutex<AddressVotes>,
    verdict: Mutex<Reachability<PeerAddress>>,
    mapping: Arc<PortMapStatus>,
    metrics: Option<Arc<Metrics>>,
}

impl Reach {
    pub fn new(
        identities: Arc<Identities>,
        options: ReachOptions,
        mapping: Arc<PortMapStatus>,
        metrics: Option<Arc<Metrics>>,
    ) -> Self {
        if let Some(m) = &metrics {
            m.set_reachability(ReachState::Unknown.as_str());
        }
        Reach {
            identities,
            kick: async_channel::bounded(1),
            ip_changed: async_channel::bounded(1),
            votes: Mutex::new(AddressVotes::new(options.votes)),
            verdict: Mutex::new(Reachability::new(options.verdict)),
            options,
            mapping,
            metrics,
        }
    }

    /// The mapping held now (the port mapper renews, changes or loses it).
    pub fn mapping(&self) -> Option<Mapping> {
        Mapping::current(&self.mapping)
    }

    /// `voter`, reached at `voter_ip`, answered with `header`.
    pub fn observed(&self, now: Time, voter: Fingerprint, voter_ip: IpAddr, header: &str) {
        let Ok(seen) = header.trim().parse::<SocketAddr>() else {
            debug!(peer = %voter, header, "unusable observed-address header");
            return;
        };
        let change = lock(&self.votes).on_observed(now, voter, voter_ip, seen.ip());
        if let Some(c) = change {
            let _ = self.ip_changed.0.try_send(());
            let direct = self.direct();
            match (c.to, direct.host_ip()) {
                (Some(ip), Some(adv)) if !adv.is_unspecified() && adv != ip => info!(
                    public_ip = %ip, advertised = %direct,
                    "peers of several networks see us at another IP than we advertise"
                ),
                (Some(ip), _) => {
                    info!(public_ip = %ip, "public address learned from peers of several networks")
                }
                (None, _) => info!("public address forgotten: its votes expired"),
            }
        }
    }

    /// `peer`, reached at `peer_ip`, dialed us back.
    fn dialback(&self, now: Time, peer: Fingerprint, peer_ip: IpAddr, answer: DialbackAnswer) {
        if !self.plausible_target(&answer.address) {
            debug!(%peer, address = %answer.address, "dial-back of an address we do not advertise: ignored");
            return;
        }
        let change =
            lock(&self.verdict).on_result(now, peer, peer_ip, answer.address, answer.reached);
        if let Some(v) = change {
            self.report(&v);
        }
    }

    /// The dialed address must be ours: our advertised port, and our
    /// advertised IP unless we advertise an unspecified one (then the peer
    /// dials the IP it sees us at).
    fn plausible_target(&self, dialed: &PeerAddress) -> bool {
        let direct = self.direct();
        if dialed.port() != direct.port() {
            return false;
        }
        match direct.host_ip() {
            Some(ip) if ip.is_unspecified() => dialed.host_ip().is_some(),
            Some(ip) => dialed.host_ip().map(|d| d.to_canonical()) == Some(ip.to_canonical()),
            None => dialed.host() == direct.host(),
        }
    }

    /// The direct address (what dial-backs test).
    fn direct(&self) -> PeerAddress {
        self.identities
            .direct()
            .unwrap_or_else(|| PeerAddress::from(SocketAddr::from(([0, 0, 0, 0], 0))))
    }

    /// Our public IP as the votes have it, if they agree.
    pub fn public_ip(&self) -> Option<IpAddr> {
        lock(&self.votes).current()
    }

    /// The verdict now (expired results dropped).
    pub fn verdict(&self, now: Time) -> Verdict<PeerAddress> {
        self.tick(now);
        lock(&self.verdict).state().clone()
    }

    /// Returns when the public IP the votes agree on changes.
    pub async fn public_ip_changed(&self) {
        let _ = self.ip_changed.1.recv().await;
    }

    /// Asks for a check soon (the direct address changed: the verdict about
    /// the old one says nothing about it).
    pub fn check_soon(&self) {
        let _ = self.kick.0.try_send(());
    }

    fn report(&self, v: &Verdict<PeerAddress>) {
        let state = state_of(v);
        if let Some(m) = &self.metrics {
            m.set_reachability(state.as_str());
        }
        match v {
            Verdict::Reachable(a) => {
                info!(address = %a, "reachable: peers of several networks dialed us back")
            }
            Verdict::Unreachable(a) => warn!(
                address = %a,
                "unreachable: peers of several networks could not dial us back; mau-rs peers \
                 will not store this address (Go peers may still hand it out). Forward the port, \
                 map it (--upnp) or pass --advertise with an address that reaches this node"
            ),
            Verdict::Unknown => info!("reachability unknown again: the dial-back results expired"),
        }
    }

    /// Expires old votes and results.
    fn tick(&self, now: Time) {
        lock(&self.votes).handle_timeout(now);
        let change = lock(&self.verdict).handle_timeout(now);
        if let Some(v) = change {
            self.report(&v);
        }
    }

    pub fn status(&self, now: Time) -> ReachStatus {
        self.tick(now);
        let (public_ip, observed) = {
            let v = lock(&self.votes);
            let tally = v.tally().into_iter();
            let observed = tally.map(|(ip, networks)| Observed { ip, networks });
            (v.current(), observed.collect())
        };
        let verdict = lock(&self.verdict);
        let address = match verdict.state() {
            Verdict::Reachable(a) | Verdict::Unreachable(a) => Some(a.clone()),
            Verdict::Unknown => None,
        };
        let (reached_by, unreached_by) = address
            .as_ref()
            .and_then(|a| {
                verdict
                    .counts()
                    .into_iter()
                    .find(|(b, _, _)| b == a)
                    .map(|(_, y, n)| (y, n))
            })
            .unwrap_or((0, 0));
        ReachStatus {
            state: state_of(verdict.state()),
            address,
            advertised: self
                .identities
                .advertised()
                .unwrap_or_else(|| self.direct()),
            public_ip,
            observed,
            reached_by,
            unreached_by,
            mapping: self.mapping(),
        }
    }
}

fn state_of(v: &Verdict<PeerAddress>) -> ReachState {
    match v {
        Verdict::Unknown => ReachState::Unknown,
        Verdict::Reachable(_) => ReachState::Reachable,
        Verdict::Unreachable(_) => ReachState::Unreachable,
    }
}

/// Up to `n` peers of the table, one per network, most recently heard first.
fn dialback_peers<R: Runtime>(
    core: &Core<R>,
    n: usize,
    scope: mau_proto::LimitScope,
) -> Vec<Contact<PeerAddress>> {
    let mut entries: Vec<_> = core.read(|node, _| {
        node.table()
            .entries()
            .map(|e| {
                (
                    e.last_seen(),
                    Contact::new(e.fingerprint, e.address.clone()),
                )
            })
            .collect()
    });
    entries.sort_by_key(|e| std::cmp::Reverse(e.0));
    let mut seen = std::collections::BTreeSet::new();
    entries
        .into_iter()
        .map(|(_, c)| c)
        // A peer reached through a relay would cost a relay stream per
        // check (and its pooled connection would hold one): ask the
        // directly reachable ones.
        .filter(|c| mau_proto::relay::relay_of(&c.address).is_none())
        .filter(|c| match c.address.host_ip() {
            Some(ip) => seen.insert(VoterGroup::of(ip, scope)),
            None => true,
        })
        .take(n)
        .collect()
}

/// Asks up to `peers_per_check` peers of distinct networks to dial us back
/// and feeds their answers; returns the status after it. A peer that does
/// not know the route (a Go peer: 404) or fails is no evidence either way.
pub(crate) async fn check<R: Runtime>(
    core: &Core<R>,
    client: &Client<R>,
    reach: &Reach,
) -> ReachStatus {
    let scope = reach.options.verdict.scope;
    let peers = dialback_peers(core, reach.options.peers_per_check, scope);
    let asked = peers.len();
    let mut answered = 0;
    for peer in peers {
        let result = client
            .get_fresh_direct(&peer, DIALBACK_PATH, MAX_DIALBACK_BODY)
            .await;
        let outcome = match &result {
            Ok(_) => "ok",
            Err(ClientError::Status { status: 404, .. }) => "unsupported",
            Err(ClientError::Status { .. }) => "refused",
            Err(_) => "failed",
        };
        if let Some(m) = &core.metrics {
            m.rpc_sent("dialback", outcome);
        }
        let answer = match result {
            Ok(a) => a,
            Err(e) => {
                debug!(peer = %peer.fingerprint, error = %e, "dial-back request failed");
                continue;
            }
        };
        let now = core.now();
        if let Some(h) = &answer.observed {
            reach.observed(now, peer.fingerprint, answer.remote, h);
        }
        match serde_json::from_slice::<DialbackAnswer>(&answer.body) {
            Ok(d) => {
                debug!(peer = %peer.fingerprint, reached = d.reached, address = %d.address,
                       error = d.error.as_deref().unwrap_or(""), "dial-back answer");
                answered += 1;
                reach.dialback(now, peer.fingerprint, answer.remote, d);
            }
            Err(e) => debug!(peer = %peer.fingerprint, error = %e, "malformed dial-back answer"),
        }
    }
    let status = reach.status(core.now());
    debug!(
        asked,
        answered,
        state = status.state.as_str(),
        "reachability check done"
    );
    status
}

/// Checks now and then until shutdown: first after `first_check` once the
/// table has peers, then every `retry` while unknown, every `recheck` after.
pub(crate) async fn run<R: Runtime>(core: Arc<Core<R>>, client: Arc<Client<R>>, reach: Arc<Reach>) {
    let work = async {
        let mut wait = reach.options.first_check;
        loop {
            let kicked = async {
                let _ = reach.kick.1.recv().await;
                // Let the new certificate reach peers first.
                core.rt.sleep(Duration::from_secs(1)).await;
            };
            futures_lite::future::or(core.rt.sleep(wait), kicked).await;
            let has_peers = core.read(|node, _| !node.table().is_empty());
            if !has_peers {
                wait = reach.options.retry;
                continue;
            }
            let status = check(&core, &client, &reach).await;
            wait = match status.state {
                ReachState::Unknown => reach.options.retry,
                _ => reach.options.recheck,
            };
        }
    };
    futures_lite::future::or(work, core.shutdown.wait()).await;
}

/// Serves `/kad/dialback`: dials the caller back, on a fresh connection, at
/// the address in its certificate, and only if that address is the IP the
/// request came from (so the route cannot aim us at anyone else). Bounded
/// by a per-source rate and a cap on dial-backs at once.
pub(crate) struct DialbackServer<R: Runtime> {
    rt: R,
    client: Arc<Client<R>>,
    per_source: Mutex<mau_proto::ratelimit::KeyedLimiter<IpAddr>>,
    source_scope: mau_proto::LimitScope,
    in_flight: std::sync::atomic::AtomicUsize,
    max_in_flight: usize,
}

/// Dial-backs at once, over all callers.
const MAX_DIALBACKS: usize = 4;
/// How long one dial-back may take (less than a caller's RPC timeout).
const DIALBACK_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a dial-back was not made.
pub(crate) enum Refusal {
    /// The certificate names no address, a DNS name, or another IP.
    NotYours(String),
    /// The source asked too often.
    Rate,
    /// Too many dial-backs run.
    Busy,
}

impl<R: Runtime> DialbackServer<R> {
    /// The client that dials back (the node's own).
    pub fn client(&self) -> &Arc<Client<R>> {
        &self.client
    }

    pub fn new(rt: R, client: Arc<Client<R>>) -> Self {
        let budgets = mau_proto::Budgets::default();
        DialbackServer {
            rt,
            client,
            // One a second and a burst of two per source IP: a node checks
            // a few times an hour.
            per_source: Mutex::new(mau_proto::ratelimit::KeyedLimiter::new(
                mau_proto::ratelimit::Rate {
                    per_second: 1,
                    burst: 2,
                },
                1024,
            )),
            source_scope: budgets.probe_source_scope,
            in_flight: std::sync::atomic::AtomicUsize::new(0),
            max_in_flight: MAX_DIALBACKS,
        }
    }

    /// Dials `caller` back at `claimed` (its certificate's address, an
    /// unspecified host already replaced by `source`).
    pub async fn dial(
        &self,
        now: Time,
        caller: Fingerprint,
        claimed: Option<&PeerAddress>,
        source: IpAddr,
    ) -> Result<DialbackAnswer, Refusal> {
        use std::sync::atomic::Ordering;
        let Some(target) = claimed else {
            return Err(Refusal::NotYours(
                "your certificate names no address".into(),
            ));
        };
        match target.host_ip() {
            Some(ip) if ip.to_canonical() == source.to_canonical() => {}
            _ => {
                return Err(Refusal::NotYours(format!(
                    "dial-back only to the IP you connect from ({source}), not {target}"
                )))
            }
        }
        if self.source_scope.counts(source) && !lock(&self.per_source).try_take(&source, now) {
            return Err(Refusal::Rate);
        }
        if self.in_flight.fetch_add(1, Ordering::AcqRel) >= self.max_in_flight {
            self.in_flight.fetch_sub(1, Ordering::AcqRel);
            return Err(Refusal::Busy);
        }
        // Released however this ends (the caller may hang up meanwhile).
        let _slot = Slot(&self.in_flight);
        let to = Contact::new(caller, target.clone());
        let result = crate::runtime::timeout(
            &self.rt,
            DIALBACK_TIMEOUT,
            self.client.get_fresh(&to, PING_PATH, 1024),
        )
        .await;
        let error = match result {
            Ok(Ok(_)) => None,
            Ok(Err(e)) => Some(e.to_string()),
            Err(_) => Some(format!("no answer within {DIALBACK_TIMEOUT:?}")),
        };
        Ok(DialbackAnswer {
            reached: error.is_none(),
            address: target.clone(),
            error,
        })
    }
}

/// One dial-back slot, given back when dropped.
struct Slot<'a>(&'a std::sync::atomic::AtomicUsize);

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reach(advertised: &str) -> Reach {
        let a = PeerAddress::parse(advertised).expect("address");
        let build: crate::identity::IdentityBuilder = Box::new(|a| {
            mau_identity::TlsIdentity::from_ed25519_seed(
                &[3; 32],
                1_700_000_000,
                mau_identity::KeyVersion::V4,
                a,
            )
        });
        let ids = Identities::reissuing(build, a).expect("identity");
        Reach::new(Arc::new(ids), ReachOptions::default(), Arc::default(), None)
    }

    fn addr(s: &str) -> PeerAddress {
        PeerAddress::parse(s).expect("address")
    }

    #[test]
    fn only_dialbacks_of_our_own_address_count() {
        let r = reach("81.2.69.142:8080");
        assert!(r.plausible_target(&addr("81.2.69.142:8080")));
        assert!(!r.plausible_target(&addr("81.2.69.142:8081")));
        assert!(!r.plausible_target(&addr("81.2.69.143:8080")));
        // Unspecified: any IP the peer saw us at, on our port.
        let r = reach("0.0.0.0:8080");
        assert!(r.plausible_target(&addr("81.2.69.142:8080")));
        assert!(!r.plausible_target(&addr("81.2.69.142:9")));
        assert!(!r.plausible_target(&addr("example.org:8080")));
        let r = reach("example.org:8080");
        assert!(r.plausible_target(&addr("example.org:8080")));
        assert!(!r.plausible_target(&addr("81.2.69.142:8080")));
    }

    #[test]
    fn headers_vote_and_dialbacks_decide() {
        let r = reach("0.0.0.0:8080");
        let fp = |i: u8| Fingerprint::from_bytes(&[i; 20]).expect("fingerprint");
        for i in 1..=3u8 {
            let voter = IpAddr::from([i, 1, 1, 1]);
            r.observed(Time(0), fp(i), voter, "81.2.69.142:40000");
            r.observed(Time(0), fp(i + 10), voter, "not an address");
        }
        let s = r.status(Time(1));
        assert_eq!(s.public_ip, Some(IpAddr::from([81, 2, 69, 142])));
        assert_eq!(s.state, ReachState::Unknown);
        for i in 1..=3u8 {
            let answer = DialbackAnswer {
                reached: false,
                address: addr("81.2.69.142:8080"),
                error: Some("refused".into()),
            };
            r.dialback(Time(2), fp(i), IpAddr::from([i, 1, 1, 1]), answer);
        }
        let s = r.status(Time(3));
        assert_eq!(s.state, ReachState::Unreachable);
        assert_eq!(s.address, Some(addr("81.2.69.142:8080")));
        assert_eq!((s.reached_by, s.unreached_by), (0, 3));
        // Everything expires: unknown again, nothing believed.
        let later = Time(3) + Duration::from_secs(7200);
        let s = r.status(later);
        assert_eq!((s.state, s.public_ip), (ReachState::Unknown, None));
    }
}
