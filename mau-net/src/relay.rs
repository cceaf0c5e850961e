//! The relay: a reachable node that opted in ([`crate::NodeConfig::relay`])
//! splices streams between peers that cannot reach each other.
//!
//! Three HTTP/1.1 upgrade routes on the node's own mutual-TLS listener
//! (`Connection: upgrade`, `Upgrade: mau-relay`), so the relay knows every
//! party by its proven fingerprint and its limits count identities, not
//! claims:
//!
//! - `GET /relay/reserve`: the caller (a node nobody can dial) keeps this
//!   connection open as its *reservation*. After `101` it carries lines:
//!   the relay sends `CONNECT <id> <caller fingerprint>` when someone wants
//!   the holder and `RENEWED <seconds>` after the holder's `RENEW`.
//! - `GET /relay/connect/<fingerprint>`: a peer asks for a stream to a
//!   holder. The relay tells the holder, which answers with
//! - `GET /relay/accept/<id>`: the holder's new connection for that stream.
//!   Both get `101`, and from then on the relay copies bytes between the two
//!   upgraded streams. The peers run mutual TLS end to end inside them: the
//!   relay sees only ciphertext.
//!
//! Every `101` names the address the relay saw the caller connect from
//! (`Mau-Observed-Address`), which the peers use to hole-punch. Refusals are
//! `503` (`404` for a peer without a reservation) with a JSON message and a
//! `Mau-Relay-Refusal` header naming the limit; the limits are in
//! [`mau_proto::relay::RelayLimits`], the bookkeeping in
//! [`mau_proto::relay::RelayBook`].

use std::collections::BTreeMap;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_io::{AsyncRead, AsyncWrite};
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use hyper::upgrade::OnUpgrade;
use hyper::StatusCode;
use mau_proto::relay::{Refusal, RelayBook, RelayLimits};
use mau_proto::{Fingerprint, Time};
use tracing::{debug, info};

use crate::core::Core;
use crate::lock::lock;
use crate::metrics::Metrics;
use crate::router::{self, Caller, ConnectionHold, Reply};
use crate::runtime::Runtime;
use crate::upgraded::UpgradedIo;

/// The `Upgrade` protocol name of the relay routes.
pub(crate) const PROTOCOL: &str = "mau-relay";
/// Header of a `101`: the caller's address as the relay saw it.
pub(crate) const OBSERVED: &str = "mau-observed-address";
/// Header of a reservation's `101`: its lifetime in seconds.
pub(crate) const TTL: &str = "mau-relay-ttl";
/// Header of a reservation's `101`: the relay's limits, `name=value;...`.
pub(crate) const LIMITS: &str = "mau-relay-limits";
/// Header of a refusal: which limit.
pub(crate) const REFUSAL: &str = "mau-relay-refusal";
/// Longest control line read.
pub(crate) const MAX_LINE: usize = 128;

/// What a reservation's task is told.
enum Notice {
    Connect { id: u64, caller: Fingerprint },
}

/// A stream waiting for its target's accept.
struct Waiting {
    target: Fingerprint,
    accepted: async_channel::Sender<(OnUpgrade, Option<ConnectionHold>)>,
}

/// A relay's state: the book, the holders' control channels, the streams
/// waiting for their target.
pub(crate) struct RelayServer<R: Runtime> {
    rt: R,
    /// The node's core: a holder's renewal tells it the holder is alive.
    core: Arc<Core<R>>,
    started: Instant,
    book: Mutex<RelayBook>,
    holders: Mutex<BTreeMap<Fingerprint, (u64, async_channel::Sender<Notice>)>>,
    waiting: Mutex<BTreeMap<u64, Waiting>>,
    next_id: AtomicU64,
    metrics: Option<Arc<Metrics>>,
}

impl<R: Runtime> RelayServer<R> {
    /// A relay with `limits`, for the node of `core`.
    pub(crate) fn new(
        rt: R,
        core: Arc<Core<R>>,
        limits: RelayLimits,
        metrics: Option<Arc<Metrics>>,
    ) -> Arc<Self> {
        Arc::new(RelayServer {
            started: rt.now(),
            rt,
            core,
            book: Mutex::new(RelayBook::new(limits)),
            holders: Mutex::new(BTreeMap::new()),
            waiting: Mutex::new(BTreeMap::new()),
            next_id: AtomicU64::new(1),
            metrics,
        })
    }

