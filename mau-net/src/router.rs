//! Request routing: which handler answers which path, with which status.
//!
//! Every request arrives with the caller's fingerprint proven by mutual TLS.

use std::net::IpAddr;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, StatusCode};
use mau_proto::wire::{encode_find_peer, parse_kad_path, KadRoute, WireError};
use mau_proto::{Fingerprint, PeerAddress, PeerRecord, Request, Response};
use tracing::debug;

use crate::runtime::Runtime;
use crate::serve_context::ServeContext;

/// Who is calling: proven fingerprint, claimed listening address.
#[derive(Clone, Debug)]
pub(crate) struct Caller {
    pub fingerprint: Fingerprint,
    /// From the caller's certificate (the Go implementation's convention).
    pub address: Option<PeerAddress>,
    /// The IP it connects from.
    pub source: IpAddr,
}

/// The caller's listening address: the one in its certificate, with an
/// unspecified host (`0.0.0.0`, `::`) replaced by the IP we see it connect from.
pub(crate) fn listening_address(claimed: PeerAddress, observed: IpAddr) -> PeerAddress {
    match claimed.host().parse::<IpAddr>() {
        Ok(ip) if ip.is_unspecified() => {
            PeerAddress::from(std::net::SocketAddr::new(observed, claimed.port()))
        }
        _ => claimed,
    }
}

/// A response body: in memory, or streamed (content files).
pub(crate) type Body = http_body_util::combinators::BoxBody<Bytes, std::io::Error>;
pub(crate) type Reply = hyper::Response<Body>;

/// A body held in memory.
pub(crate) fn full(body: impl Into<Bytes>) -> Body {
    Full::new(body.into())
        .map_err(|never| match never {})
        .boxed()
}

pub(crate) fn reply(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Reply {
    let mut r = hyper::Response::new(full(body));
    *r.status_mut() = status;
    if let Ok(v) = content_type.parse() {
        r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    r
}

/// A short JSON error: `{"error":"..."}`.
pub(crate) fn error(status: StatusCode, message: &str) -> Reply {
    let body = serde_json::json!({ "error": message }).to_string();
    reply(status, "application/json", body)
}

/// Answers one request.
pub(crate) async fn handle<R: Runtime, B: http_body::Body>(
    shared: &ServeContext<R>,
    caller: &Caller,
    req: hyper::Request<B>,
) -> Reply {
    let path = req.uri().path();
    debug!(peer = %caller.fingerprint, method = %req.method(), path, "request");
    // No route reads a body, so none is ever buffered; one that is large or
    // of unknown length is refused before a byte of it is read.
    let max_body = shared.config.limits.max_body_bytes;
    if req.body().size_hint().upper().is_none_or(|n| n > max_body) {
        debug!(peer = %caller.fingerprint, max_body, "request body too large");
        let mut r = error(StatusCode::PAYLOAD_TOO_LARGE, "request body too large");
        // Closing is what keeps the unread body from being read.
        r.headers_mut().insert(
            hyper::header::CONNECTION,
            hyper::header::HeaderValue::from_static("close"),
        );
        return r;
    }
    if req.method() != Method::GET {
        return error(StatusCode::METHOD_NOT_ALLOWED, "only GET is served");
    }
    if path.starts_with("/p2p/") {
        return crate::content::handle(shared, caller, &req).await;
    }
    if path.starts_with("/kad/") {
        return kad(shared, caller, path);
    }
    error(StatusCode::NOT_FOUND, "no such route")
}

fn kad<R: Runtime>(shared: &ServeContext<R>, caller: &Caller, path: &str) -> Reply {
    let count = |kind, outcome| {
        shared
            .config
            .metrics
            .as_ref()
            .map(|m| m.rpc_received(kind, outcome))
    };
    let request = match parse_kad_path(path) {
        Ok(KadRoute::Ping) => Request::Ping,
        Ok(KadRoute::FindPeer(fp)) => Request::FindPeer(fp),
        Err(WireError::UnknownPath) => return error(StatusCode::NOT_FOUND, "no such route"),
        Err(e) => {
            count("unknown", "bad_request");
            return error(StatusCode::BAD_REQUEST, &e.to_string());
        }
    };
    count(crate::metrics::rpc_kind(&request), "ok");
    // The caller enters the table only if it answers a probe at the
    // address it claims; without one it is answered and nothing more.
    let from = mau_proto::Caller {
        fingerprint: caller.fingerprint,
        address: caller.address.clone(),
        source: Some(caller.source),
    };
    let response = shared.with_node(|node, now| node.on_request(now, from, &request));
    match response {
        Response::Pong => reply(StatusCode::OK, "text/plain", Bytes::new()),
        Response::Peers(peers) => {
            let records: Vec<PeerRecord> = peers.into_iter().map(PeerRecord::from).collect();
            reply(
                StatusCode::OK,
                "application/json",
                encode_find_peer(&records),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unspecified_host_takes_the_observed_ip() {
        let ip: IpAddr = "127.0.0.7".parse().unwrap();
        let a = listening_address(PeerAddress::parse("0.0.0.0:9000").unwrap(), ip);
        assert_eq!(a.as_str(), "127.0.0.7:9000");
        let b = listening_address(PeerAddress::parse("[::]:9000").unwrap(), ip);
        assert_eq!(b.as_str(), "127.0.0.7:9000");
        let c = listening_address(PeerAddress::parse("example.org:9000").unwrap(), ip);
        assert_eq!(c.as_str(), "example.org:9000");
    }
}
