//! Resolvers turn a fingerprint into candidate addresses; [`connect`] tries
//! them all at once and keeps the first address where the peer proves its
//! fingerprint over mutual TLS.
//!
//! Resolvers here: a static address and the DHT. The LAN resolver (mDNS)
//! implements the same [`Resolve`] trait.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use mau_proto::wire::PING_PATH;
use mau_proto::{Contact, Fingerprint, PeerAddress};
use tracing::debug;

use crate::client::ClientError;
use crate::core::Core;
use crate::node::RunningNode;
use crate::runtime::Runtime;

/// A boxed future, as resolvers return.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A way to find where a fingerprint listens.
pub trait Resolve: Send + Sync + 'static {
    /// A short name for messages ("static", "dht", "lan").
    fn name(&self) -> &str;
    /// Candidate addresses for `fp` (possibly none).
    fn resolve(&self, fp: Fingerprint) -> BoxFuture<'_, Result<Vec<PeerAddress>, String>>;
}

/// Always the same address (a configured peer, or a fallback).
pub struct StaticAddress(pub PeerAddress);

impl Resolve for StaticAddress {
    fn name(&self) -> &str {
        "static"
    }
    fn resolve(&self, _fp: Fingerprint) -> BoxFuture<'_, Result<Vec<PeerAddress>, String>> {
        let a = self.0.clone();
        Box::pin(async move { Ok(vec![a]) })
    }
}

/// The Internet resolver: a DHT lookup through a running node.
pub struct DhtResolver<R: Runtime>(pub(crate) Arc<Core<R>>);

impl<R: Runtime> DhtResolver<R> {
    /// A resolver looking up through `node`.
    pub fn new(node: &RunningNode<R>) -> Self {
        DhtResolver(node.core().clone())
    }
}

impl<R: Runtime> Resolve for DhtResolver<R> {
    fn name(&self) -> &str {
        "dht"
    }
    fn resolve(&self, fp: Fingerprint) -> BoxFuture<'_, Result<Vec<PeerAddress>, String>> {
        Box::pin(async move {
            let outcome = self.0.lookup(fp).await.map_err(|e| e.to_string())?;
            Ok(outcome.found.map(|c| c.address).into_iter().collect())
        })
    }
}

/// One candidate that did not work, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attempt {
    /// Which resolver named it.
    pub source: String,
    /// The address tried (`None`: the resolver itself failed or found nothing).
    pub address: Option<PeerAddress>,
    /// What went wrong.
    pub reason: String,
}

/// No candidate address reached the peer.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("could not reach {fingerprint}: {}", describe(.attempts))]
pub struct ResolveError {
    /// The peer.
    pub fingerprint: Fingerprint,
    /// Every failed candidate.
    pub attempts: Vec<Attempt>,
}

fn describe(attempts: &[Attempt]) -> String {
    if attempts.is_empty() {
        return "no resolver gave an address".into();
    }
    attempts
        .iter()
        .map(|a| match &a.address {
            Some(addr) => format!("[{}] {addr}: {}", a.source, a.reason),
            None => format!("[{}] {}", a.source, a.reason),
        })
        .collect::<Vec<_>>()
        .join("; ")
}

enum Report {
    Reached(Contact<PeerAddress>),
    Failed(Attempt),
    Done,
}

/// Resolves `fp` with every resolver and the fallback addresses at once,
/// verifies each candidate with a pinned ping, and returns the first that
/// answers (a 429 or 503 counts: the handshake proved the fingerprint); the
/// peer is then added to the routing table.
pub async fn connect<R: Runtime>(
    node: &RunningNode<R>,
    fp: Fingerprint,
    resolvers: Vec<Arc<dyn Resolve>>,
    fallbacks: &[PeerAddress],
) -> Result<Contact<PeerAddress>, ResolveError> {
    let core = node.core().clone();
    let client = node.client().clone();
    let mut all: Vec<Arc<dyn Resolve>> = resolvers;
    all.extend(
        fallbacks
            .iter()
            .map(|a| Arc::new(StaticAddress(a.clone())) as Arc<dyn Resolve>),
    );
    let (tx, rx) = async_channel::unbounded();
    let mut running = 0usize;
    for resolver in all {
        running += 1;
        let tx = tx.clone();
        let client = client.clone();
        core.rt.spawn(async move {
            let source = resolver.name().to_owned();
            match resolver.resolve(fp).await {
                Ok(addrs) if addrs.is_empty() => {
                    let _ = tx.try_send(Report::Failed(Attempt {
                        source,
                        address: None,
                        reason: "found no address".into(),
                    }));
                }
                Ok(addrs) => {
                    for address in addrs {
                        let contact = Contact::new(fp, address.clone());
                        debug!(peer = %fp, %address, %source, "trying candidate address");
                        match client.get(&contact, PING_PATH, 1024).await {
                            // A busy peer (429, 503) refused the ping only
                            // after the pinned mutual-TLS handshake: it is
                            // this fingerprint, at this address.
                            Ok(_)
                            | Err(ClientError::Status {
                                status: 429 | 503, ..
                            }) => {
                                let _ = tx.try_send(Report::Reached(contact));
                                break;
                            }
                            Err(e) => {
                                let _ = tx.try_send(Report::Failed(Attempt {
                                    source: source.clone(),
                                    address: Some(address),
                                    reason: e.to_string(),
                                }));
                            }
                        }
                    }
                }
                Err(reason) => {
                    let _ = tx.try_send(Report::Failed(Attempt {
                        source,
                        address: None,
                        reason,
                    }));
                }
            }
            let _ = tx.try_send(Report::Done);
        });
    }
    drop(tx);
    let mut attempts = Vec::new();
    while running > 0 {
        match rx.recv().await {
            Ok(Report::Reached(contact)) => {
                core.with_node(|n, now| n.add_peer(now, contact.clone()));
                return Ok(contact);
            }
            Ok(Report::Failed(a)) => attempts.push(a),
            Ok(Report::Done) => running -= 1,
            Err(_) => break,
        }
    }
    Err(ResolveError {
        fingerprint: fp,
        attempts,
    })
}
