//! A hostile run read from raw bytes (a fuzzer's input): the mode, the
//! bounds, the directory and every [`Op`], each field taken from the next
//! bytes (zeros once they run out), so any input is a valid run.

use std::time::Duration;

use super::{Harness, Op};
use crate::sync::{Entry, Limits, Mode, RetryPolicy};

/// At most this many events a run, and entries a page: they bound a run's
/// time, not its reach.
const MAX_OPS: usize = 512;
const MAX_ENTRIES: usize = 16;

/// Answered steps the plan may take to end once the friend cooperates
/// (more than the property tests' 5,000: a fuzzer's runs are longer).
const FINISH_STEPS: usize = 20_000;

/// The bytes still to read.
struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn take<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0u8; N];
        let n = N.min(self.0.len());
        out[..n].copy_from_slice(&self.0[..n]);
        self.0 = &self.0[n..];
        out
    }

    fn u8(&mut self) -> u8 {
        self.take::<1>()[0]
    }

    fn bool(&mut self) -> bool {
        self.u8() & 1 == 1
    }

    fn u16(&mut self) -> u64 {
        u64::from(u16::from_le_bytes(self.take()))
    }

    fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.take())
    }

    fn u64(&mut self) -> u64 {
        u64::from_le_bytes(self.take())
    }

    /// `Some(read())` if the next byte is odd.
    fn option<T>(&mut self, read: impl FnOnce(&mut Self) -> T) -> Option<T> {
        self.bool().then(|| read(self))
    }

    fn mode(&mut self) -> Mode {
        match self.u8() % 3 {
            0 => Mode::Sync {
                since: self.option(|b| u64::from(b.u32())),
            },
            1 => Mode::List {
                since: self.option(|b| u64::from(b.u32())),
            },
            _ => Mode::Fetch(Entry {
                path: "/p2p/f/one.pgp".into(),
                name: Some("one.pgp".into()),
                size: self.u16(),
                sum: "ab".repeat(32),
            }),
        }
    }

    fn limits(&mut self) -> Limits {
        Limits {
            concurrency: usize::from(self.u8() % 8),
            max_listed: usize::from(self.u8()),
            max_requests: usize::from(self.u8()),
            quota: self.u16(),
            min_rate: self.u16(),
            slow_grace: Duration::from_millis(self.u16()),
            retry: RetryPolicy {
                max_retries: u32::from(self.u8() % 8),
                max_total_wait: Duration::from_secs(self.u16()),
                ..RetryPolicy::default()
            },
        }
    }

    fn op(&mut self) -> Op {
        match self.u8() % 8 {
            0 => Op::Page {
                entries: (0..usize::from(self.u8()) % (MAX_ENTRIES + 1))
                    .map(|_| (self.u8(), self.u16(), self.bool(), self.bool()))
                    .collect(),
                next: self.u8(),
                end: self.bool(),
                date: self.option(|b| u64::from(b.u32())),
            },
            1 => Op::Local {
                pick: self.u8(),
                same: self.bool(),
                partial: self.u16(),
            },
            2 => Op::Progress {
                pick: self.u8(),
                got: self.u16(),
            },
            3 => Op::Fetched {
                pick: self.u8(),
                got: self.u16(),
                resumed: self.bool(),
            },
            4 => Op::Installed { pick: self.u8() },
            5 => Op::Failed {
                pick: self.u8(),
                range: self.bool(),
                kept: self.u16(),
            },
            6 => Op::Refused {
                pick: self.option(Self::u8),
                unavailable: self.bool(),
                retry_after: self.option(Self::u32),
            },
            _ => Op::Advance { ms: self.u32() },
        }
    }
}

impl Harness {
    /// A new plan driven through `ops`, then answered well for at most
    /// `steps` steps ([`Harness::finish`]); every promise checked on the
    /// way. Returns the harness, done.
    pub fn run(
        mode: Mode,
        limits: Limits,
        local_bytes: u64,
        seed: u64,
        ops: impl IntoIterator<Item = Op>,
        steps: usize,
    ) -> Result<Harness, String> {
        let mut h = Harness::new(mode, limits, local_bytes, seed)?;
        for op in ops {
            h.apply(op)?;
        }
        h.finish(steps)?;
        Ok(h)
    }

    /// [`Harness::run`] with everything read from `data` (the fuzz target
    /// `sync_plan`): any input is a run, at most 512 events of at most 16
    /// entries a page.
    pub fn run_bytes(data: &[u8]) -> Result<Harness, String> {
        let mut b = Bytes(data);
        let (mode, limits) = (b.mode(), b.limits());
        let (local_bytes, seed) = (b.u16(), b.u64());
        let mut ops = Vec::new();
        while !b.0.is_empty() && ops.len() < MAX_OPS {
            ops.push(b.op());
        }
        Harness::run(mode, limits, local_bytes, seed, ops, FINISH_STEPS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_bytes_are_a_run_that_ends() {
        for data in [&[][..], &[0; 64], &[0xff; 300], b"a page, a refusal, time"] {
            let h = Harness::run_bytes(data).unwrap_or_else(|e| panic!("{data:?}: {e}"));
            assert!(h.result().is_some(), "{data:?}");
        }
    }

    #[test]
    fn bytes_read_past_the_end_are_zeros() {
        let mut b = Bytes(&[1, 2]);
        assert_eq!(b.u32(), 0x0201);
        assert_eq!((b.u8(), b.u64()), (0, 0));
    }
}