    fn now(&self) -> Time {
        Time::from_duration(self.rt.now().saturating_duration_since(self.started))
    }

    fn limits(&self) -> RelayLimits {
        lock(&self.book).limits().clone()
    }

    /// Reservations held and streams relayed now.
    pub(crate) fn load(&self) -> (usize, usize) {
        let book = lock(&self.book);
        (book.reservations(), book.streams())
    }

    fn event(&self, e: &'static str) {
        if let Some(m) = &self.metrics {
            m.relay_event(e);
            let (reservations, streams) = self.load();
            m.set_relay_load(reservations, streams);
        }
    }

    fn refuse(&self, caller: &Caller, refusal: Refusal) -> Reply {
        debug!(peer = %caller.fingerprint, reason = refusal.reason(), "relay refused");
        if let Some(m) = &self.metrics {
            m.rejected(refusal.reason());
        }
        let status = match refusal {
            Refusal::NoReservation => StatusCode::NOT_FOUND,
            Refusal::SelfRelay => StatusCode::BAD_REQUEST,
            _ => StatusCode::SERVICE_UNAVAILABLE,
        };
        let mut r = router::error(status, &refusal.to_string());
        r.headers_mut().insert(
            REFUSAL,
            hyper::header::HeaderValue::from_static(refusal.reason()),
        );
        r
    }

