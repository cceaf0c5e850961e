//! [`SyncPlan`]: the state machine of one sync (see the module docs of
//! [`crate::sync`]).

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use super::files::{self, File, FileOutcome, Install, Quota, Stage, Start};
use super::in_progress::InProgress;
use super::listing::{Ask, Walk};
use super::pacing::{Pacing, Retry};
use super::{
    Abort, Command, Entry, Event, FetchError, FileId, GiveUp, Limits, LocalState, Mode, Page,
    Report, Setup, Target, BATCH_MAX, MAX_UNCOMMITTED,
};
use crate::time::Time;

/// The listing request's state.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Asking {
    /// None outstanding.
    Idle,
    /// `ask` is out, after `retries` refusals.
    Out { ask: Ask, retries: u32 },
    /// Refused: `ask` goes out again at `until`.
    Waiting { ask: Ask, retries: u32, until: Time },
}

/// Which walk is running.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// The listing of what to fetch (or, in [`Mode::List`], to hand out).
    Listing,
    /// The whole listing's names only, to retire what it no longer names.
    Names,
    /// Fetching the one file of [`Mode::Fetch`].
    One,
    /// [`Command::Done`] was emitted.
    Over,
}

/// One sync's decisions: events in, commands out (see [`crate::sync`]).
#[derive(Debug)]
pub struct SyncPlan {
    limits: Limits,
    list_only: bool,
    since: Option<u64>,
    setup_links: (String, String),
    wall_clock: u64,
    phase: Phase,
    walk: Walk,
    names: Option<Walk>,
    asking: Asking,
    pacing: Pacing,
    quota: Quota,
    /// Files of the current page not yet started.
    queue: VecDeque<(FileId, String, Entry)>,
    /// Files being worked on (at most [`Limits::files_at_once`] of them
    /// not staged or committing, see [`SyncPlan::active`]).
    files: InProgress,
    next_id: u64,
    /// Local names no page named yet: what a whole listing retires.
    unlisted: BTreeSet<String>,
    /// Partial downloads found at the start, and those a listed entry
    /// continues.
    partials: BTreeSet<(String, String)>,
    resumable: BTreeSet<(String, String)>,
    report: Report,
    out: VecDeque<Command>,
}

impl SyncPlan {
    /// A plan for `setup`, over the friend's directory as `local` holds it,
    /// starting at `now` (its first commands are ready).
    pub fn new(setup: Setup, local: LocalState, now: Time) -> Self {
        let limits = setup.limits;
        let (since, list_only, one) = match setup.mode {
            Mode::Sync { since } => (since, false, None),
            Mode::List { since } => (since, true, None),
            Mode::Fetch(entry) => (None, false, Some(entry)),
        };
        let walk = Walk::new(
            setup.first_page.clone(),
            setup.link_prefix.clone(),
            since,
            limits.max_listed,
            limits.max_requests,
            setup.wall_clock,
        );
        let mut plan = SyncPlan {
            pacing: Pacing::new(limits.retry.clone(), limits.concurrency, setup.seed),
            quota: Quota::new(limits.quota, local.bytes),
            limits,
            list_only,
            since,
            setup_links: (setup.first_page, setup.link_prefix),
            wall_clock: setup.wall_clock,
            phase: Phase::Listing,
            walk,
            names: None,
            asking: Asking::Idle,
            queue: VecDeque::new(),
            files: InProgress::default(),
            next_id: 0,
            unlisted: local.names,
            partials: local.partials,
            resumable: BTreeSet::new(),
            report: Report::default(),
            out: VecDeque::new(),
        };
        match one {
            Some(entry) => {
                plan.phase = Phase::One;
                match entry.name.clone() {
                    Some(name) => plan.enqueue(name, entry),
                    None => {
                        plan.report.skip(entry.path);
                    }
                }
            }
            None => plan.ask_listing(),
        }
        plan.advance(now);
        plan
    }

    /// The next command, if any.
    pub fn poll_command(&mut self) -> Option<Command> {
        self.out.pop_front()
    }

    /// When [`SyncPlan::handle_timeout`] must be called next (a download's
    /// floor, the end of a `Retry-After` wait).
    pub fn poll_timeout(&self) -> Option<Time> {
        if self.phase == Phase::Over {
            return None;
        }
        let files = self.files.timed().filter_map(|(_, f)| match f.stage {
            Stage::Fetching { started, got, .. } => {
                Some(files::deadline(&self.limits, started, got))
            }
            Stage::Waiting { until, .. } => Some(until),
            _ => None,
        });
        let listing = match &self.asking {
            Asking::Waiting { until, .. } => Some(*until),
            _ => None,
        };
        files.chain(listing).min()
    }

