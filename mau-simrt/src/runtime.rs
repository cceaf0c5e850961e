//! [`mau_net::Runtime`] over the simulation: a handle per host.

use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use futures_io::{AsyncRead, AsyncWrite};

use crate::net::{self, SimListener, SimStream};
use crate::sim::Shared;
use crate::time::Sleep;

/// The calendar date virtual time 0 maps to (2026-01-01T00:00:00Z): fixed,
/// so that `Date` headers replay.
const SIM_EPOCH_SECS: u64 = 1_767_225_600;

/// The runtime of one simulated host: what its tasks spawn belongs to the
/// host (and dies with it in [`crate::Sim::crash`]); its sockets use the
/// host's IP.
#[derive(Clone)]
pub struct SimRuntime {
    pub(crate) shared: Arc<Shared>,
    pub(crate) host: IpAddr,
}

impl std::fmt::Debug for SimRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimRuntime")
            .field("host", &self.host)
            .finish()
    }
}

impl SimRuntime {
    /// The host's IP.
    pub fn host(&self) -> IpAddr {
        self.host
    }
}

/// A socket the simulation does not have (Unix-domain: no simulated node
/// needs its control socket); this type has no values, so its methods can
/// never be called.
#[derive(Debug)]
pub enum NotSimulated {}

impl AsyncRead for NotSimulated {
    fn poll_read(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        _: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        match *self {}
    }
}

impl AsyncWrite for NotSimulated {
    fn poll_write(self: Pin<&mut Self>, _: &mut Context<'_>, _: &[u8]) -> Poll<io::Result<usize>> {
        match *self {}
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        match *self {}
    }
    fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        match *self {}
    }
}

fn no_unix() -> io::Error {
    not_simulated("Unix-domain sockets")
}

/// What the simulation does not model: a clear error, which every caller
/// treats as "not available" (port mapping, hole punching).
fn not_simulated(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::Unsupported,
        format!("no {what} in the simulation"),
    )
}

impl mau_net::Runtime for SimRuntime {
    type TcpStream = SimStream;
    type TcpListener = SimListener;
    type UnixStream = NotSimulated;
    type UnixListener = NotSimulated;
    type UdpSocket = NotSimulated;
    type Sleep = Sleep;

    fn spawn<F>(&self, fut: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.shared.spawn(Some(self.host), fut);
    }

    fn sleep(&self, d: Duration) -> Sleep {
        Sleep::new(self.shared.clone(), d)
    }

    fn now(&self) -> Instant {
        self.shared.base + self.shared.state().now
    }

    fn system_time(&self) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(SIM_EPOCH_SECS) + self.shared.state().now
    }

    /// Drawn from the simulation's generator: a sync's jitter replays.
    fn seed(&self) -> u64 {
        self.shared.state().rng.u64(..)
    }

    async fn connect_tcp(&self, addr: SocketAddr) -> io::Result<SimStream> {
        net::connect(&self.shared, self.host, addr).await
    }

    async fn bind_tcp(&self, addr: SocketAddr) -> io::Result<SimListener> {
        net::bind(&self.shared, self.host, addr)
    }

    async fn accept_tcp(listener: &SimListener) -> io::Result<(SimStream, SocketAddr)> {
        net::accept(listener).await
    }

    fn tcp_local_addr(listener: &SimListener) -> io::Result<SocketAddr> {
        Ok(listener.local_addr())
    }

    // Ports are not shared in the simulation: a shared listener is a plain
    // one, and dialing from a given port (a hole punch) is not modelled.
    async fn bind_tcp_shared(&self, addr: SocketAddr) -> io::Result<SimListener> {
        net::bind(&self.shared, self.host, addr)
    }

    async fn connect_tcp_from(&self, _: SocketAddr, _: SocketAddr) -> io::Result<SimStream> {
        Err(not_simulated("dials from a chosen port (hole punching)"))
    }

    async fn connect_udp(&self, _: SocketAddr, _: SocketAddr) -> io::Result<NotSimulated> {
        Err(not_simulated("UDP (port mapping)"))
    }

    async fn send_udp(socket: &NotSimulated, _: &[u8]) -> io::Result<usize> {
        match *socket {}
    }

    async fn recv_udp(socket: &NotSimulated, _: &mut [u8]) -> io::Result<usize> {
        match *socket {}
    }

    fn udp_local_addr(socket: &NotSimulated) -> io::Result<SocketAddr> {
        match *socket {}
    }

    async fn resolve(&self, host: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
        match host.parse::<IpAddr>() {
            Ok(ip) => Ok(vec![SocketAddr::new(ip, port)]),
            Err(_) => Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("{host}: no DNS in the simulation (use IP addresses)"),
            )),
        }
    }

    fn bind_unix(&self, _: &Path) -> io::Result<NotSimulated> {
        Err(no_unix())
    }

    async fn accept_unix(listener: &NotSimulated) -> io::Result<NotSimulated> {
        match *listener {}
    }

    async fn connect_unix(&self, _: &Path) -> io::Result<NotSimulated> {
        Err(no_unix())
    }

    fn run_blocking<T, F>(&self, f: F) -> impl Future<Output = Option<T>> + Send
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        // Inline, at once: deterministic, and the simulation has one thread.
        let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).ok();
        std::future::ready(out)
    }

    // Blocking work runs inline (above): a download is written batch by
    // batch and verified afterwards, not fed to blocking consumers.
    fn blocking_is_concurrent(&self) -> bool {
        false
    }
}