    /// Answers a `/relay/...` request.
    pub(crate) async fn handle<B>(
        self: &Arc<Self>,
        caller: &Caller,
        mut req: hyper::Request<B>,
    ) -> Reply {
        let upgrade_asked = req
            .headers()
            .get(hyper::header::UPGRADE)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(PROTOCOL.as_bytes()));
        if !upgrade_asked {
            return router::error(StatusCode::BAD_REQUEST, "expected Upgrade: mau-relay");
        }
        let hold = req.extensions_mut().remove::<ConnectionHold>();
        let on = hyper::upgrade::on(&mut req);
        let path = req.uri().path().to_owned();
        let rest = path.strip_prefix(router::UPGRADE_PREFIX).unwrap_or("");
        if rest == "reserve" {
            return self.reserve(caller, on, hold);
        }
        if let Some(target) = rest.strip_prefix("connect/") {
            return match Fingerprint::parse(target) {
                Ok(t) => self.connect(caller, t, on, hold).await,
                Err(e) => router::error(StatusCode::BAD_REQUEST, &e.to_string()),
            };
        }
        if let Some(id) = rest.strip_prefix("accept/") {
            return match id.parse::<u64>() {
                Ok(id) => self.accept(caller, id, on, hold),
                Err(_) => router::error(StatusCode::BAD_REQUEST, "bad stream id"),
            };
        }
        router::error(StatusCode::NOT_FOUND, "no such route")
    }

    fn switching(caller: &Caller) -> Reply {
        let mut r = router::reply(StatusCode::SWITCHING_PROTOCOLS, "", bytes::Bytes::new());
        let h = r.headers_mut();
        h.remove(hyper::header::CONTENT_TYPE);
        h.insert(
            hyper::header::CONNECTION,
            hyper::header::HeaderValue::from_static("upgrade"),
        );
        h.insert(
            hyper::header::UPGRADE,
            hyper::header::HeaderValue::from_static(PROTOCOL),
        );
        if let Ok(v) = caller.remote.to_string().parse() {
            h.insert(OBSERVED, v);
        }
        r
    }

    fn reserve(
        self: &Arc<Self>,
        caller: &Caller,
        on: OnUpgrade,
        hold: Option<ConnectionHold>,
    ) -> Reply {
        let fp = caller.fingerprint;
        let now = self.now();
        let expires = match lock(&self.book).reserve(now, fp, caller.source) {
            Ok(e) => e,
            Err(r) => return self.refuse(caller, r),
        };
        let (tx, rx) = async_channel::bounded(16);
        let generation = self.next_id.fetch_add(1, Ordering::Relaxed);
        // A new reservation of the same holder replaces the old one (its
        // task sees the channel close and ends).
        lock(&self.holders).insert(fp, (generation, tx));
        self.event("reservation_granted");
        info!(peer = %fp, "relay: reservation granted");
        self.core
            .with_node(|node, now| node.on_reservation_held(now, fp));
        let ttl = expires.since(now);
        let limits = self.limits();
        let this = self.clone();
        self.rt.spawn(async move {
            if let Ok(io) = on.await {
                this.control(fp, UpgradedIo(io), rx).await;
            }
            drop(hold);
            let mut holders = lock(&this.holders);
            if holders.get(&fp).is_some_and(|(g, _)| *g == generation) {
                holders.remove(&fp);
                lock(&this.book).release(&fp);
                drop(holders);
                this.event("reservation_ended");
                debug!(peer = %fp, "relay: reservation ended");
            }
        });
        let mut r = Self::switching(caller);
        let h = r.headers_mut();
        h.insert(TTL, ttl.as_secs().into());
        let text = format!(
            "reservations={};streams_per_peer={};stream_bytes={};stream_seconds={}",
            limits.max_reservations,
            limits.max_streams_per_peer,
            limits.max_stream_bytes,
            limits.max_stream_duration.as_secs()
        );
        if let Ok(v) = text.parse() {
            h.insert(LIMITS, v);
        }
        r
    }

    /// The reservation's control stream: renewals in, connect notices out.
    /// Ends when the holder closes it, sends garbage, lets it expire or is
    /// replaced.
    async fn control(
        &self,
        fp: Fingerprint,
        io: UpgradedIo,
        notices: async_channel::Receiver<Notice>,
    ) {
        enum Step {
            Line(io::Result<Option<String>>),
            Notice(Option<Notice>),
            Expired,
        }
        let (mut reader, mut writer) = futures_lite::io::split(io);
        let mut reader = futures_lite::io::BufReader::new(&mut reader);
        loop {
            let left = {
                let now = self.now();
                let book = lock(&self.book);
                if !book.is_reserved(now, &fp) {
                    break;
                }
                book.limits().reservation_ttl
            };
            let step = futures_lite::future::or(
                futures_lite::future::or(
                    async { Step::Line(read_line(&mut reader).await) },
                    async { Step::Notice(notices.recv().await.ok()) },
                ),
                async {
                    self.rt.sleep(left).await;
                    Step::Expired
                },
            )
            .await;
            let out = match step {
                Step::Line(Ok(Some(line))) if line == "RENEW" => {
                    let renewed = lock(&self.book).reserve(self.now(), fp, [0, 0, 0, 0].into());
                    match renewed {
                        Ok(_) => {
                            self.core
                                .with_node(|node, now| node.on_reservation_held(now, fp));
                            format!("RENEWED {}\n", left.as_secs())
                        }
                        Err(r) => format!("REFUSED {}\n", r.reason()),
                    }
                }
                Step::Line(_) | Step::Notice(None) => break,
                Step::Notice(Some(Notice::Connect { id, caller })) => {
                    format!("CONNECT {id} {caller}\n")
                }
                Step::Expired => continue,
            };
            if writer.write_all(out.as_bytes()).await.is_err() || writer.flush().await.is_err() {
                break;
            }
        }
    }

    async fn connect(
        self: &Arc<Self>,
        caller: &Caller,
        target: Fingerprint,
        on: OnUpgrade,
        hold: Option<ConnectionHold>,
    ) -> Reply {
        let from = caller.fingerprint;
        if let Err(r) = lock(&self.book).open_stream(self.now(), from, target) {
            return self.refuse(caller, r);
        }
        // From here the stream is counted: every way out closes it.
        let close = Closer {
            relay: self.clone(),
            pair: (from, target),
        };
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = async_channel::bounded(1);
        lock(&self.waiting).insert(
            id,
            Waiting {
                target,
                accepted: tx,
            },
        );
        let notified = lock(&self.holders)
            .get(&target)
            .is_some_and(|(_, n)| n.try_send(Notice::Connect { id, caller: from }).is_ok());
        let limits = self.limits();
        let accepted = if notified {
            crate::runtime::timeout(&self.rt, limits.accept_timeout, rx.recv())
                .await
                .ok()
                .and_then(|r| r.ok())
        } else {
            None
        };
        lock(&self.waiting).remove(&id);
        let Some((their_on, their_hold)) = accepted else {
            debug!(peer = %from, %target, "relay: the target did not take the stream");
            return router::error(StatusCode::GATEWAY_TIMEOUT, "the peer did not answer");
        };
        self.event("stream_opened");
        // Opened and ended are logged in pairs (one line each), so an
        // operator or a test can tell which streams are still carried.
        debug!(peer = %from, %target, "relay: stream opened");
        let this = self.clone();
        self.rt.spawn(async move {
            let (a, b) = futures_lite::future::zip(on, their_on).await;
            let (bytes, why) = if let (Ok(a), Ok(b)) = (a, b) {
                let (bytes, why) = splice(
                    &this.rt,
                    UpgradedIo(a),
                    UpgradedIo(b),
                    limits.max_stream_bytes,
                    limits.max_stream_duration,
                )
                .await;
                if let Some(m) = &this.metrics {
                    m.relayed_bytes(bytes);
                }
                this.event(why);
                (bytes, why)
            } else {
                (0, "upgrade_failed")
            };
            debug!(peer = %from, %target, bytes, end = why, "relay: stream ended");
            drop((hold, their_hold, close));
        });
        Self::switching(caller)
    }

    fn accept(
        &self,
        caller: &Caller,
        id: u64,
        on: OnUpgrade,
        hold: Option<ConnectionHold>,
    ) -> Reply {
        let waiting = lock(&self.waiting).remove(&id);
        match waiting {
            Some(w) if w.target == caller.fingerprint => {
                if w.accepted.try_send((on, hold)).is_err() {
                    return router::error(StatusCode::GONE, "the caller is gone");
                }
                Self::switching(caller)
            }
            Some(w) => {
                // Not the target's: put it back for the right one.
                lock(&self.waiting).insert(id, w);
                router::error(StatusCode::NOT_FOUND, "no such stream")
            }
            None => router::error(StatusCode::NOT_FOUND, "no such stream"),
        }
    }
}

