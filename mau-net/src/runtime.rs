//! What an async runtime must supply: sockets, timers and spawning.
//!
//! UDP is here for one small job, talking PCP and NAT-PMP to the gateway
//! (`portmap`): a connected socket whose reads race a timer and the node's
//! shutdown, which a blocking socket on the blocking pool could only do by
//! polling.
//!
//! Everything else (TLS, HTTP, the node driver, resolvers) is written once in
//! this crate against this trait; `mau-smol` and `mau-tokio` implement it in a
//! few dozen lines each.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use futures_io::{AsyncRead, AsyncWrite};

/// A byte stream (TCP or Unix socket) in futures-io terms.
pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Stream for T {}

/// The runtime glue. Cheap to clone (a handle).
pub trait Runtime: Clone + Send + Sync + 'static {
    /// A connected TCP stream.
    type TcpStream: Stream;
    /// A bound TCP listener.
    type TcpListener: Send + Sync + 'static;
    /// A connected Unix-domain stream (the local control channel).
    type UnixStream: Stream;
    /// A bound Unix-domain listener.
    type UnixListener: Send + Sync + 'static;
    /// A connected UDP socket.
    type UdpSocket: Send + Sync + 'static;
    /// A timer future; `Sync` because hyper's timer requires it.
    type Sleep: Future<Output = ()> + Send + Sync + 'static;

    /// Runs `fut` in the background; it stops itself on shutdown.
    fn spawn<F>(&self, fut: F)
    where
        F: Future<Output = ()> + Send + 'static;

    /// Completes after `d`.
    fn sleep(&self, d: Duration) -> Self::Sleep;

    /// The runtime's clock: the wall clock's monotonic `Instant::now()`,
    /// except in a simulated runtime, whose virtual time it returns. Every
    /// deadline mau-net computes (the core's clock, hyper's timer, the
    /// server's connection timeouts) reads it, so that they agree with
    /// [`Runtime::sleep`].
    fn now(&self) -> Instant {
        Instant::now()
    }

    /// The runtime's calendar clock: `SystemTime::now()`, except in a
    /// simulated runtime (a fixed date plus its virtual time). The server's
    /// `Date` header reads it, so that answers replay byte for byte.
    fn system_time(&self) -> SystemTime {
        SystemTime::now()
    }

    /// A seed for randomness mau-net draws itself (a sync's retry jitter):
    /// a new random one each call, except in a simulated runtime, which
    /// draws it from the run's seed so that the run replays.
    fn seed(&self) -> u64 {
        os_seed()
    }

    /// Opens a TCP connection.
    fn connect_tcp(
        &self,
        addr: SocketAddr,
    ) -> impl Future<Output = io::Result<Self::TcpStream>> + Send;

    /// Binds a TCP listener.
    fn bind_tcp(
        &self,
        addr: SocketAddr,
    ) -> impl Future<Output = io::Result<Self::TcpListener>> + Send;

    /// Binds a TCP listener that shares its port (`SO_REUSEADDR` and
    /// `SO_REUSEPORT`) with [`Runtime::connect_tcp_from`] sockets: a hole
    /// punch listens and dials from one port.
    fn bind_tcp_shared(
        &self,
        addr: SocketAddr,
    ) -> impl Future<Output = io::Result<Self::TcpListener>> + Send;

    /// Opens a TCP connection from `local` (bound with `SO_REUSEADDR` and
    /// `SO_REUSEPORT`, so that a listener and other dials may share the
    /// port): both sides of a hole punch dial from a known port at once.
    fn connect_tcp_from(
        &self,
        local: SocketAddr,
        remote: SocketAddr,
    ) -> impl Future<Output = io::Result<Self::TcpStream>> + Send;

    /// Accepts one TCP connection.
    fn accept_tcp(
        listener: &Self::TcpListener,
    ) -> impl Future<Output = io::Result<(Self::TcpStream, SocketAddr)>> + Send;

    /// The address a TCP listener is bound to.
    fn tcp_local_addr(listener: &Self::TcpListener) -> io::Result<SocketAddr>;

    /// Binds a UDP socket to `local` and connects it to `peer`: it only
    /// receives from `peer`, and an ICMP error from it (port unreachable)
    /// makes the next receive fail.
    fn connect_udp(
        &self,
        local: SocketAddr,
        peer: SocketAddr,
    ) -> impl Future<Output = io::Result<Self::UdpSocket>> + Send;

    /// Sends one datagram to the connected peer.
    fn send_udp(
        socket: &Self::UdpSocket,
        buf: &[u8],
    ) -> impl Future<Output = io::Result<usize>> + Send;

    /// Receives one datagram from the connected peer.
    fn recv_udp(
        socket: &Self::UdpSocket,
        buf: &mut [u8],
    ) -> impl Future<Output = io::Result<usize>> + Send;

    /// The address a UDP socket is bound to.
    fn udp_local_addr(socket: &Self::UdpSocket) -> io::Result<SocketAddr>;

    /// Resolves `host` (a name or an IP literal) to socket addresses.
    fn resolve(
        &self,
        host: &str,
        port: u16,
    ) -> impl Future<Output = io::Result<Vec<SocketAddr>>> + Send;

    /// Binds a Unix-domain listener at `path`.
    fn bind_unix(&self, path: &Path) -> io::Result<Self::UnixListener>;

    /// Accepts one Unix-domain connection.
    fn accept_unix(
        listener: &Self::UnixListener,
    ) -> impl Future<Output = io::Result<Self::UnixStream>> + Send;

    /// Connects to a Unix-domain socket.
    fn connect_unix(
        &self,
        path: &Path,
    ) -> impl Future<Output = io::Result<Self::UnixStream>> + Send;

    /// Runs blocking `f` (file I/O, a blocking library call) on the
    /// runtime's blocking pool, never on the executor, and yields its result
    /// (`None` if it panicked). `f` starts at once, before the returned
    /// future is first polled: a caller may start a blocking consumer and
    /// feed it before awaiting its result (unless
    /// [`Runtime::blocking_is_concurrent`] says otherwise).
    fn run_blocking<T, F>(&self, f: F) -> impl Future<Output = Option<T>> + Send
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static;

    /// Whether [`Runtime::run_blocking`] work runs beside its caller, on
    /// other threads (true: smol, tokio), or inline, to its end, before
    /// `run_blocking` returns (false: a single-threaded deterministic
    /// simulation). Only in the first case may the caller hand blocking
    /// work a channel to feed afterwards; the sync then streams a big file
    /// to a writer and a verifier on two threads, otherwise it writes each
    /// batch in a blocking task of its own and verifies the file from the
    /// disk afterwards (`sync::download`).
    fn blocking_is_concurrent(&self) -> bool {
        true
    }
}

