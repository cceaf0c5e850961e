//! # mau-tokio: Mau on the tokio runtime
//!
//! Only the glue: sockets, timers and spawning for [`mau_net::Runtime`].
//! Everything Mau does lives in `mau-net` (networking) and `mau-proto` (the
//! protocol), shared with the smol adapter.
//!
//! ```no_run
//! use mau_net::{NodeConfig, RunningNode};
//! use mau_tokio::TokioRuntime;
//! # fn identity(_: Option<&str>) -> Result<mau_identity::TlsIdentity, mau_identity::IdentityError> { unimplemented!() }
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let config = NodeConfig::new("127.0.0.1:0".parse().unwrap());
//! let node = RunningNode::start(TokioRuntime::current(), config, identity).await.unwrap();
//! println!("listening on {}", node.local_addr());
//! # }
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream, UdpSocket, UnixListener, UnixStream};
use tokio::runtime::Handle;
use tokio_util::compat::{Compat, TokioAsyncReadCompatExt};

/// A handle to a tokio runtime.
#[derive(Clone, Debug)]
pub struct TokioRuntime(Handle);

impl TokioRuntime {
    /// The runtime this is called from (panics outside a tokio runtime, like `tokio::spawn`).
    pub fn current() -> Self {
        TokioRuntime(Handle::current())
    }

    /// A given runtime.
    pub fn from_handle(handle: Handle) -> Self {
        TokioRuntime(handle)
    }

    /// Runs socket set-up on the tokio runtime, so a node can be started from
    /// any executor (tokio registers sockets with the reactor of the context).
    async fn in_runtime<T: Send + 'static>(
        &self,
        f: impl Future<Output = io::Result<T>> + Send + 'static,
    ) -> io::Result<T> {
        self.0.spawn(f).await.map_err(io::Error::other)?
    }
}

/// A TCP socket bound to `addr` whose port listeners and other dials may share.
fn shared_socket(addr: SocketAddr) -> io::Result<tokio::net::TcpSocket> {
    let s = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    s.set_reuseaddr(true)?;
    s.set_reuseport(true)?;
    s.bind(addr)?;
    Ok(s)
}

impl mau_net::Runtime for TokioRuntime {
    type TcpStream = Compat<TcpStream>;
    type TcpListener = TcpListener;
    type UnixStream = Compat<UnixStream>;
    type UnixListener = UnixListener;
    type UdpSocket = UdpSocket;
    type Sleep = tokio::time::Sleep;

    fn spawn<F>(&self, fut: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.0.spawn(fut);
    }

    fn sleep(&self, d: Duration) -> tokio::time::Sleep {
        let _in_runtime = self.0.enter();
        tokio::time::sleep(d)
    }

    async fn connect_tcp(&self, addr: SocketAddr) -> io::Result<Self::TcpStream> {
        let s = self
            .in_runtime(async move {
                let s = TcpStream::connect(addr).await?;
                s.set_nodelay(true)?;
                Ok(s)
            })
            .await?;
        Ok(s.compat())
    }

    async fn bind_tcp_shared(&self, addr: SocketAddr) -> io::Result<TcpListener> {
        self.in_runtime(async move { shared_socket(addr)?.listen(128) })
            .await
    }

    async fn connect_tcp_from(
        &self,
        local: SocketAddr,
        remote: SocketAddr,
    ) -> io::Result<Self::TcpStream> {
        let s = self
            .in_runtime(async move {
                let s = shared_socket(local)?.connect(remote).await?;
                s.set_nodelay(true)?;
                Ok(s)
            })
            .await?;
        Ok(s.compat())
    }

    async fn bind_tcp(&self, addr: SocketAddr) -> io::Result<TcpListener> {
        self.in_runtime(TcpListener::bind(addr)).await
    }

    async fn accept_tcp(listener: &TcpListener) -> io::Result<(Self::TcpStream, SocketAddr)> {
        let (s, a) = listener.accept().await?;
        s.set_nodelay(true)?;
        Ok((s.compat(), a))
    }

    fn tcp_local_addr(listener: &TcpListener) -> io::Result<SocketAddr> {
        listener.local_addr()
    }

    async fn connect_udp(&self, local: SocketAddr, peer: SocketAddr) -> io::Result<UdpSocket> {
        self.in_runtime(async move {
            let s = UdpSocket::bind(local).await?;
            s.connect(peer).await?;
            Ok(s)
        })
        .await
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
        Ok(tokio::net::lookup_host((host, port)).await?.collect())
    }

    fn bind_unix(&self, path: &Path) -> io::Result<UnixListener> {
        let _in_runtime = self.0.enter();
        UnixListener::bind(path)
    }

    async fn accept_unix(listener: &UnixListener) -> io::Result<Self::UnixStream> {
        listener.accept().await.map(|(s, _)| s.compat())
    }

    async fn connect_unix(&self, path: &Path) -> io::Result<Self::UnixStream> {
        UnixStream::connect(path)
            .await
            .map(TokioAsyncReadCompatExt::compat)
    }

    fn run_blocking<T, F>(&self, f: F) -> impl Future<Output = Option<T>> + Send
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        // tokio's blocking pool, started now (not when first polled); a
        // panic becomes a `JoinError`, i.e. `None`.
        let task = self.0.spawn_blocking(f);
        async move { task.await.ok() }
    }
}
