//! The simulation: one seeded, single-threaded executor with virtual time.
//!
//! Every choice the simulation makes (which ready task runs next, which
//! packet is lost, each link's latency) is drawn from one generator seeded
//! once, and time moves only when every task waits: it jumps to the earliest
//! timer. Running the same seed twice therefore runs the same steps in the
//! same order; the [`Trace`] hash proves it.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::Waker;
use std::time::{Duration, Instant};

use async_task::{Builder, Runnable, Task};

use crate::net::Net;
use crate::trace::{Event, Trace};

/// Why a simulation stopped before its main future finished.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SimError {
    /// Every task waits and no timer is set: nothing can ever happen again.
    #[error("deadlock at {0:?} of virtual time: every task waits and no timer is set")]
    Deadlock(Duration),
    /// Virtual time passed the run's limit.
    #[error("virtual time limit {0:?} reached")]
    TimeLimit(Duration),
}

/// Everything the simulation's tasks share, behind one lock.
pub(crate) struct State {
    /// Virtual time since the start.
    pub now: Duration,
    /// The one source of every choice.
    pub rng: fastrand::Rng,
    /// TLS randomness (randoms, ephemeral keys), apart from `rng` so that
    /// handshakes do not shift the schedule; on the thread while it runs.
    tls_rng: fastrand::Rng,
    /// Timers by deadline, then by creation order (ties are deterministic).
    timers: BTreeMap<(Duration, u64), Waker>,
    next_timer: u64,
    /// Live tasks and the host each belongs to (`None`: the scenario's own).
    tasks: BTreeMap<u64, (Option<IpAddr>, Task<(), u64>)>,
    next_task: u64,
    /// Tasks that finished since the executor last looked.
    finished: Vec<u64>,
    /// The event trace.
    pub trace: Trace,
    /// The simulated network.
    pub net: Net,
}

/// The shared core of a simulation (held by every runtime handle).
pub(crate) struct Shared {
    state: Mutex<State>,
    /// Tasks ready to run. A separate lock: wakers push here, sometimes while
    /// `state` is held (the lock order is always `state`, then `ready`).
    ready: Mutex<Vec<Runnable<u64>>>,
    /// The real instant virtual time 0 maps to.
    pub base: Instant,
    pub seed: u64,
}

/// A simulation: create hosts with [`Sim::host`], then [`Sim::block_on`].
#[derive(Clone)]
pub struct Sim {
    pub(crate) shared: Arc<Shared>,
}

/// Mixed into the seed for the TLS generator's own stream.
const TLS_STREAM: u64 = 0x544c_535f_7261_6e64;

/// The simulation's TLS generator on this thread while it runs
/// ([`Sim::block_on`]); handed back to the state when it stops.
struct TlsScope<'a> {
    shared: &'a Shared,
    outer: Option<fastrand::Rng>,
}

impl<'a> TlsScope<'a> {
    fn enter(shared: &'a Shared) -> TlsScope<'a> {
        let rng = std::mem::replace(&mut shared.state().tls_rng, fastrand::Rng::with_seed(0));
        TlsScope {
            shared,
            outer: crate::crypto::enter(rng),
        }
    }
}

impl Drop for TlsScope<'_> {
    fn drop(&mut self) {
        if let Some(rng) = crate::crypto::leave(self.outer.take()) {
            self.shared.state().tls_rng = rng;
        }
    }
}

/// Locks `m`, through a poisoned lock too (a panicking task has already
/// failed the run; its state is still worth reading).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    pub(crate) fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// Runs `fut` as a task of `host` (killed with it by [`Sim::crash`]).
    pub(crate) fn spawn<F>(self: &Arc<Self>, host: Option<IpAddr>, fut: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let runnable = {
            let mut st = self.state();
            let id = st.next_task;
            st.next_task += 1;
            let shared = self.clone();
            let fut = async move {
                fut.await;
                shared.state().finished.push(id);
            };
            let (runnable, task) = self.task(id, fut);
            st.tasks.insert(id, (host, task));
            let now = st.now;
            st.trace.record(now, Event::Spawn { task: id });
            runnable
        };
        runnable.schedule();
    }

    fn task<F>(self: &Arc<Self>, id: u64, fut: F) -> (Runnable<u64>, Task<F::Output, u64>)
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let shared = Arc::downgrade(self);
        let schedule = move |r: Runnable<u64>| {
            if let Some(s) = shared.upgrade() {
                lock(&s.ready).push(r);
            }
        };
        Builder::new().metadata(id).spawn(move |_| fut, schedule)
    }

    /// Registers (or refreshes) a timer; returns its key.
    pub(crate) fn set_timer(
        &self,
        st: &mut State,
        at: Duration,
        key: Option<(Duration, u64)>,
        waker: &Waker,
    ) -> (Duration, u64) {
        let key = key.unwrap_or_else(|| {
            st.next_timer += 1;
            (at, st.next_timer)
        });
        st.timers.insert(key, waker.clone());
        key
    }

    /// Wakes `waker` at virtual time `at`.
    pub(crate) fn wake_at(&self, st: &mut State, at: Duration, waker: Waker) {
        st.next_timer += 1;
        let key = (at, st.next_timer);
        st.timers.insert(key, waker);
    }

    pub(crate) fn cancel_timer(&self, key: (Duration, u64)) {
        let waker = self.state().timers.remove(&key);
        drop(waker);
    }

    /// Removes every task of `host`; the caller drops them (outside the lock).
    pub(crate) fn take_tasks(st: &mut State, host: IpAddr) -> Vec<Task<(), u64>> {
        let ids: Vec<u64> = st
            .tasks
            .iter()
            .filter(|(_, (h, _))| *h == Some(host))
            .map(|(id, _)| *id)
            .collect();
        ids.into_iter()
            .filter_map(|id| st.tasks.remove(&id).map(|(_, t)| t))
            .collect()
    }
}

