//! The I/O shell around a [`SyncPlan`]: carries out its commands (listing
//! requests, file checks, downloads, installs, removals, the sync state)
//! and feeds what happened back as events. Requests and downloads run
//! concurrently on the current task; file I/O runs on
//! [`Runtime::run_blocking`]. Nothing here decides anything.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, UNIX_EPOCH};

use mau_proto::sync::{
    Command, Event, FetchError, FileId, FileOutcome, GiveUp, LocalState, Report, SyncPlan,
};
use mau_proto::Time;
use mau_store::StoreError;
use tracing::{debug, info, warn};

use super::download::{self, Fetched};
use super::listing::item;
use super::report::{Outcome, MAX_NAMED};
use super::{FriendClient, Progress, SyncError};
use crate::content::ListItem;
use crate::runtime::Runtime;

/// A listed file the plan is working on.
struct Slot {
    name: String,
    item: ListItem,
    partial: PathBuf,
    /// What its download left, until it is installed.
    fetched: Option<Fetched>,
    /// Its last error, for the report.
    error: Option<SyncError>,
    /// Bytes of the running download (read for the throughput floor).
    got: Arc<AtomicU64>,
    /// `got` as last told to the plan.
    told: u64,
}

/// What a running task ended with.
enum Done {
    Listing(Result<Event, SyncError>),
    Event(Event),
    Fetched {
        file: FileId,
        fetched: Fetched,
    },
    Failed {
        file: FileId,
        error: SyncError,
        kept: u64,
    },
    /// A commit's files: installed, or why not and the bytes left.
    Committed(Vec<(FileId, Result<(), Lost>)>),
}

/// Why a file of a commit was not installed, and the bytes it left.
type Lost = (SyncError, u64);

type Task<'a> = Pin<Box<dyn Future<Output = Done> + Send + 'a>>;

/// What a run leaves.
#[derive(Default)]
pub(super) struct Ran {
    /// The plan's report.
    pub(super) report: Report,
    /// Every listed entry ([`mau_proto::sync::Mode::List`] only).
    pub(super) listed: Vec<ListItem>,
    /// The first file's error ([`mau_proto::sync::Mode::Fetch`]).
    pub(super) error: Option<SyncError>,
}

/// How [`FriendClient::run`] carries out commands.
#[derive(Clone, Copy)]
struct Env<'a, 'b> {
    progress: &'a dyn Progress,
    /// Keep the listed entries.
    collect: bool,
    /// What the friend's directory held when the sync started (its scan):
    /// a file with neither a copy nor a partial download then is inspected
    /// without a blocking task (one thread hop less per new file). A file
    /// put there since (by a second sync of the same friend at once) is
    /// downloaded again, its copy kept as a version.
    scanned: Option<&'b LocalState>,
}

/// A progress observer that also counts the bytes of one download.
struct Counting<'a> {
    inner: &'a dyn Progress,
    got: Arc<AtomicU64>,
}

impl Progress for Counting<'_> {
    fn bytes(&self, n: u64) {
        self.got.fetch_add(n, Ordering::Relaxed);
        self.inner.bytes(n);
    }
}