    /// Whether [`Command::Done`] was emitted.
    pub fn is_over(&self) -> bool {
        self.phase == Phase::Over
    }

    /// Requests in flight (listing and fetches).
    pub fn in_flight(&self) -> usize {
        self.pacing.in_flight()
    }

    /// Files being worked on, less those staged or committing (at most
    /// [`Limits::files_at_once`]).
    pub fn active(&self) -> usize {
        self.files.len() - self.uncommitted()
    }

    /// Files staged or in a running commit (at most
    /// [`super::MAX_UNCOMMITTED`]).
    pub fn uncommitted(&self) -> usize {
        self.files.uncommitted()
    }

    /// The report so far.
    pub fn report(&self) -> &Report {
        &self.report
    }

    /// Time has come to `now`: too slow downloads give up, waits end.
    pub fn handle_timeout(&mut self, now: Time) {
        if self.phase == Phase::Over {
            return;
        }
        let (mut slow, mut waited) = (Vec::new(), Vec::new());
        for (id, f) in self.files.timed() {
            match f.stage {
                Stage::Fetching { from, started, got }
                    if files::deadline(&self.limits, started, got) <= now =>
                {
                    slow.push((id, from, started, got));
                }
                Stage::Waiting { from, until } if until <= now => waited.push((id, from)),
                _ => {}
            }
        }
        for (id, from) in waited {
            self.files.update(id, |f| f.stage = Stage::Ready { from });
        }
        for (id, from, started, got) in slow {
            self.pacing.end();
            // What stays on disk: what was there and what arrived.
            self.release(id, from.saturating_add(got));
            self.give_up(
                id,
                GiveUp::TooSlow {
                    got,
                    elapsed: now.since(started),
                    min_rate: self.limits.min_rate.max(1),
                },
            );
        }
        if let Asking::Waiting {
            ask,
            retries,
            until,
        } = &self.asking
        {
            if *until <= now {
                let (ask, retries) = (ask.clone(), *retries);
                self.send_list(ask, retries);
            }
        }
        self.advance(now);
    }

    /// Takes one event at `now`. Events that do not fit (an unknown file,
    /// an answer nobody asked for) are ignored.
    pub fn handle(&mut self, event: Event, now: Time) {
        if self.phase == Phase::Over {
            return;
        }
        match event {
            Event::Page(page) => self.on_page(page),
            Event::Local {
                file,
                same,
                partial,
            } => self.on_local(file, same, partial),
            Event::Progress { file, got } => {
                self.files.update(file, |f| {
                    if let Stage::Fetching { got: g, .. } = &mut f.stage {
                        *g = got;
                    }
                });
            }
            Event::Fetched { file, got, resumed } => {
                let step = self.files.update(file, |f| {
                    if !matches!(f.stage, Stage::Fetching { .. }) {
                        return None;
                    }
                    let step = match files::batched(&f.entry, resumed) {
                        true => Install::Staging,
                        false => Install::Alone,
                    };
                    f.stage = Stage::Installing { got, resumed, step };
                    Some(step)
                });
                if let Some(Some(step)) = step {
                    self.pacing.end();
                    self.out.push_back(match step {
                        Install::Staging => Command::Stage { file },
                        _ => Command::Install { file },
                    });
                }
            }
            Event::Staged { file } => {
                self.files.update(file, |f| {
                    if let Stage::Installing {
                        step: step @ Install::Staging,
                        ..
                    } = &mut f.stage
                    {
                        *step = Install::Staged;
                    }
                });
            }
            Event::Installed { file } => {
                if let Some(File {
                    stage:
                        Stage::Installing {
                            got,
                            resumed,
                            step: Install::Alone | Install::Committing,
                        },
                    ..
                }) = self.files.get(&file)
                {
                    let outcome = FileOutcome::Downloaded {
                        bytes: *got,
                        resumed: *resumed,
                    };
                    self.settle(file, outcome);
                }
            }
            Event::Failed { file, error, kept } => self.on_failed(file, error, kept),
            Event::Refused {
                target,
                status,
                retry_after,
            } => self.on_refused(target, status, retry_after, now),
        }
        self.advance(now);
    }