impl Sim {
    /// A simulation whose every choice follows `seed`, TLS included: it
    /// installs the seeded crypto provider ([`crate::crypto::install`]).
    pub fn new(seed: u64) -> Sim {
        if !crate::crypto::install() {
            tracing::warn!(
                "another TLS crypto provider was installed first: TLS bytes will not replay"
            );
        }
        Sim {
            shared: Arc::new(Shared {
                state: Mutex::new(State {
                    now: Duration::ZERO,
                    rng: fastrand::Rng::with_seed(seed),
                    tls_rng: fastrand::Rng::with_seed(seed ^ TLS_STREAM),
                    timers: BTreeMap::new(),
                    next_timer: 0,
                    tasks: BTreeMap::new(),
                    next_task: 0,
                    finished: Vec::new(),
                    trace: Trace::default(),
                    net: Net::new(seed),
                }),
                ready: Mutex::new(Vec::new()),
                base: Instant::now(),
                seed,
            }),
        }
    }

    /// Connections each host holds an end of now (its memory grows with
    /// them); hosts holding none are absent.
    pub fn open_connections(&self) -> BTreeMap<IpAddr, usize> {
        self.shared.state().net.open_by_host()
    }

    /// The seed this simulation follows.
    pub fn seed(&self) -> u64 {
        self.shared.seed
    }

    /// Virtual time since the start.
    pub fn elapsed(&self) -> Duration {
        self.shared.state().now
    }

    /// The trace so far: its hash and counts.
    pub fn trace(&self) -> Trace {
        self.shared.state().trace.clone()
    }

    /// Spawns a scenario task (belonging to no host).
    pub fn spawn<F>(&self, fut: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.shared.spawn(None, fut);
    }

    /// Completes after `d` of virtual time.
    pub fn sleep(&self, d: Duration) -> crate::time::Sleep {
        crate::time::Sleep::new(self.shared.clone(), d)
    }

    /// Runs the simulation until `fut` finishes, at most `limit` of virtual
    /// time. Every other task keeps its state (a later call continues them).
    pub fn block_on<F>(&self, limit: Duration, fut: F) -> Result<F::Output, SimError>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let id = {
            let mut st = self.shared.state();
            st.next_task += 1;
            st.next_task - 1
        };
        let (runnable, main) = self.shared.task(id, fut);
        runnable.schedule();
        let _tls = TlsScope::enter(&self.shared);
        loop {
            if main.is_finished() {
                return Ok(futures_lite::future::block_on(main));
            }
            let next = {
                let mut st = self.shared.state();
                let mut ready = lock(&self.shared.ready);
                if ready.is_empty() {
                    None
                } else {
                    let i = st.rng.usize(..ready.len());
                    let r = ready.swap_remove(i);
                    let now = st.now;
                    st.trace.record(
                        now,
                        Event::Poll {
                            task: *r.metadata(),
                        },
                    );
                    Some(r)
                }
            };
            match next {
                Some(r) => {
                    r.run();
                    self.reap();
                }
                None => self.advance(limit)?,
            }
        }
    }

    /// Drops the handles of finished tasks (outside the lock: dropping
    /// runs destructors that take it).
    fn reap(&self) {
        let done: Vec<_> = {
            let mut st = self.shared.state();
            let ids = std::mem::take(&mut st.finished);
            ids.into_iter()
                .filter_map(|id| st.tasks.remove(&id))
                .collect()
        };
        drop(done);
    }

    /// Nothing is ready: jumps to the earliest timer and fires every timer due.
    fn advance(&self, limit: Duration) -> Result<(), SimError> {
        let due: Vec<Waker> = {
            let mut st = self.shared.state();
            let Some((&(at, _), _)) = st.timers.first_key_value() else {
                return Err(SimError::Deadlock(st.now));
            };
            if at > limit {
                return Err(SimError::TimeLimit(limit));
            }
            if at > st.now {
                st.now = at;
                st.trace.record(at, Event::Advance);
            }
            let later = st.timers.split_off(&(at, u64::MAX));
            std::mem::replace(&mut st.timers, later)
                .into_values()
                .collect()
        };
        for w in due {
            w.wake();
        }
        Ok(())
    }

    /// Ends the simulation: drops every task, timer and queued wake-up, so
    /// that nothing of it stays alive (tasks hold the simulation).
    pub fn clear(&self) {
        loop {
            let (tasks, timers, ready) = {
                let mut st = self.shared.state();
                let tasks = std::mem::take(&mut st.tasks);
                let timers = std::mem::take(&mut st.timers);
                let ready = std::mem::take(&mut *lock(&self.shared.ready));
                (tasks, timers, ready)
            };
            if tasks.is_empty() && timers.is_empty() && ready.is_empty() {
                return;
            }
            drop(tasks);
            drop(timers);
            drop(ready);
        }
    }

    /// Crashes the process on `host`: its tasks stop where they are (no
    /// shutdown code runs), its listeners close and its connections are
    /// reset (peers read `ConnectionReset`). The host stays up: connecting
    /// to it is refused until something listens again.
    pub fn crash(&self, host: IpAddr) {
        let (tasks, wakers) = {
            let mut st = self.shared.state();
            let now = st.now;
            st.trace.record(
                now,
                Event::Crash {
                    host: crate::net::ip_bits(host),
                },
            );
            let tasks = Shared::take_tasks(&mut st, host);
            let wakers = crate::net::reset_host(&mut st, host);
            (tasks, wakers)
        };
        drop(tasks);
        for w in wakers {
            w.wake();
        }
    }
}