impl<R: Runtime> FriendClient<R> {
    /// Runs `plan` to its end. `collect`: keep the listed entries.
    /// `scanned`: what the directory held when the plan started (a sync's
    /// scan), see [`Env::scanned`].
    pub(super) async fn run(
        &self,
        mut plan: SyncPlan,
        progress: &dyn Progress,
        collect: bool,
        scanned: Option<&LocalState>,
    ) -> Result<Ran, SyncError> {
        let rt = &self.rt;
        let clock = rt.now();
        let now = || Time::from_duration(rt.now().saturating_duration_since(clock));
        let mut slots: BTreeMap<FileId, Slot> = BTreeMap::new();
        let mut tasks: Vec<(Option<FileId>, Task<'_>)> = Vec::new();
        let mut ran = Ran::default();
        loop {
            while let Some(cmd) = plan.poll_command() {
                if let Command::Done(result) = cmd {
                    ran.report = result.map_err(|a| self.abort_error(a))?;
                    return Ok(ran);
                }
                let env = Env {
                    progress,
                    collect,
                    scanned,
                };
                self.execute(cmd, &mut slots, &mut tasks, env, &mut ran)
                    .await?;
            }
            let sleep = plan
                .poll_timeout()
                .map(|t| Box::pin(self.rt.sleep(t.since(now()))));
            if tasks.is_empty() && sleep.is_none() {
                return Err(self.protocol("sync plan stalled"));
            }
            let done = next_done(&mut tasks, sleep).await;
            // The bytes that arrived first: the floor is judged on them
            // (only downloads that moved: every event is a plan step).
            for (file, slot) in &mut slots {
                let got = slot.got.load(Ordering::Relaxed);
                if got != slot.told {
                    slot.told = got;
                    plan.handle(Event::Progress { file: *file, got }, now());
                }
            }
            let Some(done) = done else {
                plan.handle_timeout(now());
                continue;
            };
            let events = match done {
                Done::Committed(files) => files
                    .into_iter()
                    .map(|(file, r)| match r {
                        Ok(()) => Event::Installed { file },
                        Err((error, kept)) => failed(&mut slots, file, error, kept),
                    })
                    .collect(),
                Done::Listing(r) => vec![r?],
                Done::Event(e) => vec![e],
                Done::Fetched { file, fetched } => {
                    let (got, resumed) = (fetched.got, fetched.resumed);
                    if let Some(s) = slots.get_mut(&file) {
                        s.fetched = Some(fetched);
                    }
                    vec![Event::Fetched { file, got, resumed }]
                }
                Done::Failed { file, error, kept } => vec![failed(&mut slots, file, error, kept)],
            };
            for event in events {
                plan.handle(event, now());
            }
        }
    }

    /// Carries out one command: starts a task, or does a short one here.
    async fn execute<'a>(
        &'a self,
        cmd: Command,
        slots: &mut BTreeMap<FileId, Slot>,
        tasks: &mut Vec<(Option<FileId>, Task<'a>)>,
        env: Env<'a, '_>,
        ran: &mut Ran,
    ) -> Result<(), SyncError> {
        let fpr = self.peer.fingerprint;
        let progress = env.progress;
        match cmd {
            Command::List { link, since } => {
                let task = async move { Done::Listing(self.ask_page(&link, since).await) };
                tasks.push((None, Box::pin(task)));
            }
            Command::Listed {
                entries,
                files,
                bytes,
            } => match env.collect {
                true => ran.listed.extend(entries.iter().map(item)),
                false => progress.listed(files, bytes),
            },
            Command::Inspect { file, name, entry } => {
                // The plan checked the sum: it names the partial file.
                let partial = self.store.partial_path(&fpr, &name, &entry.sum);
                let slot = Slot {
                    item: item(&entry),
                    partial: partial.clone(),
                    name: name.clone(),
                    fetched: None,
                    error: None,
                    got: Arc::default(),
                    told: 0,
                };
                slots.insert(file, slot);
                if env.scanned.is_some_and(|s| {
                    !s.names.contains(&name)
                        && !s.partials.contains(&(name.clone(), entry.sum.clone()))
                }) {
                    // Neither a copy nor a partial download when the sync
                    // started: nothing on the disk to look at.
                    let absent = Event::Local {
                        file,
                        same: false,
                        partial: 0,
                    };
                    tasks.push((Some(file), Box::pin(async move { Done::Event(absent) })));
                    return Ok(());
                }
                let local = self.store.dir_of(&fpr).join(&name);
                let store = self.store.clone();
                let task = async move {
                    // One blocking task: the local copy's size and sum, and
                    // what a partial download holds.
                    let checked = self
                        .blocking(move || {
                            let same = local.is_file()
                                && store
                                    .meta(&local)
                                    .is_ok_and(|(e, m)| e.size == entry.size && m.sum == entry.sum);
                            let partial = std::fs::metadata(&partial).map_or(0, |m| m.len());
                            (same, partial)
                        })
                        .await;
                    match checked {
                        Ok((same, partial)) => Done::Event(Event::Local {
                            file,
                            same,
                            partial,
                        }),
                        Err(error) => Done::Failed {
                            file,
                            error,
                            kept: 0,
                        },
                    }
                };
                tasks.push((Some(file), Box::pin(task)));
            }
            Command::RemovePartial { name, sum } => {
                self.remove(&self.store.partial_path(&fpr, &name, &sum))
                    .await?;
            }
            Command::Fetch { file, from } => {
                let Some(slot) = slots.get_mut(&file) else {
                    return Ok(());
                };
                // The plan starts a fetch at 0 bytes.
                slot.got.store(0, Ordering::Relaxed);
                slot.told = 0;
                let counting = Counting {
                    inner: progress,
                    got: slot.got.clone(),
                };
                let (item, name, partial) =
                    (slot.item.clone(), slot.name.clone(), slot.partial.clone());
                let task = async move {
                    match self
                        .download_to(&item, &name, &partial, from, &counting)
                        .await
                    {
                        Ok(fetched) => Done::Fetched { file, fetched },
                        Err(SyncError::Refused {
                            status,
                            retry_after,
                            ..
                        }) => Done::Event(Event::Refused {
                            target: mau_proto::sync::Target::File(file),
                            status,
                            retry_after,
                        }),
                        Err(error) => {
                            let kept = self.len_on_disk(&partial).await.unwrap_or(0);
                            Done::Failed { file, error, kept }
                        }
                    }
                };
                tasks.push((Some(file), Box::pin(task)));
            }
            Command::Install { file } | Command::Stage { file } => {
                let stage = matches!(cmd, Command::Stage { .. });
                let Some(slot) = slots.get_mut(&file) else {
                    return Ok(());
                };
                // No download: the partial file already held the whole file.
                let fetched = slot.fetched.take().unwrap_or(Fetched {
                    got: 0,
                    resumed: true,
                    sum: None,
                    verified: false,
                    memory: None,
                });
                let (item, name, partial) =
                    (slot.item.clone(), slot.name.clone(), slot.partial.clone());
                let task = async move {
                    let done = match stage {
                        true => self.stage(item, partial.clone(), fetched).await,
                        false => self.install(item, name, partial.clone(), fetched).await,
                    };
                    match done {
                        Ok(()) if stage => Done::Event(Event::Staged { file }),
                        Ok(()) => Done::Event(Event::Installed { file }),
                        Err(error) => {
                            let kept = self.len_on_disk(&partial).await.unwrap_or(0);
                            Done::Failed { file, error, kept }
                        }
                    }
                };
                tasks.push((Some(file), Box::pin(task)));
            }
            Command::Commit { files } => {
                let batch: Vec<(FileId, mau_store::Staged)> = files
                    .iter()
                    .filter_map(|f| {
                        let s = slots.get(f)?;
                        let staged = mau_store::Staged {
                            name: s.name.clone(),
                            partial: s.partial.clone(),
                        };
                        Some((*f, staged))
                    })
                    .collect();
                let store = self.store.clone();
                let task = async move {
                    let (ids, staged): (Vec<_>, Vec<_>) = batch.into_iter().unzip();
                    let n = staged.len();
                    let committed = self
                        .blocking(move || {
                            let results = store.commit_downloads(&fpr, &staged);
                            // What a failed file left (its partial file
                            // is removed unless it was renamed).
                            results
                                .into_iter()
                                .zip(&staged)
                                .map(|(r, s)| {
                                    r.map(|_| ()).map_err(|e| {
                                        let kept =
                                            std::fs::metadata(&s.partial).map_or(0, |m| m.len());
                                        (SyncError::Store(e), kept)
                                    })
                                })
                                .collect::<Vec<_>>()
                        })
                        .await;
                    let results = match committed {
                        Ok(r) => r,
                        Err(_) => (0..n).map(|_| Err((SyncError::Blocking, 0))).collect(),
                    };
                    Done::Committed(ids.into_iter().zip(results).collect())
                };
                // One task for the batch: a file given up (only when the
                // whole sync stops) does not stop the others' commit.
                tasks.push((None, Box::pin(task)));
            }
            Command::Settled {
                file,
                name,
                outcome,
            } => {
                slots.remove(&file);
                let outcome = match outcome {
                    FileOutcome::Unchanged => Outcome::Unchanged,
                    FileOutcome::Downloaded { bytes, resumed } => {
                        debug!(peer = %fpr, file = ?name, bytes, resumed, "file installed");
                        Outcome::Downloaded { bytes, resumed }
                    }
                };
                progress.file_done(&name, &Ok(outcome));
            }
            Command::GiveUp { file, name, reason } => {
                // Whatever still runs for it stops (a partial file stays).
                tasks.retain(|(f, _)| *f != Some(file));
                let error = slots.remove(&file).and_then(|s| s.error);
                let error = self.give_up_error(reason, error);
                // A hostile listing can fail a million files: the first
                // ones are logged as warnings.
                if ran.report.failures < MAX_NAMED {
                    warn!(peer = %fpr, file = ?name, error = %error, "file not synced");
                } else {
                    debug!(peer = %fpr, file = ?name, error = %error, "file not synced");
                }
                ran.report.failures += 1;
                progress.file_done(&name, &Err(error.to_string()));
                ran.error.get_or_insert(error);
            }
            Command::Retire { name } => {
                let store = self.store.clone();
                let n = name.clone();
                self.blocking(move || store.retire(&fpr, &n)).await??;
                info!(peer = %fpr, file = ?name, "no longer shared: moved to its versions");
            }
            Command::Record { mark } => {
                let store = self.store.clone();
                let at = UNIX_EPOCH + Duration::from_secs(mark);
                self.blocking(move || store.record_sync(fpr, at)).await??;
            }
            Command::Done(_) => {}
        }
        Ok(())
    }

    /// Checks (a small file, from memory) and installs a download, on one
    /// blocking task.
    async fn install(
        &self,
        item: ListItem,
        name: String,
        partial: PathBuf,
        fetched: Fetched,
    ) -> Result<(), SyncError> {
        let (store, fpr) = (self.store.clone(), self.peer.fingerprint);
        let (size, sum) = (item.size, item.sum.clone());
        self.blocking(
            move || match (fetched.memory, fetched.sum, fetched.verified) {
                (Some(bytes), _, _) => {
                    let hashed = download::check_and_write(&store, &fpr, &item, &bytes, &partial)?;
                    store.accept_download_verified(&fpr, &name, &partial, size, &sum, hashed)
                }
                (None, Some(hashed), true) => {
                    store.accept_download_verified(&fpr, &name, &partial, size, &sum, hashed)
                }
                (None, hashed, _) => {
                    store.accept_download_hashed(&fpr, &name, &partial, size, &sum, hashed)
                }
            },
        )
        .await?
        .map(|_| ())
        .map_err(|e: StoreError| e.into())
    }

    /// Checks a download (a small file, from memory) and writes it to its
    /// partial file, not yet durable: its [`Command::Commit`] installs it
    /// with the rest of its batch. One blocking task.
    async fn stage(
        &self,
        item: ListItem,
        partial: PathBuf,
        fetched: Fetched,
    ) -> Result<(), SyncError> {
        let (store, fpr) = (self.store.clone(), self.peer.fingerprint);
        self.blocking(move || {
            match (fetched.memory, fetched.sum, fetched.verified) {
                (Some(bytes), _, _) => {
                    download::check_and_write(&store, &fpr, &item, &bytes, &partial).map(|_| ())
                }
                (None, hashed, verified) => {
                    store.check_download(&fpr, &partial, item.size, &item.sum, hashed, verified)
                }
            }?;
            store.staged(&partial, mau_store::Flush::best())
        })
        .await?
        .map_err(SyncError::from)
    }

    /// The error a file gave up with.
    pub(super) fn give_up_error(&self, reason: GiveUp, error: Option<SyncError>) -> SyncError {
        let peer = self.peer.fingerprint;
        match reason {
            GiveUp::BadSum(sum) => self.protocol(format!("bad sum {sum:?}")),
            GiveUp::OverQuota {
                needed,
                used,
                quota,
            } => SyncError::OverQuota {
                needed,
                used,
                quota,
            },
            GiveUp::TooSlow {
                got,
                elapsed,
                min_rate,
            } => SyncError::TooSlow {
                got,
                elapsed,
                min_rate,
            },
            GiveUp::Throttled { status, retries } => SyncError::Throttled {
                peer,
                status,
                retries,
            },
            GiveUp::Failed(why) => error.unwrap_or_else(|| self.protocol(why)),
        }
    }
}

/// The event for a failed file (its error kept for the report).
fn failed(slots: &mut BTreeMap<FileId, Slot>, file: FileId, error: SyncError, kept: u64) -> Event {
    let kind = match error {
        SyncError::RangeRefused { .. } => FetchError::RangeNotSatisfiable,
        ref e => FetchError::Other(e.to_string()),
    };
    if let Some(s) = slots.get_mut(&file) {
        s.error = Some(error);
    }
    Event::Failed {
        file,
        error: kind,
        kept,
    }
}

/// The next task to end (`None`: `sleep` ended first).
async fn next_done<'a, S: Future<Output = ()> + Unpin>(
    tasks: &mut Vec<(Option<FileId>, Task<'a>)>,
    mut sleep: Option<S>,
) -> Option<Done> {
    futures_lite::future::poll_fn(move |cx| {
        for i in 0..tasks.len() {
            if let Poll::Ready(done) = tasks[i].1.as_mut().poll(cx) {
                drop(tasks.swap_remove(i));
                return Poll::Ready(Some(done));
            }
        }
        match sleep.as_mut().map(|s| Pin::new(s).poll(cx)) {
            Some(Poll::Ready(())) => Poll::Ready(None),
            _ => Poll::Pending,
        }
    })
    .await
}
