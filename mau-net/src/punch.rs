//! Hole punching: after a relayed connect, try a direct TCP connection by
//! simultaneous open; the decisions are [`mau_proto::punch`]'s.
//!
//! Over the relayed (end-to-end TLS) connection, the initiator (the peer
//! that connected through the relay) and the responder (the relay's
//! reservation holder) exchange the address each will dial from, two
//! ordinary GETs on the responder's server:
//!
//! - `GET /punch/exchange` with `Mau-Punch-Address: <initiator ip:port>`;
//!   the answer's `Mau-Punch-Address` is the responder's. The initiator
//!   times this round trip.
//! - `GET /punch/sync`: the responder dials at once; the initiator dials
//!   half a round trip after sending it.
//!
//! Each side dials from a fresh port on which it also listens (both
//! sockets share the port: `SO_REUSEADDR` + `SO_REUSEPORT`), so whichever
//! way the TCP connection comes up (a simultaneous open, or one side's SYN
//! reaching the other's listener), each side knows its role: the initiator
//! is the TLS client, the responder the TLS server, with the same pinned
//! fingerprints as on any connection. The dial-from address is the IP the
//! relay saw (`Mau-Observed-Address`) with that port: right behind a NAT
//! that keeps ports (endpoint-independent mapping), wrong behind one that
//! picks a new port per destination (symmetric), where the punch fails and
//! the peers stay relayed. A fresh port, not the listening one, keeps the
//! server's listener out of the race: a SYN it accepted would get a TLS
//! server on both ends.
//!
//! These routes are served only to callers that came through a relay.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hyper::StatusCode;
use mau_proto::punch::{Punch, PunchCommand, PunchConfig, PunchOutcome, Responder};
use mau_proto::{Contact, Fingerprint, PeerAddress, Time};
use tracing::{debug, info};

use crate::client::Client;
use crate::lock::lock;
use crate::metrics::Metrics;
use crate::router::{self, Caller, Reply};
use crate::runtime::{timeout, Runtime};
use crate::server::Incoming;

/// Path prefix of the punch routes.
pub(crate) const PREFIX: &str = "/punch/";
/// Header carrying the address a side dials from.
const ADDRESS: &str = "mau-punch-address";
/// Pending exchanges a responder keeps (one per caller).
const MAX_PENDING: usize = 32;
/// Pause between connect tries within a dial window. Short on purpose: a
/// router that answers an unexpected SYN with a reset (instead of dropping
/// it) leaves each side's mapping open only for a round trip per try, so
/// the two sides' tries must come often to overlap.
const RETRY: Duration = Duration::from_millis(1);

/// The initiator's side, held by the client: which peers a punch runs or
/// ran for, so each is punched at most once per node run.
#[derive(Clone)]
pub(crate) struct Initiator {
    config: PunchConfig,
    tried: Arc<Mutex<BTreeSet<Fingerprint>>>,
    metrics: Option<Arc<Metrics>>,
}

impl Initiator {
    /// Punches with `config`.
    pub(crate) fn new(config: PunchConfig, metrics: Option<Arc<Metrics>>) -> Self {
        Initiator {
            config,
            tried: Arc::new(Mutex::new(BTreeSet::new())),
            metrics,
        }
    }

    /// Starts a punch to `to` (just reached through a relay, which saw us
    /// at `observed`), unless one ran already.
    pub(crate) fn start<R: Runtime>(
        &self,
        client: Arc<Client<R>>,
        to: Contact<PeerAddress>,
        observed: IpAddr,
    ) {
        if !lock(&self.tried).insert(to.fingerprint) {
            return;
        }
        let this = self.clone();
        let rt = client.runtime().clone();
        rt.spawn(async move {
            let outcome = this.run(&client, &to, observed).await;
            let event = match outcome {
                PunchOutcome::Direct { .. } => "punch_direct",
                PunchOutcome::Relayed { .. } => "punch_relayed",
            };
            if let Some(m) = &this.metrics {
                m.relay_event(event);
            }
            info!(peer = %to.fingerprint, ?outcome, "hole punch finished");
        });
    }

