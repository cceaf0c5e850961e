//! The event trace: a running hash of every step, in order.
//!
//! Two runs of one seed must give the same hash; any difference in which
//! task ran when, which connection opened, failed or carried how many bytes
//! shows up in it.

use std::time::Duration;

/// One step of the simulation.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Event {
    /// A task was spawned.
    Spawn { task: u64 },
    /// A task was polled.
    Poll { task: u64 },
    /// Virtual time jumped to the next timer.
    Advance,
    /// A host's process crashed.
    Crash { host: u128 },
    /// A connection was accepted by a listener.
    Connect { conn: u64, from: u128, to: u128 },
    /// A connection attempt was refused (nothing listens).
    Refused { from: u128, to: u128 },
    /// A SYN was lost (partition or loss); the connect retries.
    SynLost { from: u128, to: u128 },
    /// A connection was reset.
    Reset { conn: u64 },
    /// Bytes were written to a connection (`digest`: of their content).
    Write {
        conn: u64,
        side: u8,
        bytes: u64,
        digest: u64,
    },
    /// A partition began or healed.
    Partition { groups: u64 },
    /// A scenario-level mark (lookup results and the like).
    Mark { what: u64, value: u64 },
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0100_0000_01b3;

/// A digest of written bytes: FNV-1a over 8-byte words (little-endian, the
/// tail zero-padded) and the length; stable across builds, and a word at a
/// time because every byte of every run passes through it.
pub(crate) fn digest(data: &[u8]) -> u64 {
    let mut h = FNV_OFFSET ^ data.len() as u64;
    let mut words = data.chunks_exact(8);
    for w in &mut words {
        let mut b = [0u8; 8];
        b.copy_from_slice(w);
        h = (h ^ u64::from_le_bytes(b)).wrapping_mul(FNV_PRIME);
    }
    let mut tail = [0u8; 8];
    tail[..words.remainder().len()].copy_from_slice(words.remainder());
    (h ^ u64::from_le_bytes(tail)).wrapping_mul(FNV_PRIME)
}

/// The trace's hash and counts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Trace {
    /// FNV-1a (64-bit) over every event, in order.
    pub hash: u64,
    /// Events recorded.
    pub events: u64,
    /// Task polls among them.
    pub polls: u64,
    /// Bytes written over simulated connections.
    pub bytes: u64,
    /// A hash of every byte written, in order (TLS records as sent): also
    /// part of `hash`, kept apart to show that the wire replays.
    pub wire: u64,
    /// Connections opened.
    pub connects: u64,
}

impl Default for Trace {
    fn default() -> Self {
        Trace {
            hash: FNV_OFFSET,
            events: 0,
            polls: 0,
            bytes: 0,
            wire: FNV_OFFSET,
            connects: 0,
        }
    }
}

impl Trace {
    fn mix(&mut self, v: u128) {
        mix(&mut self.hash, v);
    }

    pub(crate) fn record(&mut self, at: Duration, e: Event) {
        self.events += 1;
        self.mix(at.as_nanos());
        let (tag, a, b, c): (u8, u128, u128, u128) = match e {
            Event::Spawn { task } => (1, task.into(), 0, 0),
            Event::Poll { task } => {
                self.polls += 1;
                (2, task.into(), 0, 0)
            }
            Event::Advance => (3, 0, 0, 0),
            Event::Crash { host } => (4, host, 0, 0),
            Event::Connect { conn, from, to } => {
                self.connects += 1;
                (5, conn.into(), from, to)
            }
            Event::Refused { from, to } => (6, from, to, 0),
            Event::SynLost { from, to } => (7, from, to, 0),
            Event::Reset { conn } => (8, conn.into(), 0, 0),
            Event::Write {
                conn,
                side,
                bytes,
                digest,
            } => {
                self.bytes += bytes;
                mix(&mut self.wire, digest.into());
                (
                    9,
                    conn.into(),
                    side.into(),
                    u128::from(bytes) << 64 | u128::from(digest),
                )
            }
            Event::Partition { groups } => (10, groups.into(), 0, 0),
            Event::Mark { what, value } => (11, what.into(), value.into(), 0),
        };
        self.mix(tag.into());
        self.mix(a);
        self.mix(b);
        self.mix(c);
    }
}

/// FNV-1a over the bytes of `v`.
fn mix(hash: &mut u64, v: u128) {
    for b in v.to_le_bytes() {
        *hash ^= u64::from(b);
        *hash = hash.wrapping_mul(FNV_PRIME);
    }
}
