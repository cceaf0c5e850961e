//! # mau-net: Mau's networking, written once for every async runtime
//!
//! The sans-IO core (`mau-proto`) decides; this crate carries its decisions
//! over mutual-TLS HTTPS. It is runtime-agnostic: it needs only a
//! [`Runtime`] (sockets, timers, spawning), which `mau-smol` and `mau-tokio`
//! provide.
//!
//! - [`runtime`]: the trait an adapter implements;
//! - [`node`]: a running node: the handle and the builder that starts its parts;
//! - `core` (private): the core handle (the sans-IO node behind a mutex, its
//!   clock, lookup waiters and the node's tasks);
//! - `driver` (private): sends what the core emits, fires its deadlines;
//! - `server` / `router` / `serve_context` (private): accept, TLS, HTTP, which
//!   path answers what, and the narrow view of the node they need;
//! - `limits` (private): the bookkeeping of the server's resource limits;
//! - [`client`]: pooled HTTPS client with the peer's fingerprint pinned;
//! - [`resolver`]: turning a fingerprint into addresses and a verified connection;
//! - `content` / [`sync`]: the `/p2p/` content routes and the friend sync client;
//! - [`control`]: the local control socket used by the `mau` command line;
//! - [`persist`]: the routing table on disk;
//! - [`reach`]: observed addresses, dial-backs and the reachability verdict;
//! - [`mdns`]: LAN discovery (mDNS-SD) and the LAN resolver;
//! - [`portmap`]: port mapping on the gateway (PCP, NAT-PMP, UPnP IGD) and
//!   IPv6 pinholes, around the sans-IO mapper of `mau_proto::portmap`;
//! - [`upnp`]: the UPnP IGD client, one of those three protocols;
//! - `relay` / `reservation` / `punch` (private): relaying streams between
//!   peers, holding reservations on relays, hole punching
//!   (docs/nat.md, "Relay and hole punching");
//! - [`metrics`]: opt-in operator metrics (Prometheus/OpenMetrics text).

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod address;
pub mod client;
pub mod config;
mod content;
pub mod control;
mod core;
mod driver;
mod error;
pub mod identity;
mod limits;
mod lock;
pub mod mdns;
pub mod metrics;
pub mod node;
pub mod persist;
mod pool;
pub mod portmap;
mod punch;
pub mod reach;
mod relay;
mod reservation;
pub mod resolver;
mod router;
pub mod runtime;
mod serve_context;
mod server;
pub mod sync;
mod upgraded;
pub mod upnp;

pub use client::{Client, ClientError};
pub use config::{parse_peer_spec, Limits, NodeConfig};
/// Which source addresses a limit counts (`Limits::per_ip_scope`), the
/// core's type.
pub use mau_proto::LimitScope;
pub use node::{NetError, RunningNode};
pub use runtime::Runtime;
