//! The core handle: the sans-IO node behind a mutex, its clock, the wake
//! channel of its driver, the waiters of running lookups, and the node's
//! tasks (so that shutdown can wait for every one of them).
//!
//! Everything else (the driver, the server, services such as persistence,
//! mDNS, UPnP and the control socket) holds an `Arc<Core>` and nothing more
//! of the node than it needs.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use mau_proto::{Fingerprint, LookupId, LookupOutcome, Node, PeerAddress, Time};

use crate::error::NetError;
use crate::lock::lock;
use crate::metrics::Metrics;
use crate::runtime::Runtime;

/// Resolves when the node shuts down.
#[derive(Clone)]
pub(crate) struct Shutdown(async_channel::Receiver<()>);

impl Shutdown {
    /// Waits for shutdown.
    pub(crate) async fn wait(&self) {
        // Nothing is ever sent: the channel closes when the node stops.
        let _ = self.0.recv().await;
    }

    pub(crate) fn is_down(&self) -> bool {
        self.0.is_closed()
    }
}

/// The node's tasks: each holds a clone of `alive`; when the last one ends
/// (and the core dropped its own), `all_done` closes.
struct Tasks {
    alive: Mutex<Option<async_channel::Sender<()>>>,
    all_done: async_channel::Receiver<()>,
}

/// The sans-IO node and what every part of a running node shares.
pub(crate) struct Core<R: Runtime> {
    pub rt: R,
    node: Mutex<Node<PeerAddress>>,
    started: Instant,
    wake: async_channel::Sender<()>,
    waiters: Mutex<BTreeMap<LookupId, async_channel::Sender<LookupOutcome<PeerAddress>>>>,
    stop: Mutex<Option<async_channel::Sender<()>>>,
    pub shutdown: Shutdown,
    tasks: Tasks,
    /// Where what operators watch is counted (`None`: nothing counted).
    pub metrics: Option<Arc<Metrics>>,
}

impl<R: Runtime> Core<R> {
    /// A core for `node`; the receiver wakes the driver.
    pub fn new(
        rt: R,
        node: Node<PeerAddress>,
        metrics: Option<Arc<Metrics>>,
    ) -> (Self, async_channel::Receiver<()>) {
        let (wake, wake_rx) = async_channel::bounded(1);
        let (stop, stop_rx) = async_channel::bounded(1);
        let (alive, all_done) = async_channel::bounded(1);
        let started = rt.now();
        let core = Core {
            rt,
            node: Mutex::new(node),
            started,
            wake,
            waiters: Mutex::new(BTreeMap::new()),
            stop: Mutex::new(Some(stop)),
            shutdown: Shutdown(stop_rx),
            tasks: Tasks {
                alive: Mutex::new(Some(alive)),
                all_done,
            },
            metrics,
        };
        (core, wake_rx)
    }

    /// Milliseconds since the node started: the core's clock.
    pub fn now(&self) -> Time {
        Time::from_duration(self.rt.now().saturating_duration_since(self.started))
    }

    /// Runs `f` on the core, then wakes the driver to send what it emitted.
    pub fn with_node<T>(&self, f: impl FnOnce(&mut Node<PeerAddress>, Time) -> T) -> T {
        let now = self.now();
        let out = {
            let mut node = lock(&self.node);
            f(&mut node, now)
        };
        let _ = self.wake.try_send(());
        out
    }

    /// Reads the core without waking the driver.
    pub fn read<T>(&self, f: impl FnOnce(&Node<PeerAddress>, Time) -> T) -> T {
        let now = self.now();
        let node = lock(&self.node);
        f(&node, now)
    }

    /// Drains the core's outputs and its next deadline (for the driver).
    pub fn poll(&self) -> (Vec<mau_proto::Output<PeerAddress>>, Option<Time>) {
        let mut node = lock(&self.node);
        let outputs: Vec<_> = std::iter::from_fn(|| node.poll_output()).collect();
        (outputs, node.poll_timeout())
    }

    /// Starts a lookup and waits for its outcome.
    pub async fn lookup(
        &self,
        target: Fingerprint,
    ) -> Result<LookupOutcome<PeerAddress>, NetError> {
        let (tx, rx) = async_channel::bounded(1);
        // Registered under the node lock, before the driver can see the
        // outcome (a lookup on an empty table finishes at once).
        self.with_node(|node, now| -> Result<(), NetError> {
            let id = node.start_lookup(now, target)?;
            if let Some(m) = &self.metrics {
                m.lookup_started();
            }
            lock(&self.waiters).insert(id, tx);
            Ok(())
        })?;
        futures_lite::future::or(
            async { rx.recv().await.map_err(|_| NetError::Shutdown) },
            async {
                self.shutdown.wait().await;
                Err(NetError::Shutdown)
            },
        )
        .await
    }

    /// Hands a finished lookup to whoever waits for it.
    pub fn lookup_finished(&self, outcome: LookupOutcome<PeerAddress>) {
        let waiter = lock(&self.waiters).remove(&outcome.id);
        if let Some(tx) = waiter {
            let _ = tx.try_send(outcome);
        }
    }

    /// Runs `fut` as one of the node's tasks: [`Self::stopped`] waits for it.
    /// Every task must end soon after [`Self::shutdown`] resolves.
    pub fn spawn(&self, fut: impl Future<Output = ()> + Send + 'static) {
        let guard = lock(&self.tasks.alive).clone();
        self.rt.spawn(async move {
            fut.await;
            drop(guard);
        });
    }

    /// Tells every task to stop (idempotent, does not wait).
    pub fn signal_stop(&self) {
        if let Some(stop) = lock(&self.stop).take() {
            stop.close();
        }
    }

    /// Signals stop and waits until every task spawned with [`Self::spawn`] ended.
    pub async fn stopped(&self) {
        self.signal_stop();
        drop(lock(&self.tasks.alive).take());
        let _ = self.tasks.all_done.recv().await;
    }
}
