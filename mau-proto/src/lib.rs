//! # mau-proto: the sans-IO Kademlia core of Mau
//!
//! A pure, deterministic state machine: it takes events with the current time
//! passed in and emits commands. No sockets, no clock reads, no threads, no
//! global randomness, no async runtime. Same inputs, same outputs, so it can be
//! simulated at scale and fuzzed; the runtime adapters only do the I/O.
//!
//! An embedder meets [`Node`] (events in, commands out: see the [`node`]
//! module and docs/embedding.md), its [`Config`], and the values it passes:
//! [`Fingerprint`], [`Contact`], [`Caller`], [`Time`]. What else is public:
//! - [`fingerprint`]: peer identities (OpenPGP v4/v6 fingerprints);
//! - [`fingerprint_store`]: where a table keeps them (inline, or shared
//!   between the nodes of one simulation);
//! - [`distance`]: the XOR metric and bucket indices;
//! - [`subnet`]: Sybil limits (peers per IPv4 /24 or IPv6 /64);
//! - [`ratelimit`]: token buckets with the time passed in;
//! - [`address_votes`]: our public IP, from what several peers saw;
//! - [`reachability`]: whether peers can reach us, from several dial-backs;
//! - [`relay`]: relayed addresses, a relay's limits, an unreachable node's reservations;
//! - [`punch`]: hole punching (simultaneous TCP open) timed by the relayed round trip;
//! - [`node`]: the state machine that ties them together (events in, commands out);
//! - [`sync`]: the decisions of a friend file sync, a planner in the same style;
//! - [`wire`]: JSON peer records and RPC paths, as the Go implementation has them;
//! - [`config`]: the run-time parameters (K, α, STALL_PERIOD, ...);
//! - [`portmap`]: port mapping on the home gateway (PCP, NAT-PMP, UPnP IGD);
//! - [`TableView`]: a read-only view of the routing table.
//!
//! Inside (not public): the routing table (k-buckets, replacement caches,
//! staleness), one iterative lookup (α parallel), the outgoing budgets per
//! kind of request, and the answer-time estimator. Feature `internals`
//! exposes the first two to benchmarks and property tests; feature `testnet`
//! adds `testnet`, a deterministic in-memory network of nodes.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod address_votes;
pub mod advertise;
pub mod config;
mod dispatch;
pub mod distance;
pub mod expiring;
pub mod fingerprint;
pub mod fingerprint_store;
mod lookup;
pub mod node;
pub mod percentile;
pub mod portmap;
pub mod punch;
pub mod ratelimit;
pub mod reachability;
pub mod relay;
pub mod rng;
mod routing_table;
mod rtt;
pub mod subnet;
pub mod sync;
pub mod time;
pub mod wire;

pub use address_votes::{AddressChange, AddressVotes, VoteConfig, VoterGroup};
pub use config::{CallerProbes, Config, Termination};
pub use dispatch::{Budgets, RequestClass};
pub use distance::{BucketIndex, Distance, Key};
pub use fingerprint::{Fingerprint, FingerprintError};
pub use fingerprint_store::{CompactId, FingerprintStore, InlineFingerprints, SharedFingerprints};
pub use lookup::{LookupId, LookupKind, LookupOutcome};
pub use node::{
    Caller, Event, Node, NodeError, Output, Request, RequestId, Response, RpcFailure, Transmit,
};
pub use reachability::{Reach, ReachConfig, Reachability};
pub use rng::Rng;
pub use routing_table::{Bucket, Contact, Entry, Liveness, TableView};
pub use subnet::{HostIp, LimitScope, Subnet, SubnetLimits};
pub use time::{Stamp, Time};
pub use wire::{KadRoute, PeerAddress, PeerRecord, WireError};

#[cfg(feature = "testnet")]
pub mod testnet;

/// The building blocks of [`Node`], for benchmarks and property tests only:
/// no stability promise, and nothing an embedder needs.
#[cfg(feature = "internals")]
pub mod internals {
    pub use crate::lookup::{Lookup, TARGET_ATTEMPTS};
    pub use crate::routing_table::{FailedOutcome, Removed, RoutingTable, SeenOutcome};
}