    async fn run<R: Runtime>(
        &self,
        client: &Arc<Client<R>>,
        to: &Contact<PeerAddress>,
        observed: IpAddr,
    ) -> PunchOutcome {
        let rt = client.runtime().clone();
        let started = rt.now();
        let now = || Time::from_duration(rt.now().saturating_duration_since(started));
        let mut punch = Punch::start(self.config.clone(), now());
        let mut port: Option<(R::TcpListener, SocketAddr)> = None;
        let mut theirs: Option<SocketAddr> = None;
        let mut synced: Option<async_channel::Receiver<()>> = None;
        loop {
            while let Some(cmd) = punch.poll_command() {
                match cmd {
                    PunchCommand::Exchange => {
                        port = fresh_port::<R>(&rt, observed).await;
                        let Some((_, local)) = &port else {
                            punch.on_exchanged(now(), false);
                            continue;
                        };
                        let mine = SocketAddr::new(observed, local.port());
                        match exchange(client, to, mine).await {
                            Ok(addr) => {
                                theirs = addr;
                                punch.on_exchanged(now(), addr.is_some());
                            }
                            Err(e) => {
                                debug!(peer = %to.fingerprint, error = %e, "punch exchange failed");
                                punch.on_exchange_failed(now());
                            }
                        }
                    }
                    PunchCommand::Sync { .. } => {
                        let (c, t) = (client.clone(), to.clone());
                        let (done, rx) = async_channel::bounded(1);
                        synced = Some(rx);
                        rt.spawn(async move {
                            if let Err(e) = c.get(&t, "/punch/sync", 1024).await {
                                debug!(peer = %t.fingerprint, error = %e, "punch sync failed");
                            }
                            drop(done);
                        });
                    }
                    PunchCommand::Dial { window } => {
                        let ok = match (&port, theirs) {
                            (Some((listener, local)), Some(remote)) => {
                                let synced = synced.take();
                                self.dial(client, to, listener, *local, remote, window, synced)
                                    .await
                            }
                            _ => false,
                        };
                        punch.on_dialed(now(), ok);
                    }
                    PunchCommand::Direct | PunchCommand::StayRelayed => {}
                }
            }
            if let Some(outcome) = punch.outcome() {
                return outcome;
            }
            let Some(at) = punch.poll_timeout() else {
                return PunchOutcome::Relayed { attempts: 0 };
            };
            rt.sleep(at.since(now())).await;
            punch.handle_timeout(now());
        }
    }

    /// Dials `remote` from `local` (and accepts on it) for `window`; on a
    /// connection, TLS as the client, and the connection replaces the
    /// relayed ones in the pool.
    #[allow(clippy::too_many_arguments)]
    async fn dial<R: Runtime>(
        &self,
        client: &Arc<Client<R>>,
        to: &Contact<PeerAddress>,
        listener: &R::TcpListener,
        local: SocketAddr,
        remote: SocketAddr,
        window: Duration,
        synced: Option<async_channel::Receiver<()>>,
    ) -> bool {
        let rt = client.runtime();
        let Some(stream) = simultaneous_open::<R>(rt, listener, local, remote, window).await else {
            return false;
        };
        let alive = Arc::new(std::sync::atomic::AtomicBool::new(true));
        match client.over(stream, to, Some(alive.clone())).await {
            Ok(sender) => {
                // The sync's relayed connection goes back to the pool first,
                // so that adopting the direct one drops it.
                if let Some(rx) = synced {
                    let _ = timeout(rt, Duration::from_secs(2), rx.recv()).await;
                }
                info!(peer = %to.fingerprint, %remote, "hole punched: direct connection, relay released");
                client.adopt(
                    (to.fingerprint, to.address.clone()),
                    sender,
                    remote.ip(),
                    alive,
                );
                true
            }
            Err(e) => {
                debug!(peer = %to.fingerprint, error = %e, "punched connection failed TLS");
                false
            }
        }
    }
}

/// Sends our dial-from address; the peer's, or `None` if it cannot punch.
async fn exchange<R: Runtime>(
    client: &Client<R>,
    to: &Contact<PeerAddress>,
    mine: SocketAddr,
) -> Result<Option<SocketAddr>, crate::ClientError> {
    let header = hyper::header::HeaderName::from_static(ADDRESS);
    let mut answer = client
        .get_streaming(
            to,
            "/punch/exchange",
            &[(header, mine.to_string())],
            Duration::from_secs(5),
        )
        .await?;
    let theirs = answer
        .headers()
        .get(ADDRESS)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<SocketAddr>().ok());
    let ok = (200..300).contains(&answer.status());
    // Read to the end so the connection goes back to the pool for the sync.
    answer.collect(1024).await?;
    Ok(theirs.filter(|_| ok))
}

/// A listener on a fresh port of the family of `observed`, shared with dials.
async fn fresh_port<R: Runtime>(rt: &R, observed: IpAddr) -> Option<(R::TcpListener, SocketAddr)> {
    let any: IpAddr = match observed {
        IpAddr::V4(_) => [0u8; 4].into(),
        IpAddr::V6(_) => [0u16; 8].into(),
    };
    let listener = rt.bind_tcp_shared(SocketAddr::new(any, 0)).await.ok()?;
    let local = R::tcp_local_addr(&listener).ok()?;
    Some((listener, local))
}

/// The first TCP connection between `local` and `remote` within `window`:
/// our dial from `local` (retried while it is refused) or the other side's
/// reaching our listener on it.
async fn simultaneous_open<R: Runtime>(
    rt: &R,
    listener: &R::TcpListener,
    local: SocketAddr,
    remote: SocketAddr,
    window: Duration,
) -> Option<R::TcpStream> {
    let deadline = rt.now() + window;
    let dial = async {
        loop {
            let left = deadline.saturating_duration_since(rt.now());
            if left.is_zero() {
                return None;
            }
            match timeout(rt, left, rt.connect_tcp_from(local, remote)).await {
                Ok(Ok(s)) => return Some(s),
                Ok(Err(e)) => debug!(%local, %remote, error = %e, "punch dial failed; retrying"),
                Err(_) => return None,
            }
            rt.sleep(RETRY).await;
        }
    };
    let accept = async {
        loop {
            match R::accept_tcp(listener).await {
                Ok((s, from)) if from.ip() == remote.ip() => return Some(s),
                Ok(_) => continue,
                Err(_) => return futures_lite::future::pending().await,
            }
        }
    };
    timeout(rt, window, futures_lite::future::or(dial, accept))
        .await
        .ok()
        .flatten()
}

