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
    /// The address it connects from (for a relayed caller: the relay's;
    /// otherwise told back in `Mau-Observed-Address`).
    pub remote: std::net::SocketAddr,
    /// True if it reached us through a relay.
    pub relayed: bool,
}

/// Paths under this prefix take their connection over (HTTP upgrade).
pub(crate) const UPGRADE_PREFIX: &str = "/relay/";

/// Request and answer header in which a mau-rs peer lists what it
/// understands beyond the Go protocol: `relay` (relayed addresses in
/// find_peer answers and certificates), and on answers `relays` when it
/// relays for others (how relay candidates are found). The Go peer neither
/// sends nor reads it.
pub(crate) const FEATURES: &str = "mau-features";

/// Keeps a connection marked busy (no header or idle deadline) while a
/// route holds it after an upgrade.
#[derive(Clone)]
#[allow(dead_code)] // held for its Drop, never read
pub(crate) struct ConnectionHold(pub std::sync::Arc<dyn std::any::Any + Send + Sync>);

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

/// Answers one request, saying in [`FEATURES`] what we understand (and
/// learning the same of the caller).
pub(crate) async fn handle<R: Runtime, B: http_body::Body + Send + 'static>(
    shared: &ServeContext<R>,
    caller: &Caller,
    req: hyper::Request<B>,
) -> Reply {
    shared
        .dialback
        .client()
        .learn_features(caller.fingerprint, None, req.headers());
    let mut r = route(shared, caller, req).await;
    let ours = if shared.relay.is_some() {
        "relay, relays"
    } else {
        "relay"
    };
    r.headers_mut()
        .insert(FEATURES, hyper::header::HeaderValue::from_static(ours));
    r
}

/// Answers one request.
async fn route<R: Runtime, B: http_body::Body + Send + 'static>(
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
        let relay_aware = crate::client::lists_feature(req.headers(), "relay");
        let mut r = if path == crate::reach::DIALBACK_PATH {
            dialback(shared, caller).await
        } else {
            kad(shared, caller, path, relay_aware)
        };
        // Where we saw the caller come from: mau-rs callers vote on it, Go
        // callers read only the body. A relayed caller came from the relay,
        // which says nothing about the caller's own address.
        if !caller.relayed {
            if let Ok(v) = hyper::header::HeaderValue::from_str(&caller.remote.to_string()) {
                r.headers_mut().insert(crate::reach::OBSERVED_HEADER, v);
            }
        }
        return r;
    }
    if path.starts_with(UPGRADE_PREFIX) {
        return match &shared.relay {
            Some(relay) => Box::pin(relay.handle(caller, req)).await,
            None => error(StatusCode::NOT_FOUND, "this node does not relay"),
        };
    }
    if path.starts_with(crate::punch::PREFIX) {
        return Box::pin(shared.punch.handle(caller, &req)).await;
    }
    error(StatusCode::NOT_FOUND, "no such route")
}

/// `/kad/dialback`: see [`crate::reach::DialbackServer`].
async fn dialback<R: Runtime>(shared: &ServeContext<R>, caller: &Caller) -> Reply {
    use crate::reach::Refusal;
    let now = shared.core.now();
    let result = shared
        .dialback
        .dial(
            now,
            caller.fingerprint,
            caller.address.as_ref(),
            caller.source,
        )
        .await;
    let outcome = match &result {
        Ok(a) if a.reached => "ok",
        Ok(_) => "not_reached",
        Err(Refusal::NotYours(_)) => "refused",
        Err(Refusal::Rate) => "rate",
        Err(Refusal::Busy) => "busy",
    };
    if let Some(m) = &shared.config.metrics {
        m.rpc_received("dialback", outcome);
    }
    match result {
        Ok(answer) => {
            debug!(peer = %caller.fingerprint, address = %answer.address, reached = answer.reached, "dial-back done");
            let body = serde_json::to_vec(&answer).unwrap_or_default();
            reply(StatusCode::OK, "application/json", body)
        }
        Err(Refusal::NotYours(why)) => error(StatusCode::FORBIDDEN, &why),
        Err(Refusal::Rate) => {
            let mut r = error(StatusCode::TOO_MANY_REQUESTS, "dial-backs too often");
            r.headers_mut().insert(
                hyper::header::RETRY_AFTER,
                hyper::header::HeaderValue::from_static("1"),
            );
            r
        }
        Err(Refusal::Busy) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "too many dial-backs at once",
        ),
    }
}

/// Answers a Kademlia RPC. Relayed addresses are left out of find_peer
/// answers to callers that did not announce `relay` in [`FEATURES`] (the Go
/// implementation): it could not use them.
fn kad<R: Runtime>(
    shared: &ServeContext<R>,
    caller: &Caller,
    path: &str,
    relay_aware: bool,
) -> Reply {
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
            let records: Vec<PeerRecord> = peers
                .into_iter()
                .filter(|c| relay_aware || !mau_proto::relay::is_relayed(&c.address))
                .map(PeerRecord::from)
                .collect();
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
