//! A driver that feeds a [`SyncPlan`] any sequence of events (a hostile
//! friend, a failing disk, time) and checks, after every step, the
//! promises the plan makes. The property tests (`tests/prop_sync.rs`) and
//! the fuzz target (`fuzz/fuzz_targets/sync_plan.rs`) both drive it.
//!
//! Checked: commands only for listed files, each file started once and
//! ended once (installed, unchanged or given up); no more files worked on
//! than [`Limits::files_at_once`], no more requests in flight than the
//! concurrency; one listing request at a
//! time; no file asked for that does not fit the quota, and installed
//! bytes within it; a refused request not asked again before its
//! `Retry-After` (as capped by the policy); nothing retired from a listing
//! that may be cut; `last_sync` recorded only when every file arrived from
//! a whole listing; a staged file ([`Command::Stage`]) committed only
//! once, in a batch of at most [`BATCH_MAX`], and counted as installed
//! only after its commit, no more than [`MAX_UNCOMMITTED`] staged or
//! committing; [`Command::Done`] last and once; and, once the friend
//! answers, done within a bounded number of steps.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use super::{
    Abort, Command, Entry, Event, FetchError, FileId, FileOutcome, GiveUp, Limits, LocalState,
    Mode, Page, Report, Setup, SyncPlan, Target, BATCH_MAX, MAX_UNCOMMITTED,
};
use crate::time::Time;

mod input;

/// One thing the friend, the disk or time does. `pick` chooses among the
/// outstanding commands of the kind (modulo their number); with none
/// outstanding the event goes to an unknown or finished file.
#[derive(Clone, Debug)]
pub enum Op {
    /// The answer to the listing request (or a stray one).
    Page {
        /// Entries: (name number, size, whether the sum is valid, whether
        /// the path is a valid content file).
        entries: Vec<(u8, u64, bool, bool)>,
        /// 0: no link, 1: a fresh link, 2: a link to the page itself, 3: a
        /// link leaving the listing.
        next: u8,
        /// The end mark.
        end: bool,
        /// The friend's clock.
        date: Option<u64>,
    },
    /// A file's local state.
    Local {
        /// Which inspection.
        pick: u8,
        /// The local copy matches.
        same: bool,
        /// Partial bytes.
        partial: u64,
    },
    /// Bytes arrived.
    Progress {
        /// Which fetch.
        pick: u8,
        /// Bytes so far.
        got: u64,
    },
    /// A fetch ended well.
    Fetched {
        /// Which fetch.
        pick: u8,
        /// Bytes received.
        got: u64,
        /// Whether it resumed.
        resumed: bool,
    },
    /// An install, a stage, or one file of a commit ended well.
    Installed {
        /// Which install.
        pick: u8,
    },
    /// A fetch or install failed.
    Failed {
        /// Which (fetches first, then installs, then inspections).
        pick: u8,
        /// A 416 (else another error).
        range: bool,
        /// Bytes left on disk.
        kept: u64,
    },
    /// A refusal.
    Refused {
        /// `None`: the listing; else which fetch.
        pick: Option<u8>,
        /// 503 (else 429).
        unavailable: bool,
        /// `Retry-After` in milliseconds.
        retry_after: Option<u32>,
    },
    /// Time passes.
    Advance {
        /// Milliseconds.
        ms: u32,
    },
}

/// What the harness knows of one file.
#[derive(Clone, Debug, Default)]
struct Seen {
    size: u64,
    /// Bytes its start reserved (size less a partial download kept).
    need: u64,
    fetches: u32,
    not_before: Time,
    ended: bool,
}