    fn on_page(&mut self, page: Page) {
        if !matches!(self.asking, Asking::Out { .. }) {
            return;
        }
        self.asking = Asking::Idle;
        self.pacing.end();
        let names_walk = self.phase == Phase::Names;
        let walk = match (names_walk, self.names.as_mut()) {
            (true, Some(w)) => w,
            _ => &mut self.walk,
        };
        let items = match walk.answer(page) {
            Err(a) => return self.done(Err(a)),
            Ok(None) => return self.ask_listing(),
            Ok(Some(items)) => items,
        };
        if names_walk {
            let stepped = walk.stepped;
            if stepped {
                // Not a server with pages after all: proves nothing.
                self.unlisted.clear();
                return self.finish_names();
            }
            for i in items {
                if let Some(n) = i.name {
                    self.unlisted.remove(&n);
                }
            }
            return self.ask_listing();
        }
        self.report.listed += items.len();
        if self.list_only {
            let bytes = items.iter().fold(0u64, |t, i| t.saturating_add(i.size));
            self.out.push_back(Command::Listed {
                files: items.len(),
                bytes,
                entries: items,
            });
            return self.ask_listing();
        }
        // One entry per name on a page (the last one wins).
        let mut by_name: BTreeMap<String, Entry> = BTreeMap::new();
        for item in items {
            match item.name.clone() {
                Some(n) => {
                    by_name.insert(n, item);
                }
                // Not a content file we may store: skipped, not an error.
                None => self.report.skip(item.path),
            }
        }
        let bytes = by_name.values().fold(0u64, |t, i| t.saturating_add(i.size));
        self.out.push_back(Command::Listed {
            entries: Vec::new(),
            files: by_name.len(),
            bytes,
        });
        for (name, entry) in by_name {
            self.unlisted.remove(&name);
            let key = (name.clone(), entry.sum.clone());
            if self.partials.contains(&key) {
                self.resumable.insert(key);
            }
            self.enqueue(name, entry);
        }
        // An empty page: on to the next (`advance` does it).
    }

    fn enqueue(&mut self, name: String, entry: Entry) {
        let id = FileId(self.next_id);
        self.next_id += 1;
        self.queue.push_back((id, name, entry));
    }

    fn on_local(&mut self, id: FileId, same: bool, partial: u64) {
        let Some(f) = self.files.get(&id) else {
            return;
        };
        if f.stage != Stage::Inspecting {
            return;
        }
        match files::start(&f.entry, same, partial, &mut self.quota) {
            Start::Unchanged => self.settle(id, FileOutcome::Unchanged),
            Start::GiveUp(why) => self.give_up(id, why),
            Start::Install => {
                self.files.update(id, |f| {
                    f.stage = Stage::Installing {
                        got: 0,
                        resumed: true,
                        step: Install::Alone,
                    }
                });
                self.out.push_back(Command::Install { file: id });
            }
            Start::Fetch { from, drop_partial } => {
                if drop_partial {
                    self.out.push_back(Command::RemovePartial {
                        name: f.name.clone(),
                        sum: f.entry.sum.clone(),
                    });
                }
                self.files.update(id, |f| f.stage = Stage::Ready { from });
            }
        }
    }

    fn on_failed(&mut self, id: FileId, error: FetchError, kept: u64) {
        let Some(f) = self.files.get(&id) else {
            return;
        };
        let reserved = match f.stage {
            Stage::Inspecting => false,
            Stage::Fetching { from, .. } => {
                self.pacing.end();
                if error == FetchError::RangeNotSatisfiable && from > 0 && !f.restarted {
                    // The partial download does not fit the file any more:
                    // start over, once.
                    self.out.push_back(Command::RemovePartial {
                        name: f.name.clone(),
                        sum: f.entry.sum.clone(),
                    });
                    self.files.update(id, |f| {
                        f.restarted = true;
                        f.retries = 0;
                        f.stage = Stage::Ready { from: 0 };
                    });
                    return;
                }
                true
            }
            Stage::Installing { .. } => true,
            _ => return,
        };
        if reserved {
            // What did not stay on disk goes back to the quota.
            self.release(id, kept);
        }
        let why = match error {
            FetchError::RangeNotSatisfiable => "416 range not satisfiable".to_string(),
            FetchError::Other(why) => why,
        };
        self.give_up(id, GiveUp::Failed(why));
    }

