//! # mau-sim: a deterministic network simulator for the Mau Kademlia core
//!
//! Drives the real sans-IO [`mau_proto::Node`] (one `NetNode` per simulated
//! node, the address being the node's index) over a simulated network with
//! per-message latency, loss, staggered joins through bootstrap peers, churn
//! (departed nodes silently drop messages, so requesters time out through the
//! core's own `rpc_timeout`) and a virtual clock, so that STALL_PERIOD
//! refreshes and ping backoffs really happen.
//!
//! - [`Scenario`]: what to simulate (plain, serialisable data);
//! - [`run`]: the run loop, separate from any command line;
//! - [`warm`]: converged tables built directly (`--warm-start`), how a
//!   million nodes fit in memory and in minutes;
//! - [`Report`]: the metrics, split into a [`Deterministic`] part (a pure
//!   function of the scenario: same seed, byte-identical JSON) and
//!   [`Resources`] (wall-clock time, peak memory).

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod metrics;
pub mod plot;
pub mod scenario;
pub mod sim;
pub mod sweep;
pub mod warm;

pub use metrics::{Deterministic, Memory, Report, Resources, Stats};
pub use scenario::{Attack, Policy, ProtocolParams, Scenario};
pub use sim::{run, run_with_progress, Sim};
