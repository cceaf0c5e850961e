//! # mau-simrt: whole Mau nodes under deterministic simulation
//!
//! A third [`mau_net::Runtime`], beside `mau-smol` and `mau-tokio`, that
//! runs the real networked node (hyper, rustls, the driver, the server and
//! its limits, table persistence) on:
//!
//! - one thread and a scheduler that picks the next ready task with a
//!   generator seeded once ([`Sim`]);
//! - virtual time: timers fire in deadline order and time jumps to the next
//!   one whenever every task waits ([`Sim::block_on`]);
//! - an in-memory network of hosts, one IP each, with reliable TCP-like
//!   streams, per-link latency and bandwidth, loss (as lost SYNs and
//!   resets), partitions and crashes ([`net`]).
//!
//! [`scenario`] runs whole networks of nodes with faults and friend syncs
//! ([`friends`]) and checks invariants; the `mau-simrt` command runs one from the command line, and
//! prints the command replaying a failed seed. See `docs/simulation.md`.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod crypto;
mod disk;
pub mod friends;
pub mod hostile;
pub mod net;

mod runtime;
pub mod scenario;
mod sim;
mod time;
mod trace;

pub use net::LinkConfig;
pub use runtime::{NotSimulated, SimRuntime};
pub use sim::{Sim, SimError};
pub use time::Sleep;
pub use trace::Trace;

use std::net::IpAddr;
use std::time::Duration;

/// Whatever links the simulator (its command and tests) allocates with
/// mimalloc: a run allocates and frees millions of small buffers and task
/// futures (TLS records, HTTP buffers, one task per request), and glibc's
/// `malloc`/`free` took about 13% of its CPU (see docs/simulation.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

impl Sim {
    /// The runtime of host `ip` (created on first use).
    pub fn host(&self, ip: IpAddr) -> SimRuntime {
        self.shared.state().net.add_host(ip);
        SimRuntime {
            shared: self.shared.clone(),
            host: ip,
        }
    }

    /// Default link properties: latencies drawn in `latency` (per host
    /// pair, from the seed), `bandwidth` bytes/s, `loss` probability.
    pub fn set_default_links(&self, latency: (Duration, Duration), bandwidth: u64, loss: f64) {
        let mut st = self.shared.state();
        st.net.latency = latency;
        st.net.bandwidth = bandwidth;
        st.net.loss = loss;
    }

    /// Makes every link of `host` at least this slow and lossy (`None`
    /// restores it).
    pub fn set_host_link(&self, host: IpAddr, link: Option<LinkConfig>) {
        net::set_host_link(&mut self.shared.state(), host, link);
    }

    /// Partitions the network into `groups` (hosts in no group form one
    /// more); connections across are reset, new ones cannot form.
    pub fn partition(&self, groups: &[Vec<IpAddr>]) {
        let wakers = net::partition(&mut self.shared.state(), groups);
        wakers.into_iter().for_each(std::task::Waker::wake);
    }

    /// Heals every partition.
    pub fn heal(&self) {
        self.partition(&[]);
    }

    /// Adds a scenario-level mark to the trace (e.g. a lookup's result).
    pub fn mark(&self, what: u64, value: u64) {
        let mut st = self.shared.state();
        let now = st.now;
        st.trace.record(now, trace::Event::Mark { what, value });
    }

    /// The most simulated connections open at once so far (either end not
    /// yet dropped): what the nodes' connection state scales with.
    pub fn peak_open_connections(&self) -> usize {
        self.shared.state().net.peak_open
    }

    /// A number from the simulation's generator (for scenario choices).
    pub fn rand_u64(&self, below: u64) -> u64 {
        self.shared.state().rng.u64(..below.max(1))
    }
}