/// An exchange answered, waiting for the caller's sync.
struct Pending<L> {
    listener: L,
    local: SocketAddr,
    theirs: SocketAddr,
    since: Instant,
}

/// How long an exchange waits for its sync before its port is let go.
const PENDING_FOR: Duration = Duration::from_secs(30);

/// The responder's side, held by the server: dials for at most 32 callers
/// at once, each at most twice its attempts a minute.
pub(crate) struct PunchResponder<R: Runtime> {
    rt: R,
    config: Option<PunchConfig>,
    started: Instant,
    /// Our IP as the relay we hold a reservation on saw it.
    pub(crate) observed: Mutex<Option<IpAddr>>,
    responder: Arc<Mutex<Responder>>,
    pending: Mutex<BTreeMap<Fingerprint, Pending<R::TcpListener>>>,
    incoming: async_channel::Sender<Incoming>,
}

impl<R: Runtime> PunchResponder<R> {
    /// Answers punches with `config` (`None`: refuses them); punched
    /// connections go to the server through `incoming`.
    pub(crate) fn new(
        rt: R,
        config: Option<PunchConfig>,
        incoming: async_channel::Sender<Incoming>,
    ) -> Self {
        let per_peer = config.as_ref().map_or(0, |c| c.max_attempts * 2);
        PunchResponder {
            started: rt.now(),
            rt,
            config,
            observed: Mutex::new(None),
            responder: Arc::new(Mutex::new(Responder::new(
                per_peer,
                Duration::from_secs(60),
                32,
            ))),
            pending: Mutex::new(BTreeMap::new()),
            incoming,
        }
    }

    /// Answers `/punch/exchange` and `/punch/sync`.
    pub(crate) async fn handle<B>(&self, caller: &Caller, req: &hyper::Request<B>) -> Reply {
        let (Some(config), true) = (&self.config, caller.relayed) else {
            return router::error(StatusCode::NOT_IMPLEMENTED, "no hole punching here");
        };
        let fp = caller.fingerprint;
        match req.uri().path() {
            "/punch/exchange" => {
                let observed = *lock(&self.observed);
                let theirs = req
                    .headers()
                    .get(ADDRESS)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<SocketAddr>().ok());
                let (Some(observed), Some(theirs)) = (observed, theirs) else {
                    return router::error(StatusCode::NOT_IMPLEMENTED, "no address to punch from");
                };
                let Some((listener, local)) = fresh_port::<R>(&self.rt, observed).await else {
                    return router::error(StatusCode::SERVICE_UNAVAILABLE, "no port to punch from");
                };
                {
                    let now = self.rt.now();
                    let mut pending = lock(&self.pending);
                    // Exchanges never synced do not hold their slot for long.
                    pending.retain(|_, p| now.saturating_duration_since(p.since) < PENDING_FOR);
                    if pending.len() >= MAX_PENDING && !pending.contains_key(&fp) {
                        return router::error(StatusCode::SERVICE_UNAVAILABLE, "too many punches");
                    }
                    pending.insert(
                        fp,
                        Pending {
                            listener,
                            local,
                            theirs,
                            since: now,
                        },
                    );
                }
                let mine = SocketAddr::new(observed, local.port());
                let mut r = router::reply(StatusCode::OK, "text/plain", bytes::Bytes::new());
                if let Ok(v) = mine.to_string().parse() {
                    r.headers_mut().insert(ADDRESS, v);
                }
                r
            }
            "/punch/sync" => {
                let Some(p) = lock(&self.pending).remove(&fp) else {
                    return router::error(StatusCode::CONFLICT, "no exchange to sync");
                };
                let now =
                    Time::from_duration(self.rt.now().saturating_duration_since(self.started));
                if !lock(&self.responder).may_dial(now, fp) {
                    return router::error(StatusCode::TOO_MANY_REQUESTS, "too many punches");
                }
                let (rt, window, incoming) =
                    (self.rt.clone(), config.dial_window, self.incoming.clone());
                let responder = self.responder.clone();
                self.rt.spawn(async move {
                    let stream =
                        simultaneous_open::<R>(&rt, &p.listener, p.local, p.theirs, window).await;
                    if let Some(s) = stream {
                        debug!(peer = %fp, remote = %p.theirs, "punched connection: serving it");
                        let _ = incoming
                            .send(Incoming {
                                stream: Box::new(s),
                                remote: p.theirs,
                                relayed: false,
                            })
                            .await;
                    }
                    lock(&responder).dial_ended();
                });
                router::reply(StatusCode::OK, "text/plain", bytes::Bytes::new())
            }
            _ => router::error(StatusCode::NOT_FOUND, "no such route"),
        }
    }
}
