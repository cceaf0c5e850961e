//! The HTTPS server: accept, TLS handshake with a required client certificate,
//! HTTP/1.1 keep-alive, then each request goes to the [`crate::router`].
//!
//! Every limit of [`crate::config::Limits`] that concerns serving is applied
//! here, in this order: connections per source IP (before TLS; sources
//! outside `Limits::per_ip_scope` are exempt), all
//! connections, the handshake timeout, then per connection the header and
//! idle timeouts, and per request the peer's rate and requests in flight.
//!
//! A peer over its rate or in-flight limit is slowed down, not answered at
//! full speed: its request waits (up to [`THROTTLE_WAIT`]) for its token or
//! a free slot, and a refusal (429, 503) comes only after that wait. While a
//! request waits, hyper reads nothing more from its connection, so a peer
//! pipelining thousands of requests is held back by its own TCP window and
//! costs the node a sleeping timer per connection, while other peers are
//! served at once. Each request also yields to the executor before it is
//! answered, so one connection's pipelined requests never run as a batch.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_io::{AsyncRead, AsyncWrite};
use futures_rustls::TlsAcceptor;
use http_body::{Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::StatusCode;
use mau_proto::ratelimit::{KeyedLimiter, Rate, WhenFull};
use mau_proto::{Fingerprint, PeerAddress};
use smol_hyper::rt::FuturesIo;
use tracing::{debug, warn};

use crate::config::Limits;
use crate::limits::{ip_key, per_ip_key, ConnClock, Counter, Expiry, Held, LogThrottle};
use crate::lock::lock;
use crate::router::{self, Body, Caller, Reply};
use crate::runtime::{timeout, HyperTimer, Runtime};
use crate::serve_context::ServeContext;

/// How often one warning may be logged per limit and source.
const WARN_EVERY: Duration = Duration::from_secs(10);
/// Sources remembered by the warning throttle.
const WARN_TRACKED: usize = 1024;
/// The longest a request over its peer's rate or in-flight limit is held
/// before it is refused; within it, it is served when a token or slot comes.
const THROTTLE_WAIT: Duration = Duration::from_secs(1);
/// How often a request waiting for an in-flight slot looks again.
const SLOT_POLL: Duration = Duration::from_millis(25);

/// Which limit bit, for the warning throttle.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Bit {
    PerIp,
    Connections,
    Handshake,
    Header,
    Send,
    Rate,
    Slowed,
    InFlight,
}

/// Who the warning is about.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Source {
    Ip(IpAddr),
    Peer(Fingerprint),
    Node,
}

impl Bit {
    /// The `reason` label of `mau_rejections_total`.
    fn reason(self) -> &'static str {
        match self {
            Bit::PerIp => "per_ip_connections",
            Bit::Connections => "connections",
            Bit::Handshake => "handshake_timeout",
            Bit::Header => "header_timeout",
            Bit::Send => "send_timeout",
            Bit::Rate => "rate",
            // Held back (not refused) until its next token.
            Bit::Slowed => "rate_slowed",
            Bit::InFlight => "in_flight",
        }
    }
}

/// The server's limit bookkeeping, shared by its connections.
struct Guards {
    metrics: Option<Arc<crate::metrics::Metrics>>,
    per_ip: Counter<IpAddr>,
    in_flight: Counter<Fingerprint>,
    rates: Mutex<KeyedLimiter<Fingerprint>>,
    warnings: Mutex<LogThrottle<(Bit, Source)>>,
    /// The runtime's clock ([`Runtime::now`]): the throttle's windows are in
    /// virtual time under simulation, so its log lines replay.
    now: Box<dyn Fn() -> Instant + Send + Sync>,
}

impl Guards {
    fn new<R: Runtime>(
        limits: &Limits,
        metrics: Option<Arc<crate::metrics::Metrics>>,
        rt: &R,
    ) -> Self {
        let rt = rt.clone();
        Guards {
            metrics,
            per_ip: Counter::new(),
            in_flight: Counter::new(),
            rates: Mutex::new(KeyedLimiter::with_policy(
                Rate {
                    per_second: limits.peer_rate,
                    burst: limits.peer_burst,
                },
                limits.rate_tracked_peers,
                WhenFull::ForgetIdlest,
            )),
            warnings: Mutex::new(LogThrottle::new(WARN_EVERY, WARN_TRACKED)),
            now: Box::new(move || rt.now()),
        }
    }

