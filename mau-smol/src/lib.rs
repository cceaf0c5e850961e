//! # mau-smol: Mau on the smol runtime
//!
//! Only the glue: sockets, timers and spawning for [`mau_net::Runtime`].
//! Everything Mau does lives in `mau-net` (networking) and `mau-proto` (the
//! protocol), shared with the tokio adapter.
//!
//! ```no_run
//! use mau_net::{NodeConfig, RunningNode};
//! use mau_smol::SmolRuntime;
//! # fn identity(_: Option<&str>) -> Result<mau_identity::TlsIdentity, mau_identity::IdentityError> { unimplemented!() }
//! smol::block_on(async {
//!     let config = NodeConfig::new("127.0.0.1:0".parse().unwrap());
//!     let node = RunningNode::start(SmolRuntime, config, identity).await.unwrap();
//!     println!("listening on {}", node.local_addr());
//! });
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use smol::net::unix::{UnixListener, UnixStream};
use smol::net::{TcpListener, TcpStream, UdpSocket};

/// The smol runtime (its global executor and reactor).
#[derive(Clone, Copy, Debug, Default)]
pub struct SmolRuntime;

/// A smol timer that yields `()`.
pub struct Sleep(async_io::Timer);

impl Future for Sleep {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        Pin::new(&mut self.0).poll(cx).map(|_| ())
    }
}

/// Linux's and the BSDs' "operation now in progress" differ; socket2 does
/// not name it.
#[cfg(target_os = "linux")]
const EINPROGRESS: i32 = 115;
#[cfg(not(target_os = "linux"))]
const EINPROGRESS: i32 = 36;

/// A TCP socket bound to `addr` whose port listeners and other dials may share.
fn shared_socket(addr: SocketAddr) -> io::Result<socket2::Socket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    s.set_reuse_address(true)?;
    s.set_reuse_port(true)?;
    s.bind(&addr.into())?;
    Ok(s)
}

impl mau_net::Runtime for SmolRuntime {
    type TcpStream = TcpStream;
    type TcpListener = TcpListener;
    type UnixStream = UnixStream;
    type UnixListener = UnixListener;
    type UdpSocket = UdpSocket;
    type Sleep = Sleep;

    fn spawn<F>(&self, fut: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        smol::spawn(fut).detach();
    }

    fn sleep(&self, d: Duration) -> Sleep {
        Sleep(async_io::Timer::after(d))
    }

    async fn connect_tcp(&self, addr: SocketAddr) -> io::Result<TcpStream> {
        let s = TcpStream::connect(addr).await?;
        s.set_nodelay(true)?;
        Ok(s)
    }

    async fn bind_tcp_shared(&self, addr: SocketAddr) -> io::Result<TcpListener> {
        let s = shared_socket(addr)?;
        s.listen(128)?;
        s.set_nonblocking(true)?;
        TcpListener::try_from(std::net::TcpListener::from(s))
    }

    async fn connect_tcp_from(
        &self,
        local: SocketAddr,
        remote: SocketAddr,
    ) -> io::Result<TcpStream> {
        let s = shared_socket(local)?;
        s.set_nonblocking(true)?;
        // A non-blocking connect reports "in progress"; writability then
        // says it finished, and the socket's error whether it worked.
        if let Err(e) = s.connect(&remote.into()) {
            if e.raw_os_error() != Some(EINPROGRESS) {
                return Err(e);
            }
        }
        let s = async_io::Async::new(std::net::TcpStream::from(s))?;
        s.writable().await?;
        if let Some(e) = s.get_ref().take_error()? {
            return Err(e);
        }
        let s = TcpStream::from(s);
        s.peer_addr()?;
        s.set_nodelay(true)?;
        Ok(s)
    }

    async fn bind_tcp(&self, addr: SocketAddr) -> io::Result<TcpListener> {
        TcpListener::bind(addr).await
    }

    async fn accept_tcp(listener: &TcpListener) -> io::Result<(TcpStream, SocketAddr)> {
        let (s, a) = listener.accept().await?;
        s.set_nodelay(true)?;
        Ok((s, a))
    }

    fn tcp_local_addr(listener: &TcpListener) -> io::Result<SocketAddr> {
        listener.local_addr()
    }

    async fn connect_udp(&self, local: SocketAddr, peer: SocketAddr) -> io::Result<UdpSocket> {
        let s = UdpSocket::bind(local).await?;
        s.connect(peer).await?;
        Ok(s)
    }

    async fn send_udp(socket: &UdpSocket, buf: &[u8]) -> io::Result<usize> {
        socket.send(buf).await
    }

    async fn recv_udp(socket: &UdpSocket, buf: &mut [u8]) -> io::Result<usize> {
        socket.recv(buf).await
    }

    fn udp_local_addr(socket: &UdpSocket) -> io::Result<SocketAddr> {
        socket.local_addr()
    }

    async fn resolve(&self, host: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
        if let Ok(ip) = host.parse() {
            return Ok(vec![SocketAddr::new(ip, port)]);
        }
        smol::net::resolve((host, port)).await
    }

    fn bind_unix(&self, path: &Path) -> io::Result<UnixListener> {
        UnixListener::bind(path)
    }

    async fn accept_unix(listener: &UnixListener) -> io::Result<UnixStream> {
        listener.accept().await.map(|(s, _)| s)
    }

    async fn connect_unix(&self, path: &Path) -> io::Result<UnixStream> {
        UnixStream::connect(path).await
    }

    fn run_blocking<T, F>(&self, f: F) -> impl Future<Output = Option<T>> + Send
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        // smol's blocking pool, started now (not when first polled); a panic
        // is reported as `None`, not re-raised.
        smol::unblock(move || std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).ok())
    }
}