    fn on_refused(
        &mut self,
        target: Target,
        status: u16,
        asked: Option<std::time::Duration>,
        now: Time,
    ) {
        match target {
            Target::Listing => {
                let Asking::Out { ask, retries } = &self.asking else {
                    return;
                };
                let (ask, retries) = (ask.clone(), *retries);
                match self.pacing.refusal(status, asked, retries) {
                    Retry::After(wait) => {
                        self.asking = Asking::Waiting {
                            ask,
                            retries: retries + 1,
                            until: now + wait,
                        }
                    }
                    Retry::GiveUp => {
                        self.asking = Asking::Idle;
                        self.done(Err(Abort::Throttled { status, retries }))
                    }
                }
            }
            Target::File(id) => {
                let Some(f) = self.files.get(&id) else {
                    return;
                };
                let Stage::Fetching { from, .. } = f.stage else {
                    return;
                };
                match self.pacing.refusal(status, asked, f.retries) {
                    Retry::After(wait) => {
                        self.files.update(id, |f| {
                            f.retries += 1;
                            f.stage = Stage::Waiting {
                                from,
                                until: now + wait,
                            };
                        });
                    }
                    Retry::GiveUp => {
                        let retries = f.retries;
                        // Nothing was written.
                        self.release(id, from);
                        self.give_up(id, GiveUp::Throttled { status, retries });
                    }
                }
            }
        }
    }

    /// Gives back a file's reservation, less the `kept` bytes on disk.
    fn release(&mut self, id: FileId, kept: u64) {
        if let Some(f) = self.files.get(&id) {
            self.quota.release(f.entry.size.saturating_sub(kept));
        }
    }

    fn settle(&mut self, id: FileId, outcome: FileOutcome) {
        let Some(f) = self.files.remove(&id) else {
            return;
        };
        match &outcome {
            FileOutcome::Unchanged => self.report.unchanged += 1,
            FileOutcome::Downloaded { bytes, resumed } => {
                self.report.downloaded += 1;
                self.report.bytes = self.report.bytes.saturating_add(*bytes);
                self.report.resumed += usize::from(*resumed);
            }
        }
        self.out.push_back(Command::Settled {
            file: id,
            name: f.name,
            outcome,
        });
    }

    fn give_up(&mut self, id: FileId, reason: GiveUp) {
        let Some(f) = self.files.remove(&id) else {
            return;
        };
        self.report.fail(f.name.clone(), reason.clone());
        self.out.push_back(Command::GiveUp {
            file: id,
            name: f.name,
            reason,
        });
    }

    /// Starts what there is room for; asks for the next page, or finishes,
    /// when the current one is done.
    fn advance(&mut self, now: Time) {
        if self.phase == Phase::Over {
            return;
        }
        // Counted once, not per file taken (each count walks every file).
        // Every active file may end up staged, so they count against the
        // bound on uncommitted files too.
        let uncommitted = self.uncommitted();
        let mut active = self.files.len() - uncommitted;
        while active < self.limits.files_at_once() && active + uncommitted < MAX_UNCOMMITTED {
            let Some((id, name, entry)) = self.queue.pop_front() else {
                break;
            };
            if !super::is_sum(&entry.sum) {
                // Never looked at: the sum names the partial download.
                let reason = GiveUp::BadSum(entry.sum);
                self.report.fail(name.clone(), reason.clone());
                self.out.push_back(Command::GiveUp {
                    file: id,
                    name,
                    reason,
                });
                continue;
            }
            self.out.push_back(Command::Inspect {
                file: id,
                name: name.clone(),
                entry: entry.clone(),
            });
            let file = File {
                name,
                entry,
                stage: Stage::Inspecting,
                retries: 0,
                restarted: false,
            };
            self.files.insert(id, file);
            active += 1;
        }
        while self.pacing.has_room() {
            let Some(id) = self.files.first_ready() else {
                break;
            };
            let from = self.files.update(id, |f| {
                let Stage::Ready { from } = f.stage else {
                    return None;
                };
                f.stage = Stage::Fetching {
                    from,
                    started: now,
                    got: 0,
                };
                Some(from)
            });
            let Some(Some(from)) = from else {
                break;
            };
            self.pacing.start();
            self.out.push_back(Command::Fetch { file: id, from });
        }
        self.commit_staged();
        let page_done = self.files.is_empty() && self.queue.is_empty();
        if page_done && self.asking == Asking::Idle {
            match self.phase {
                Phase::One => self.done(Ok(())),
                Phase::Listing | Phase::Names => self.ask_listing(),
                Phase::Over => {}
            }
        }
    }