/// A plan under test and what was seen of it.
#[derive(Debug)]
pub struct Harness {
    plan: SyncPlan,
    limits: Limits,
    local_bytes: u64,
    now: Time,
    list_out: bool,
    list_not_before: Time,
    last_link: String,
    links: u64,
    /// Entries handed to the plan in all pages.
    delivered: usize,
    inspects: Vec<FileId>,
    fetches: Vec<FileId>,
    /// Outstanding installs, stages and files of commits.
    installs: Vec<FileId>,
    /// Of `installs`, the files being staged.
    staging: BTreeSet<FileId>,
    /// Staged files waiting for their commit.
    staged: BTreeSet<FileId>,
    files: BTreeMap<FileId, Seen>,
    /// Bytes installed, and bytes the plan may re-use because a failed
    /// file's partial download may be gone.
    installed: u64,
    freed: u64,
    gave_up: usize,
    settled: usize,
    /// A page was neither linked nor marked as the last: the listing may
    /// be cut.
    unmarked: bool,
    /// The walk running got a `next` link.
    walk_paged: bool,
    done: Option<Result<Report, Abort>>,
}

fn sum_of(good: bool, n: u8) -> String {
    match good {
        true => format!("{:02x}", n % 3).repeat(32),
        false => "../zz".into(),
    }
}

impl Harness {
    /// A plan for `mode` under `limits`, over a directory holding
    /// `local_bytes`, the first names and partial downloads of some; its
    /// first commands checked.
    pub fn new(mode: Mode, limits: Limits, local_bytes: u64, seed: u64) -> Result<Self, String> {
        // A single fetch starts without a listing.
        let delivered = usize::from(matches!(mode, Mode::Fetch(_)));
        let local = LocalState {
            names: (0..4).map(|n| format!("f{n}.pgp")).collect(),
            partials: (0..3u8)
                .map(|n| (format!("f{n}.pgp"), sum_of(true, n)))
                .collect(),
            bytes: local_bytes,
        };
        let setup = Setup {
            mode,
            limits: limits.clone(),
            first_page: "/p2p/f?limit=5".into(),
            link_prefix: "/p2p/f?".into(),
            wall_clock: 1_000_000,
            seed,
        };
        let mut h = Harness {
            plan: SyncPlan::new(setup, local, Time::ZERO),
            limits,
            local_bytes,
            now: Time::ZERO,
            list_out: false,
            list_not_before: Time::ZERO,
            last_link: String::new(),
            links: 0,
            delivered,
            inspects: Vec::new(),
            fetches: Vec::new(),
            installs: Vec::new(),
            staging: BTreeSet::new(),
            staged: BTreeSet::new(),
            files: BTreeMap::new(),
            installed: 0,
            freed: 0,
            gave_up: 0,
            settled: 0,
            unmarked: false,
            walk_paged: false,
            done: None,
        };
        h.drain()?;
        Ok(h)
    }

    /// The plan's result, once it is done.
    pub fn result(&self) -> Option<&Result<Report, Abort>> {
        self.done.as_ref()
    }

    fn pick(list: &[FileId], pick: u8) -> Option<FileId> {
        match list.len() {
            0 => None,
            n => Some(list[usize::from(pick) % n]),
        }
    }