/// Closes a stream in the book when dropped.
struct Closer<R: Runtime> {
    relay: Arc<RelayServer<R>>,
    pair: (Fingerprint, Fingerprint),
}

impl<R: Runtime> Drop for Closer<R> {
    fn drop(&mut self) {
        lock(&self.relay.book).close_stream(self.pair.0, self.pair.1);
        self.relay.event("stream_released");
    }
}

/// Reads one `\n`-terminated line of at most [`MAX_LINE`] bytes (`None` at
/// the end of the stream; an error for a longer line).
pub(crate) async fn read_line<S: AsyncRead + Unpin>(r: &mut S) -> io::Result<Option<String>> {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        if r.read(&mut byte).await? == 0 {
            return Ok(None);
        }
        if byte[0] == b'\n' {
            return String::from_utf8(line)
                .map(Some)
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "not UTF-8"));
        }
        if line.len() >= MAX_LINE {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "line too long"));
        }
        line.push(byte[0]);
    }
}

/// Copies bytes both ways between `a` and `b` until one side ends, the two
/// directions together carried `max_bytes`, or `max_duration` passed.
/// Returns the bytes carried and why it ended (a metrics event name).
pub(crate) async fn splice<R: Runtime, A, B>(
    rt: &R,
    a: A,
    b: B,
    max_bytes: u64,
    max_duration: Duration,
) -> (u64, &'static str)
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let carried = AtomicU64::new(0);
    let (ar, aw) = futures_lite::io::split(a);
    let (br, bw) = futures_lite::io::split(b);
    let why = futures_lite::future::or(
        futures_lite::future::or(
            copy(ar, bw, &carried, max_bytes),
            copy(br, aw, &carried, max_bytes),
        ),
        async {
            rt.sleep(max_duration).await;
            "stream_cut_duration"
        },
    )
    .await;
    (carried.load(Ordering::Relaxed), why)
}

async fn copy<S: AsyncRead + Unpin, D: AsyncWrite + Unpin>(
    mut from: S,
    mut to: D,
    carried: &AtomicU64,
    max: u64,
) -> &'static str {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => {
                let _ = to.close().await;
                return "stream_closed";
            }
            Ok(n) => n,
        };
        if carried.fetch_add(n as u64, Ordering::Relaxed) + n as u64 > max {
            return "stream_cut_bytes";
        }
        if to.write_all(&buf[..n]).await.is_err() || to.flush().await.is_err() {
            return "stream_closed";
        }
    }
}
