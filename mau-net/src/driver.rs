//! The driver: sends what the core emits, fires its deadlines, reports
//! answers and hands events to whoever needs them.
//!
//! It decides nothing. The core chose when each request may go out (its
//! budgets) and how long it may take (`Transmit::timeout`); the driver sends
//! it at once and spends exactly that time on it.

use std::sync::Arc;
use std::time::Duration;

use mau_proto::wire::{decode_find_peer_answer, find_peer_path, max_find_peer_body, PING_PATH};
use mau_proto::{Contact, Event, Output, PeerAddress, Request, Response, RpcFailure, Transmit};
use tracing::{debug, info};

use crate::client::{Client, ClientError};
use crate::core::Core;
use crate::metrics;
use crate::persist::TableSaver;
use crate::runtime::{timeout, Runtime};

/// What the driver needs besides the core.
pub(crate) struct Driver<R: Runtime> {
    pub core: Arc<Core<R>>,
    pub client: Arc<Client<R>>,
    pub saver: Arc<TableSaver>,
    /// Where observed-address headers are counted.
    pub reach: Arc<crate::reach::Reach>,
    /// K, for the size of find_peer answers.
    pub k: usize,
}

impl<R: Runtime> Driver<R> {
    /// Runs until shutdown.
    pub async fn run(self: Arc<Self>, wake: async_channel::Receiver<()>) {
        enum Wakeup {
            Poke,
            Timer,
            Stop,
        }
        let core = &self.core;
        loop {
            let (outputs, deadline) = core.poll();
            for o in outputs {
                match o {
                    Output::Transmit(t) => {
                        let d = self.clone();
                        core.spawn(async move { d.execute(t).await });
                    }
                    Output::Event(e) => self.on_event(e),
                }
            }
            let wait = deadline.map(|d| {
                Duration::from_millis(d.as_millis().saturating_sub(core.now().as_millis()))
            });
            let sleep = core.rt.sleep(wait.unwrap_or(Duration::from_secs(3600)));
            let woke = futures_lite::future::or(
                futures_lite::future::or(
                    async {
                        match wake.recv().await {
                            Ok(()) => Wakeup::Poke,
                            Err(_) => Wakeup::Stop,
                        }
                    },
                    async {
                        sleep.await;
                        if wait.is_some() {
                            Wakeup::Timer
                        } else {
                            Wakeup::Poke
                        }
                    },
                ),
                async {
                    core.shutdown.wait().await;
                    Wakeup::Stop
                },
            )
            .await;
            match woke {
                Wakeup::Poke => {}
                Wakeup::Timer => core.with_node(|node, now| node.handle_timeout(now)),
                Wakeup::Stop => break,
            }
        }
    }

    fn on_event(&self, event: Event<PeerAddress>) {
        match event {
            Event::LookupFinished(outcome) => {
                debug!(
                    target = %outcome.target, kind = ?outcome.kind, found = outcome.found.is_some(),
                    hops = outcome.hops, requests = outcome.requests, failures = outcome.failures,
                    "DHT lookup finished"
                );
                if let Some(m) = &self.core.metrics {
                    let took = self.core.now().since(outcome.started);
                    let kind = metrics::lookup_kind(outcome.kind);
                    m.lookup_finished(kind, outcome.found.is_some(), took, outcome.hops);
                }
                self.core.lookup_finished(outcome);
            }
            Event::PeerAdded(c) => {
                debug!(peer = %c.fingerprint, address = %c.address, "routing table: peer added");
                self.saver.mark_dirty();
            }
            Event::PeerRemoved(c) => {
                debug!(peer = %c.fingerprint, address = %c.address, "routing table: peer removed");
                self.client.forget(&c.fingerprint);
                self.saver.mark_dirty();
            }
            Event::Joined { peers } => {
                info!(peers, "joined the network");
                // Keep what the join learned at once rather than at the next
                // periodic save: a node killed meanwhile restarts from it.
                self.saver.save_soon();
            }
        }
    }

    /// Sends one request the core emitted and reports the answer. The core
    /// fails it at `t.timeout` anyway; giving up at the same moment frees
    /// the connection.
    async fn execute(&self, t: Transmit<PeerAddress>) {
        let answer = futures_lite::future::or(
            async {
                let result = timeout(&self.core.rt, t.timeout, self.call(&t))
                    .await
                    .unwrap_or(Err(ClientError::Timeout(t.timeout)));
                Some(result)
            },
            async {
                self.core.shutdown.wait().await;
                None
            },
        )
        .await;
        let Some(result) = answer else {
            return;
        };
        if let Err(e) = &result {
            debug!(peer = %t.to.fingerprint, address = %t.to.address, request = ?t.request, class = ?t.class, error = %e, "RPC failed");
        }
        let answer = result
            .map_err(|e| rpc_failure(&e))
            .and_then(|r| r.ok_or(RpcFailure::BadResponse));
        if let Some(m) = &self.core.metrics {
            m.rpc_sent(metrics::rpc_kind(&t.request), metrics::rpc_outcome(&answer));
        }
        self.core
            .with_node(|node, now| node.on_response(now, t.id, answer));
    }

    async fn call(
        &self,
        t: &Transmit<PeerAddress>,
    ) -> Result<Option<Response<PeerAddress>>, ClientError> {
        match &t.request {
            Request::Ping => {
                debug!(peer = %t.to.fingerprint, address = %t.to.address, class = ?t.class, "DHT ping");
                let answer = self.client.get_answer(&t.to, PING_PATH, 1024).await?;
                self.observed(t, &answer);
                Ok(Some(Response::Pong))
            }
            Request::FindPeer(target) => {
                debug!(peer = %t.to.fingerprint, address = %t.to.address, %target, "DHT find_peer");
                let answer = self
                    .client
                    .get_answer(&t.to, &find_peer_path(target), max_find_peer_body(self.k))
                    .await?;
                self.observed(t, &answer);
                match decode_find_peer_answer(&answer.body, self.k) {
                    Ok(answer) => {
                        if answer.skipped > 0 {
                            debug!(peer = %t.to.fingerprint, skipped = answer.skipped,
                                   first = answer.first_skip.as_deref().unwrap_or(""),
                                   "find_peer answer: unusable records skipped");
                        }
                        Ok(Some(Response::Peers(
                            answer.records.into_iter().map(Contact::from).collect(),
                        )))
                    }
                    Err(e) => {
                        debug!(peer = %t.to.fingerprint, error = %e, "malformed find_peer answer");
                        Ok(None)
                    }
                }
            }
        }
    }
}

impl<R: Runtime> Driver<R> {
    /// Counts the address the peer saw us at, if it said.
    fn observed(&self, t: &Transmit<PeerAddress>, answer: &crate::client::Answer) {
        if let Some(h) = &answer.observed {
            self.reach
                .observed(self.core.now(), t.to.fingerprint, answer.remote, h);
        }
    }
}

/// How the core should count a client error against the peer.
fn rpc_failure(e: &ClientError) -> RpcFailure {
    match e {
        ClientError::Timeout(_) => RpcFailure::Timeout,
        ClientError::Status { .. } | ClientError::TooLarge(_) | ClientError::Http(_) => {
            RpcFailure::BadResponse
        }
        // Cut off on our side, or never sent: not the peer's failure.
        ClientError::Interrupted(_) | ClientError::Config(_) => RpcFailure::NotSent,
        ClientError::Resolve(..) | ClientError::Connect(..) | ClientError::Tls(..) => {
            RpcFailure::Unreachable
        }
    }
}