    /// Applies `op`, drains the plan and checks it.
    pub fn apply(&mut self, op: Op) -> Result<(), String> {
        let stray = FileId(u64::MAX);
        let event = match op {
            Op::Page {
                entries,
                next,
                end,
                date,
            } => {
                let entries: Vec<Entry> = entries
                    .into_iter()
                    .map(|(n, size, good, named)| {
                        let name = format!("f{}.pgp", n % 8);
                        Entry {
                            path: match named {
                                true => format!("/p2p/f/{name}"),
                                false => format!("/p2p/f/.x{n}"),
                            },
                            name: named.then_some(name),
                            size,
                            sum: sum_of(good, n),
                        }
                    })
                    .collect();
                let next = match next % 4 {
                    0 => None,
                    1 => {
                        self.links += 1;
                        if self.list_out {
                            self.walk_paged = true;
                        }
                        Some(format!("/p2p/f?after={}", self.links))
                    }
                    2 => Some(self.last_link.clone()),
                    _ => Some("/elsewhere".into()),
                };
                if self.list_out {
                    self.list_out = false;
                    self.delivered += entries.len();
                    if next.is_none() && !end && !self.walk_paged {
                        self.unmarked = true;
                    }
                }
                Event::Page(Page {
                    entries,
                    next,
                    end,
                    date,
                })
            }
            Op::Local {
                pick,
                same,
                partial,
            } => {
                let file = Self::pick(&self.inspects, pick).unwrap_or(stray);
                if let Some(i) = self.inspects.iter().position(|f| *f == file) {
                    self.inspects.remove(i);
                    let seen = self.files.entry(file).or_default();
                    let have = if partial > seen.size { 0 } else { partial };
                    seen.need = seen.size - have;
                }
                Event::Local {
                    file,
                    same,
                    partial,
                }
            }
            Op::Progress { pick, got } => Event::Progress {
                file: Self::pick(&self.fetches, pick).unwrap_or(stray),
                got,
            },
            Op::Fetched { pick, got, resumed } => {
                let file = Self::pick(&self.fetches, pick).unwrap_or(stray);
                self.fetches.retain(|f| *f != file);
                Event::Fetched { file, got, resumed }
            }
            Op::Installed { pick } => {
                let file = Self::pick(&self.installs, pick).unwrap_or(stray);
                self.installs.retain(|f| *f != file);
                if self.staging.remove(&file) {
                    self.staged.insert(file);
                    Event::Staged { file }
                } else {
                    Event::Installed { file }
                }
            }
            Op::Failed { pick, range, kept } => {
                let all: Vec<FileId> = self
                    .fetches
                    .iter()
                    .chain(&self.installs)
                    .chain(&self.inspects)
                    .copied()
                    .collect();
                let file = Self::pick(&all, pick).unwrap_or(stray);
                self.fetches.retain(|f| *f != file);
                self.installs.retain(|f| *f != file);
                self.staging.remove(&file);
                self.inspects.retain(|f| *f != file);
                let error = match range {
                    true => FetchError::RangeNotSatisfiable,
                    false => FetchError::Other("failed".into()),
                };
                Event::Failed { file, error, kept }
            }
            Op::Refused {
                pick,
                unavailable,
                retry_after,
            } => {
                let asked = retry_after.map(|ms| Duration::from_millis(u64::from(ms)));
                let wait = self.limits.retry.wait(asked);
                let target = match pick {
                    None => {
                        if self.list_out {
                            self.list_out = false;
                            self.list_not_before = self.now + wait;
                        }
                        Target::Listing
                    }
                    Some(p) => {
                        let file = Self::pick(&self.fetches, p).unwrap_or(stray);
                        if self.fetches.contains(&file) {
                            self.fetches.retain(|f| *f != file);
                            if let Some(s) = self.files.get_mut(&file) {
                                s.not_before = self.now + wait;
                            }
                        }
                        Target::File(file)
                    }
                };
                Event::Refused {
                    target,
                    status: if unavailable { 503 } else { 429 },
                    retry_after: asked,
                }
            }
            Op::Advance { ms } => {
                self.now = self.now + Duration::from_millis(u64::from(ms));
                self.plan.handle_timeout(self.now);
                return self.drain();
            }
        };
        self.plan.handle(event, self.now);
        self.drain()
    }

    /// The next well-behaved answer to an outstanding file command.
    fn file_answer(&self) -> Option<Op> {
        if !self.inspects.is_empty() {
            return Some(Op::Local {
                pick: 0,
                same: false,
                partial: 0,
            });
        }
        if let Some(f) = self.fetches.first() {
            let got = self.files.get(f).map_or(0, |s| s.size);
            return Some(Op::Fetched {
                pick: 0,
                got,
                resumed: false,
            });
        }
        (!self.installs.is_empty()).then_some(Op::Installed { pick: 0 })
    }

    /// Answers the outstanding file commands well (no local copies, whole
    /// bodies, installs), until none is left (at most 10,000 steps).
    pub fn finish_page(&mut self) -> Result<(), String> {
        for _ in 0..10_000 {
            match self.file_answer() {
                Some(op) => self.apply(op)?,
                None => return Ok(()),
            }
        }
        Err("files still outstanding after 10000 answers".into())
    }

