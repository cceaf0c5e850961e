//! The HTTPS server: accept, TLS handshake with a required client certificate,
//! HTTP/1.1 keep-alive, then each request goes to the [`crate::router`].

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use futures_rustls::TlsAcceptor;
use mau_proto::PeerAddress;
use smol_hyper::rt::FuturesIo;
use tracing::{debug, warn};

use crate::node::Shared;
use crate::router::{self, Caller};
use crate::runtime::{timeout, HyperTimer, Runtime};

/// Accepts connections until shutdown.
pub(crate) async fn serve<R: Runtime>(shared: Arc<Shared<R>>, listener: R::TcpListener) {
    loop {
        let next =
            futures_lite::future::or(async { Some(R::accept_tcp(&listener).await) }, async {
                shared.shutdown.wait().await;
                None
            })
            .await;
        let Some(accepted) = next else {
            break;
        };
        match accepted {
            Ok((stream, peer)) => {
                // At the connection limit, stop accepting: the kernel backlog waits.
                let permit = shared.connections.acquire_arc().await;
                let s = shared.clone();
                shared.rt.spawn(async move {
                    connection(s, stream, peer).await;
                    drop(permit);
                });
            }
            Err(e) => {
                warn!(error = %e, "accept failed");
                // Out of descriptors and the like: back off instead of spinning.
                shared.rt.sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
}

async fn connection<R: Runtime>(shared: Arc<Shared<R>>, stream: R::TcpStream, peer: SocketAddr) {
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
            debug!(%peer, "TLS handshake timed out");
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
    debug!(peer = %identity.fingerprint, remote = %peer, advertised = ?address.as_ref().map(|a| a.as_str()), "peer connected");
    let caller = Arc::new(Caller {
        fingerprint: identity.fingerprint,
        address,
    });
    let s = shared.clone();
    let service = hyper::service::service_fn(move |req| {
        let s = s.clone();
        let caller = caller.clone();
        async move { Ok::<_, Infallible>(router::handle(&s, &caller, req).await) }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(HyperTimer(shared.rt.clone()))
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(limits.max_header_bytes.max(8192))
        .keep_alive(true)
        .serve_connection(FuturesIo::new(tls), service);
    let result = futures_lite::future::or(conn, async {
        shared.shutdown.wait().await;
        Ok(())
    })
    .await;
    if let Err(e) = result {
        debug!(%peer, error = %e, "connection ended with an error");
    }
}