    /// Commits the staged files when [`files::commit_now`] says so, a
    /// batch of at most [`BATCH_MAX`] at a time.
    fn commit_staged(&mut self) {
        while files::commit_now(self.files.staged_count(), self.files.on_the_way()) {
            let staged: Vec<FileId> = self.files.staged().take(BATCH_MAX).collect();
            for id in &staged {
                self.files.update(*id, |f| {
                    if let Stage::Installing { step, .. } = &mut f.stage {
                        *step = Install::Committing;
                    }
                });
            }
            self.out.push_back(Command::Commit { files: staged });
        }
    }

    /// Asks the running walk for its next request, or ends the walk.
    fn ask_listing(&mut self) {
        if self.asking != Asking::Idle || self.phase == Phase::Over {
            return;
        }
        let walk = match (self.phase, self.names.as_mut()) {
            (Phase::Names, Some(w)) => w,
            _ => &mut self.walk,
        };
        match walk.ask() {
            Err(a) => self.done(Err(a)),
            Ok(Some(ask)) => self.send_list(ask, 0),
            Ok(None) if self.phase == Phase::Names => self.finish_names(),
            Ok(None) => self.walk_over(),
        }
    }

    fn send_list(&mut self, ask: Ask, retries: u32) {
        self.pacing.start();
        self.out.push_back(Command::List {
            link: ask.link.clone(),
            since: ask.since,
        });
        self.asking = Asking::Out { ask, retries };
    }

    /// The listing of what to fetch is over, and every file is done.
    fn walk_over(&mut self) {
        let w = &self.walk;
        self.report.listing_requests = w.requests();
        self.report.stepped = w.stepped;
        self.report.listing_truncated = w.truncated;
        self.report.server_time = w.server_time;
        if self.list_only {
            return self.done(Ok(()));
        }
        // The listing was read to its end: partial downloads of files it
        // does not name (changed or withdrawn since) will never resume.
        if !w.truncated {
            for (name, sum) in std::mem::take(&mut self.partials) {
                if !self.resumable.contains(&(name.clone(), sum.clone())) {
                    self.out.push_back(Command::RemovePartial { name, sum });
                    self.report.stale_partials += 1;
                }
            }
        }
        self.report.complete = self.report.failures == 0 && !w.truncated;
        if self.report.complete && !w.stepped && self.since.is_some() {
            // An incremental listing cannot tell a withdrawn file from an
            // unchanged one: read the names of the whole listing
            // (downloading nothing).
            let (first, prefix) = self.setup_links.clone();
            self.names = Some(Walk::new(
                first,
                prefix,
                None,
                self.limits.max_listed,
                self.limits.max_requests,
                self.wall_clock,
            ));
            self.phase = Phase::Names;
            return self.ask_listing();
        }
        self.record();
    }

    fn finish_names(&mut self) {
        if let Some(n) = self.names.take() {
            self.report.listing_requests += n.requests();
        }
        self.record();
    }

    /// Retires what a whole listing no longer names, and records the sync
    /// if it is complete.
    fn record(&mut self) {
        if self.report.complete {
            // Only a listing known to be whole (all of it, from a server
            // with pages) may retire anything: a cut one would retire
            // files the friend still shares.
            if !self.walk.stepped {
                for name in std::mem::take(&mut self.unlisted) {
                    self.out.push_back(Command::Retire { name: name.clone() });
                    self.report.retired.push(name);
                }
            }
            let mark = if self.walk.stepped {
                // Every file before the second the walk reached was listed.
                self.walk.reached
            } else {
                // The friend's clock, less a second (HTTP dates have 1 s
                // resolution), so clock skew cannot hide files.
                self.walk
                    .server_time
                    .unwrap_or(self.wall_clock)
                    .saturating_sub(1)
            };
            self.out.push_back(Command::Record { mark });
            self.report.recorded = Some(mark);
        }
        self.done(Ok(()));
    }

    fn done(&mut self, result: Result<(), Abort>) {
        self.report.throttled = self.pacing.refused();
        self.phase = Phase::Over;
        self.queue.clear();
        for (id, f) in std::mem::take(&mut self.files).into_files() {
            // Only after an abort: nothing may stay running.
            let reason = GiveUp::Failed("sync stopped".into());
            self.report.fail(f.name.clone(), reason.clone());
            self.out.push_back(Command::GiveUp {
                file: id,
                name: f.name,
                reason,
            });
        }
        let result = result.map(|()| self.report.clone());
        self.out.push_back(Command::Done(result));
    }
}