    /// Answers every outstanding command well (an empty last page, no
    /// local copies, whole bodies) and lets time run to each timeout,
    /// for at most `steps` steps: the plan must be done by then.
    pub fn finish(&mut self, steps: usize) -> Result<(), String> {
        for _ in 0..steps {
            if self.done.is_some() {
                return Ok(());
            }
            let op = if self.list_out {
                Op::Page {
                    entries: vec![],
                    next: 0,
                    end: true,
                    date: None,
                }
            } else if let Some(op) = self.file_answer() {
                op
            } else {
                let Some(t) = self.plan.poll_timeout() else {
                    return Err("nothing outstanding, no timeout, not done".into());
                };
                let ms = t.as_millis().saturating_sub(self.now.as_millis());
                Op::Advance {
                    ms: u32::try_from(ms).unwrap_or(u32::MAX),
                }
            };
            self.apply(op)?;
        }
        match self.done {
            Some(_) => Ok(()),
            None => Err(format!("not done after {steps} answered steps")),
        }
    }

    /// Drains the plan's commands, checking each.
    fn drain(&mut self) -> Result<(), String> {
        while let Some(cmd) = self.plan.poll_command() {
            if self.done.is_some() {
                return Err(format!("{cmd:?} after Done"));
            }
            self.check(cmd)?;
        }
        let c = self.limits.concurrency.max(1);
        if self.plan.active() > self.limits.files_at_once() {
            return Err(format!("{} files worked on at once", self.plan.active()));
        }
        if self.plan.uncommitted() > MAX_UNCOMMITTED {
            return Err(format!(
                "{} files staged or committing",
                self.plan.uncommitted()
            ));
        }
        if self.plan.in_flight() > c || self.fetches.len() > c {
            return Err(format!(
                "{} requests in flight ({} fetches seen)",
                self.plan.in_flight(),
                self.fetches.len()
            ));
        }
        let room = self.limits.quota.saturating_sub(self.local_bytes);
        if self.installed > room.saturating_add(self.freed) {
            return Err(format!(
                "{} bytes installed, quota room {room} (+{} freed)",
                self.installed, self.freed
            ));
        }
        Ok(())
    }

    fn seen(&mut self, file: FileId, what: &str) -> Result<&mut Seen, String> {
        match self.files.get_mut(&file) {
            Some(s) if !s.ended => Ok(s),
            Some(_) => Err(format!("{what} for {file:?}, which has ended")),
            None => Err(format!("{what} for {file:?}, never listed")),
        }
    }

    fn end(&mut self, file: FileId) -> Result<(), String> {
        self.seen(file, "an end")?.ended = true;
        self.inspects.retain(|f| *f != file);
        self.fetches.retain(|f| *f != file);
        self.installs.retain(|f| *f != file);
        self.staging.remove(&file);
        self.staged.remove(&file);
        Ok(())
    }