/// A random `u64` from the standard library's per-instance random hasher
/// keys (no RNG dependency for a jitter).
fn os_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish()
}

/// The deadline passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("timed out")]
pub struct Elapsed;

/// Runs `fut` for at most `d`.
pub async fn timeout<R: Runtime, F: Future>(
    rt: &R,
    d: Duration,
    fut: F,
) -> Result<F::Output, Elapsed> {
    let sleep = rt.sleep(d);
    futures_lite::future::or(async { Ok(fut.await) }, async {
        sleep.await;
        Err(Elapsed)
    })
    .await
}

/// hyper's timer on top of any [`Runtime`] (header read timeouts, keep-alive).
#[derive(Clone, Debug)]
pub(crate) struct HyperTimer<R>(pub R);

struct HyperSleep<S>(Pin<Box<S>>);

impl<S: Future<Output = ()>> Future for HyperSleep<S> {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        self.0.as_mut().poll(cx)
    }
}

impl<S: Future<Output = ()> + Send + Sync + 'static> hyper::rt::Sleep for HyperSleep<S> {}

impl<R: Runtime> hyper::rt::Timer for HyperTimer<R> {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn hyper::rt::Sleep>> {
        Box::pin(HyperSleep(Box::pin(self.0.sleep(duration))))
    }

    fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn hyper::rt::Sleep>> {
        self.sleep(deadline.saturating_duration_since(self.0.now()))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn os_seeds_differ() {
        let seeds: std::collections::BTreeSet<u64> = (0..20).map(|_| super::os_seed()).collect();
        assert!(seeds.len() > 1, "no randomness");
    }
}
