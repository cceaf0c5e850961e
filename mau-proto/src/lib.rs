//! # mau-proto: the sans-IO Kademlia core of Mau
//!
//! A pure, deterministic state machine: it takes events with the current time
//! passed in and emits commands. No sockets, no clock reads, no threads, no
//! global randomness, no async runtime. Same inputs, same outputs, so it can be
//! simulated at scale and fuzzed; the runtime adapters (`mau-smol`,
//! `mau-tokio`) only do the I/O.
//!
//! Where things live:
//! - [`fingerprint`]: peer identities (OpenPGP v4/v6 fingerprints);
//! - [`distance`]: the XOR metric and bucket indices;

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod distance;
pub mod fingerprint;
pub mod rng;
pub mod time;

pub use distance::{BucketIndex, Distance, Key};
pub use fingerprint::{Fingerprint, FingerprintError};
pub use rng::Rng;
pub use time::Time;