    fn check(&mut self, cmd: Command) -> Result<(), String> {
        match cmd {
            Command::List { link, since } => {
                if self.list_out {
                    return Err("two listing requests at once".into());
                }
                if self.now < self.list_not_before {
                    return Err(format!(
                        "listing asked again at {:?}, before {:?}",
                        self.now, self.list_not_before
                    ));
                }
                if link == "/p2p/f?limit=5" && since.is_none() {
                    // A walk from the start (the names walk).
                    self.walk_paged = false;
                }
                self.list_out = true;
                self.last_link = link;
            }
            Command::Listed { .. } | Command::RemovePartial { .. } => {}
            Command::Inspect { file, entry, .. } => {
                if self.files.contains_key(&file) {
                    return Err(format!("{file:?} inspected twice"));
                }
                if self.files.len() >= self.delivered {
                    return Err(format!(
                        "{} files started, {} entries listed",
                        self.files.len() + 1,
                        self.delivered
                    ));
                }
                self.files.insert(
                    file,
                    Seen {
                        size: entry.size,
                        need: entry.size,
                        ..Seen::default()
                    },
                );
                self.inspects.push(file);
            }
            Command::Fetch { file, from } => {
                let (now, limits, freed) = (self.now, self.limits.clone(), self.freed);
                let room = limits.quota.saturating_sub(self.local_bytes);
                let s = self.seen(file, "a fetch")?;
                s.fetches += 1;
                if from > s.size {
                    return Err(format!("{file:?} fetched from {from}, past its size"));
                }
                if s.need > room.saturating_add(freed) {
                    return Err(format!(
                        "{file:?} needs {} over a room of {room} (+{freed} freed)",
                        s.need
                    ));
                }
                if now < s.not_before {
                    return Err(format!("{file:?} asked again before its Retry-After"));
                }
                if s.fetches > 2 * (limits.retry.max_retries + 1) {
                    return Err(format!("{file:?} fetched {} times", s.fetches));
                }
                self.fetches.push(file);
            }
            Command::Install { file } => {
                self.seen(file, "an install")?;
                self.fetches.retain(|f| *f != file);
                self.installs.push(file);
            }
            Command::Stage { file } => {
                self.seen(file, "a stage")?;
                self.fetches.retain(|f| *f != file);
                self.installs.push(file);
                self.staging.insert(file);
            }
            Command::Commit { files } => {
                if files.is_empty() || files.len() > BATCH_MAX {
                    return Err(format!("a commit of {} files", files.len()));
                }
                for file in files {
                    self.seen(file, "a commit")?;
                    if !self.staged.remove(&file) {
                        return Err(format!("{file:?} committed without being staged"));
                    }
                    self.installs.push(file);
                }
            }
            Command::Settled { file, outcome, .. } => {
                if self.staging.contains(&file)
                    || self.staged.contains(&file)
                    || self.installs.contains(&file)
                {
                    return Err(format!("{file:?} settled before its commit"));
                }
                if let FileOutcome::Downloaded { .. } = outcome {
                    let need = self.seen(file, "a settlement")?.need;
                    self.installed = self.installed.saturating_add(need);
                }
                self.end(file)?;
                self.settled += 1;
            }
            Command::GiveUp { file, reason, .. } => {
                if let GiveUp::BadSum(_) = reason {
                    // Never started: not seen before.
                    self.files.insert(file, Seen::default());
                }
                // A failed file may take its partial download with it
                // (removed to restart, or by the failure): the plan may
                // give those bytes back to the quota.
                let s = self.seen(file, "a give-up")?;
                let had = s.size - s.need;
                self.freed = self.freed.saturating_add(had);
                self.end(file)?;
                self.gave_up += 1;
            }
            Command::Retire { name } => {
                if self.unmarked {
                    return Err(format!("{name} retired on a listing that may be cut"));
                }
                if self.gave_up > 0 {
                    return Err(format!("{name} retired after a failure"));
                }
            }
            Command::Record { .. } => {
                if self.gave_up > 0 || self.files.values().any(|s| !s.ended) {
                    return Err("last_sync recorded with files missing".into());
                }
            }
            Command::Done(result) => {
                if let Ok(r) = &result {
                    if r.recorded.is_some() && (!r.complete || r.listing_truncated) {
                        return Err(format!("recorded an incomplete sync: {r:?}"));
                    }
                    if !r.retired.is_empty() && (r.stepped || r.listing_truncated) {
                        return Err(format!("retired from a listing that may be cut: {r:?}"));
                    }
                    if r.listed > self.limits.max_listed {
                        return Err(format!("{} entries past the bound", r.listed));
                    }
                    if let Some(f) = self.files.iter().find(|(_, s)| !s.ended) {
                        return Err(format!("done with {:?} unfinished", f.0));
                    }
                    if (r.downloaded + r.unchanged, r.failures) != (self.settled, self.gave_up) {
                        return Err(format!(
                            "report {r:?} against {} settled, {} given up",
                            self.settled, self.gave_up
                        ));
                    }
                }
                self.done = Some(result);
            }
        }
        Ok(())
    }
}