    /// Counts the refusal (metrics) and runs `log(suppressed)` unless a line
    /// for this limit and source was logged within [`WARN_EVERY`]: an attack
    /// cannot flood the log.
    fn warn(&self, bit: Bit, source: Source, log: impl FnOnce(u64)) {
        if let Some(m) = &self.metrics {
            m.rejected(bit.reason());
        }
        let allowed = lock(&self.warnings).allow(&(bit, source), (self.now)());
        if let Some(suppressed) = allowed {
            log(suppressed);
        }
    }
}

/// A connection that did not come through our listener: a peer's stream
/// through a relay we hold a reservation on, or a hole-punched one. It is
/// served like any other (TLS, the same limits but the per-IP one).
pub(crate) struct Incoming {
    /// The stream, before TLS.
    pub stream: Box<dyn crate::runtime::Stream>,
    /// The relay's address, or the punched peer's.
    pub remote: SocketAddr,
    /// True if it runs through a relay.
    pub relayed: bool,
}

/// Accepts connections until shutdown, from the listener and from `incoming`.
pub(crate) async fn serve<R: Runtime>(
    shared: Arc<ServeContext<R>>,
    listener: R::TcpListener,
    incoming: async_channel::Receiver<Incoming>,
) {
    enum Next<S> {
        Accepted(io::Result<(S, SocketAddr)>),
        Other(Incoming),
        Stop,
    }
    let limits = &shared.config.limits;
    let guards = Arc::new(Guards::new(
        limits,
        shared.config.metrics.clone(),
        &shared.rt,
    ));
    loop {
        let next = futures_lite::future::or(
            futures_lite::future::or(
                async { Next::Accepted(R::accept_tcp(&listener).await) },
                async {
                    match incoming.recv().await {
                        Ok(i) => Next::Other(i),
                        // Nobody can send any more: wait for the listener alone.
                        Err(_) => futures_lite::future::pending().await,
                    }
                },
            ),
            async {
                shared.shutdown.wait().await;
                Next::Stop
            },
        )
        .await;
        let accepted = match next {
            Next::Stop => break,
            Next::Other(i) => {
                let permit = shared.connections.acquire_arc().await;
                let (s, g) = (shared.clone(), guards.clone());
                shared.rt.spawn(async move {
                    connection(s, g, i.stream, i.remote, i.relayed).await;
                    drop(permit);
                });
                continue;
            }
            Next::Accepted(a) => a,
        };
        match accepted {
            Ok((stream, peer)) => {
                // Exempt sources (loopback by default) hold no per-IP count;
                // the connection limit below still applies to them.
                let ip_held = match per_ip_key(peer.ip(), limits.per_ip_scope) {
                    None => None,
                    Some(ip) => {
                        let max = limits.max_connections_per_ip;
                        let Some(held) = guards.per_ip.try_acquire(&ip, max) else {
                            guards.warn(Bit::PerIp, Source::Ip(ip), |suppressed| {
                                warn!(%ip, limit = max, suppressed, "too many connections from one IP: closing new ones");
                            });
                            drop(stream);
                            continue;
                        };
                        Some(held)
                    }
                };
                // At the connection limit, stop accepting: the kernel backlog
                // waits. No single IP can get here with more than its share.
                let permit = match shared.connections.try_acquire_arc() {
                    Some(p) => p,
                    None => {
                        guards.warn(Bit::Connections, Source::Node, |suppressed| {
                            warn!(
                                limit = limits.max_connections,
                                suppressed, "connection limit reached: new connections wait"
                            );
                        });
                        shared.connections.acquire_arc().await
                    }
                };
                let (s, g) = (shared.clone(), guards.clone());
                shared.rt.spawn(async move {
                    connection(s, g, stream, peer, false).await;
                    drop((permit, ip_held));
                });
            }
            Err(e) => {
                warn!(error = %e, "accept failed");
                // Out of descriptors and the like: back off instead of spinning.
                shared.rt.sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn connection<R: Runtime, S: crate::runtime::Stream>(
    shared: Arc<ServeContext<R>>,
    guards: Arc<Guards>,
    stream: S,
    peer: SocketAddr,
    relayed: bool,
) {
    let limits = &shared.config.limits;
    let acceptor = TlsAcceptor::from(shared.server_tls.clone());
    let tls = match timeout(
        &shared.rt,
        limits.handshake_timeout,
        acceptor.accept(stream),
    )
    .await
    {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            debug!(%peer, error = %e, "TLS handshake refused");
            return;
        }
        Err(_) => {
            let ip = ip_key(peer.ip());
            guards.warn(Bit::Handshake, Source::Ip(ip), |suppressed| {
                warn!(%ip, timeout = ?limits.handshake_timeout, suppressed, "TLS handshake timed out: connection closed");
            });
            return;
        }
    };
    let identity = match mau_identity::peer_identity(tls.get_ref().1) {
        Ok(id) => id,
        Err(e) => {
            debug!(%peer, error = %e, "peer without a valid identity");
            return;
        }
    };
    let address = identity
        .address
        .as_deref()
        .and_then(|a| PeerAddress::parse(a).ok())
        .map(|a| router::listening_address(a, peer.ip()));
    let fingerprint = identity.fingerprint;
    debug!(peer = %fingerprint, remote = %peer, advertised = address.as_ref().map_or("none", |a| a.as_str()), "peer connected");
    let caller = Arc::new(Caller {
        fingerprint,
        address,
        source: peer.ip(),
        remote: peer,
        relayed,
    });
    let clock = Arc::new(Mutex::new(ConnState {
        clock: ConnClock::new(shared.rt.now()),
        now: {
            let rt = shared.rt.clone();
            Box::new(move || rt.now())
        },
        reader: None,
    }));
    let io = Watched {
        inner: tls,
        rt: shared.rt.clone(),
        clock: clock.clone(),
        header: limits.header_timeout,
        idle: limits.idle_timeout,
        send: limits.send_timeout,
        timer: None,
        send_timer: None,
    };
    let (s, g, c) = (shared.clone(), guards.clone(), clock.clone());
    let service = hyper::service::service_fn(move |req| {
        let (s, g, c, caller) = (s.clone(), g.clone(), clock_start(&c), caller.clone());
        async move {
            let mut reply = admit(&s, &g, &caller, c, req).await;
            stamp_date(&mut reply, s.rt.system_time());
            Ok::<_, Infallible>(reply)
        }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(HyperTimer(shared.rt.clone()))
        // `stamp_date` writes the `Date` header from the runtime's
        // calendar (hyper's own reads the system clock).
        .auto_date_header(false)
        // Our own clock (in `Watched`) times heads and idle connections:
        // hyper's header timeout would also close idle keep-alive
        // connections after the (short) header timeout.
        .header_read_timeout(None)
        .max_buf_size(limits.max_header_bytes.max(8192))
        .keep_alive(true)
        .serve_connection(FuturesIo::new(io), service)
        // The relay's routes take the connection over (101).
        .with_upgrades();
    let result = futures_lite::future::or(conn, async {
        shared.shutdown.wait().await;
        Ok(())
    })
    .await;
    let expired = clock_expiry(&clock);
    match (result, expired) {
        (_, Some(Expiry::Header)) => {
            guards.warn(Bit::Header, Source::Ip(ip_key(peer.ip())), |suppressed| {
                warn!(peer = %fingerprint, remote = %peer, timeout = ?limits.header_timeout, suppressed, "request head not received in time: connection closed");
            });
        }
        (_, Some(Expiry::Idle)) => {
            debug!(peer = %fingerprint, remote = %peer, "idle connection closed")
        }
        (_, Some(Expiry::Send)) => {
            guards.warn(Bit::Send, Source::Ip(ip_key(peer.ip())), |suppressed| {
                warn!(peer = %fingerprint, remote = %peer, timeout = ?limits.send_timeout, suppressed, "peer takes no bytes of its answer: connection closed");
            });
        }
        (Err(e), None) => debug!(%peer, error = %e, "connection ended with an error"),
        (Ok(()), None) => {}
    }
}

/// Sets an answer's `Date` header (friend sync reads it as the peer's clock).
fn stamp_date(reply: &mut Reply, now: std::time::SystemTime) {
    if let Ok(v) = hyper::header::HeaderValue::from_str(&httpdate::fmt_http_date(now)) {
        reply.headers_mut().insert(hyper::header::DATE, v);
    }
}

/// One connection's clock, shared by its stream (which enforces it) and its
/// service (which marks requests).
struct ConnState {
    clock: ConnClock,
    /// The task waiting to read: woken when an answer is done, so that its
    /// read arms the idle deadline (hyper does not read again by itself).
    reader: Option<Waker>,
    /// The runtime's clock ([`Runtime::now`]), for what holds no runtime.
    now: Box<dyn Fn() -> Instant + Send + Sync>,
}

type SharedState = Arc<Mutex<ConnState>>;

/// Marks the connection busy (a request head arrived) and hands back what
/// marks it idle again when the answer is done.
fn clock_start(state: &SharedState) -> Busy {
    lock(state).clock.request_started();
    Busy(state.clone())
}

fn clock_expiry(state: &SharedState) -> Option<Expiry> {
    lock(state).clock.expired
}

/// The connection is answering a request until this is dropped.
struct Busy(SharedState);

impl Drop for Busy {
    fn drop(&mut self) {
        let reader = {
            let mut state = lock(&self.0);
            let now = (state.now)();
            state.clock.request_finished(now);
            state.reader.take()
        };
        if let Some(w) = reader {
            w.wake();
        }
    }
}

/// Applies the per-peer limits, then routes. What must last as long as the
/// answer (the in-flight count, the connection's busy mark) rides along in
/// its body, so a streamed file counts until its last byte.
async fn admit<R: Runtime>(
    shared: &ServeContext<R>,
    guards: &Guards,
    caller: &Caller,
    busy: Busy,
    mut req: hyper::Request<hyper::body::Incoming>,
) -> Reply {
    let limits = &shared.config.limits;
    // A route that takes the connection over keeps it marked busy for as
    // long as it holds it: the header and idle deadlines are for HTTP.
    let busy = Arc::new(busy);
    if req.uri().path().starts_with(router::UPGRADE_PREFIX) {
        req.extensions_mut()
            .insert(router::ConnectionHold(busy.clone()));
    }
    let fp = caller.fingerprint;
    // One request per turn: without this, a connection with many pipelined
    // requests answers a batch of them (hyper's loop) before anyone else runs.
    futures_lite::future::yield_now().await;
    // A friend's sync makes a request per file, as fast as it can: content
    // routes are bounded by the in-flight limit below, not the rate.
    let rate = if req.uri().path().starts_with("/p2p/") {
        Ok(Duration::ZERO)
    } else {
        let now = shared.core.now();
        let mut rates = lock(&guards.rates);
        let max_wait = u64::try_from(THROTTLE_WAIT.as_millis()).unwrap_or(u64::MAX);
        rates
            .reserve(&fp, now, max_wait)
            .map(Duration::from_millis)
            .map_err(Duration::from_millis)
    };
    match rate {
        Ok(wait) if wait.is_zero() => {}
        Ok(wait) => {
            guards.warn(Bit::Slowed, Source::Peer(fp), |suppressed| {
                warn!(peer = %fp, rate = limits.peer_rate, burst = limits.peer_burst, suppressed, "peer over its request rate: slowed down");
            });
            shared.rt.sleep(wait).await;
        }
        Err(wait) => {
            guards.warn(Bit::Rate, Source::Peer(fp), |suppressed| {
                warn!(peer = %fp, rate = limits.peer_rate, burst = limits.peer_burst, suppressed, "peer over its request rate: 429");
            });
            // Held as long as any request may wait, so a refused peer is no
            // faster than a slowed one; then told how much longer to wait.
            shared.rt.sleep(THROTTLE_WAIT).await;
            let secs = wait
                .saturating_sub(THROTTLE_WAIT)
                .as_secs_f64()
                .ceil()
                .max(1.0);
            return hold(
                refusal(StatusCode::TOO_MANY_REQUESTS, "too many requests", secs),
                (busy, None),
            );
        }
    }
    let max = limits.max_in_flight_per_peer;
    let waited = shared.rt.now();
    let in_flight = loop {
        if let Some(held) = guards.in_flight.try_acquire(&fp, max) {
            break held;
        }
        if shared.rt.now().saturating_duration_since(waited) >= THROTTLE_WAIT {
            guards.warn(Bit::InFlight, Source::Peer(fp), |suppressed| {
                warn!(peer = %fp, limit = max, suppressed, "peer has too many requests in flight: 503");
            });
            return hold(
                refusal(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "too many requests in flight",
                    1.0,
                ),
                (busy, None),
            );
        }
        shared.rt.sleep(SLOT_POLL).await;
    };
    let reply = router::handle(shared, caller, req).await;
    hold(reply, (busy, Some(in_flight)))
}

fn refusal(status: StatusCode, message: &str, retry_after_secs: f64) -> Reply {
    let mut r = router::error(status, message);
    r.headers_mut()
        .insert(hyper::header::RETRY_AFTER, (retry_after_secs as u64).into());
    r
}

/// The answer, holding `guard` until its body is done or dropped.
fn hold(reply: Reply, guard: (Arc<Busy>, Option<Held<Fingerprint>>)) -> Reply {
    reply.map(|body| {
        Guarded {
            body,
            _guard: guard,
        }
        .boxed()
    })
}

struct Guarded<G> {
    body: Body,
    _guard: G,
}

impl<G: Send + Sync + Unpin + 'static> http_body::Body for Guarded<G> {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// The TLS stream, with the connection's header and idle deadlines: a read
/// waiting past the deadline fails with `TimedOut`, which ends the
/// connection; so does a write (or flush) that waits, without a byte
/// taken, for the send timeout.
struct Watched<S, R: Runtime> {
    inner: S,
    rt: R,
    clock: SharedState,
    header: Duration,
    idle: Duration,
    send: Duration,
    /// The armed deadline and its timer.
    timer: Option<(Instant, Pin<Box<R::Sleep>>)>,
    /// The send timeout's timer, armed while a write waits.
    send_timer: Option<Pin<Box<R::Sleep>>>,
}

impl<S, R: Runtime> Watched<S, R> {
    /// `step`, a write or a flush, under the send timeout: a wait starts
    /// (or goes on with) the timer, anything else stops it.
    fn sending<T>(
        &mut self,
        cx: &mut Context<'_>,
        step: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        if step.is_ready() {
            self.send_timer = None;
            return step;
        }
        let (rt, send) = (&self.rt, self.send);
        let timer = self
            .send_timer
            .get_or_insert_with(|| Box::pin(rt.sleep(send)));
        if timer.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        lock(&self.clock).clock.expired = Some(Expiry::Send);
        Poll::Ready(Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "the peer takes no bytes of its answer",
        )))
    }
}

// Nothing in it is ever pinned in place (the timer is boxed), whatever `R` is.
impl<S: Unpin, R: Runtime> Unpin for Watched<S, R> {}

impl<S: AsyncRead + Unpin, R: Runtime> AsyncRead for Watched<S, R> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let read = Pin::new(&mut this.inner).poll_read(cx, buf);
        let mut state = lock(&this.clock);
        match read {
            Poll::Ready(Ok(n)) if n > 0 => {
                state.clock.on_read(this.rt.now());
                return Poll::Ready(Ok(n));
            }
            Poll::Ready(r) => return Poll::Ready(r),
            Poll::Pending => {}
        }
        let Some((at, why)) = state.clock.deadline(this.header, this.idle) else {
            this.timer = None;
            state.reader = Some(cx.waker().clone());
            return Poll::Pending;
        };
        if this.timer.as_ref().map(|t| t.0) != Some(at) {
            let left = at.saturating_duration_since(this.rt.now());
            this.timer = Some((at, Box::pin(this.rt.sleep(left))));
        }
        let fired = match &mut this.timer {
            Some((_, sleep)) => sleep.as_mut().poll(cx).is_ready(),
            None => false,
        };
        if fired {
            state.clock.expired = Some(why);
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                match why {
                    Expiry::Header => "request head not received in time",
                    Expiry::Idle => "idle connection",
                    // (Never a read's deadline.)
                    Expiry::Send => "the peer takes no bytes",
                },
            )));
        }
        Poll::Pending
    }
}

impl<S: AsyncWrite + Unpin, R: Runtime> AsyncWrite for Watched<S, R> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let step = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.sending(cx, step)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let step = Pin::new(&mut this.inner).poll_flush(cx);
        this.sending(cx, step)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let step = Pin::new(&mut this.inner).poll_close(cx);
        this.sending(cx, step)
    }
}
