//! The plan's decisions, one scenario each.

use std::time::Duration;

use super::*;
use crate::time::Time;

const FIRST: &str = "/p2p/f?limit=10";

fn setup(mode: Mode) -> Setup {
    Setup {
        mode,
        limits: Limits {
            concurrency: 2,
            ..Limits::default()
        },
        first_page: FIRST.into(),
        link_prefix: "/p2p/f?".into(),
        wall_clock: 1_000,
        seed: 1,
    }
}

fn entry(name: &str, size: u64) -> Entry {
    Entry {
        path: format!("/p2p/f/{name}"),
        name: Some(name.into()),
        size,
        sum: "ab".repeat(32),
    }
}

fn last_page(entries: Vec<Entry>) -> Page {
    Page {
        entries,
        end: true,
        date: Some(500),
        ..Page::default()
    }
}

fn drain(p: &mut SyncPlan) -> Vec<Command> {
    std::iter::from_fn(|| p.poll_command()).collect()
}

fn fetches(cmds: &[Command]) -> Vec<(FileId, u64)> {
    cmds.iter()
        .filter_map(|c| match c {
            Command::Fetch { file, from } => Some((*file, *from)),
            _ => None,
        })
        .collect()
}

fn inspected(cmds: &[Command]) -> Vec<FileId> {
    cmds.iter()
        .filter_map(|c| match c {
            Command::Inspect { file, .. } => Some(*file),
            _ => None,
        })
        .collect()
}

fn done(cmds: &[Command]) -> Option<&Result<Report, Abort>> {
    cmds.iter().find_map(|c| match c {
        Command::Done(r) => Some(r),
        _ => None,
    })
}

/// Answers every command (listing pages from `serve`, every Inspect with
/// `local`, fetches and installs as done) until nothing is left; returns
/// every command seen.
fn drive(
    p: &mut SyncPlan,
    serve: impl Fn(&str, Option<u64>) -> Page,
    local: impl Fn(FileId) -> (bool, u64),
) -> Vec<Command> {
    let mut all = Vec::new();
    loop {
        let cmds = drain(p);
        if cmds.is_empty() {
            return all;
        }
        for c in &cmds {
            let e = match c {
                Command::List { link, since } => Event::Page(serve(link, *since)),
                Command::Inspect { file, .. } => {
                    let (same, partial) = local(*file);
                    Event::Local {
                        file: *file,
                        same,
                        partial,
                    }
                }
                Command::Fetch { file, .. } => Event::Fetched {
                    file: *file,
                    got: 1,
                    resumed: false,
                },
                Command::Install { file } => Event::Installed { file: *file },
                Command::Stage { file } => Event::Staged { file: *file },
                Command::Commit { files } => {
                    for file in files {
                        p.handle(Event::Installed { file: *file }, Time::ZERO);
                    }
                    continue;
                }
                _ => continue,
            };
            p.handle(e, Time::ZERO);
        }
        all.extend(cmds);
    }
}

fn run_files(p: &mut SyncPlan) -> Vec<Command> {
    drive(p, |_, _| last_page(vec![]), |_| (false, 0))
}

/// A sync from the beginning with nothing local (`setup` as given), past
/// its first listing request.
fn sync_with(s: Setup, local: LocalState) -> SyncPlan {
    let mut p = SyncPlan::new(s, local, Time::ZERO);
    drain(&mut p);
    p
}

/// [`sync_with`] the default setup and nothing local.
fn new_sync() -> SyncPlan {
    sync_with(setup(Mode::Sync { since: None }), LocalState::default())
}

/// Answers the outstanding listing request with a last page of `entries`;
/// returns the commands that follow.
fn list(p: &mut SyncPlan, entries: Vec<Entry>) -> Vec<Command> {
    p.handle(Event::Page(last_page(entries)), Time::ZERO);
    drain(p)
}

/// Answers the Inspect of each of `files`: no local copy, a partial
/// download of `partial` bytes.
fn absent(p: &mut SyncPlan, files: &[(FileId, u64)], now: Time) {
    for &(file, partial) in files {
        let e = Event::Local {
            file,
            same: false,
            partial,
        };
        p.handle(e, now);
    }
}

#[test]
fn a_whole_listing_fetches_what_changed_retires_what_went_and_records() {
    let local = LocalState {
        names: ["old.pgp".to_string(), "a.pgp".into()].into(),
        partials: [("gone.pgp".to_string(), "cd".repeat(32))].into(),
        bytes: 0,
    };
    let mut p = SyncPlan::new(setup(Mode::Sync { since: None }), local, Time::ZERO);
    let cmds = drain(&mut p);
    assert_eq!(
        cmds,
        [Command::List {
            link: FIRST.into(),
            since: None
        }]
    );
    p.handle(
        Event::Page(last_page(vec![entry("a.pgp", 5), entry("b.pgp", 7)])),
        Time::ZERO,
    );
    let all = drive(&mut p, |_, _| last_page(vec![]), |f| (f == FileId(0), 0));
    assert_eq!(inspected(&all).len(), 2);
    assert_eq!(fetches(&all), [(FileId(1), 0)], "a.pgp is unchanged");
    assert!(all.contains(&Command::Retire {
        name: "old.pgp".into()
    }));
    assert!(all.contains(&Command::RemovePartial {
        name: "gone.pgp".into(),
        sum: "cd".repeat(32)
    }));
    assert!(
        all.contains(&Command::Record { mark: 499 }),
        "the friend's clock - 1 s"
    );
    let r = done(&all).expect("done").as_ref().expect("ok");
    assert_eq!(
        (r.listed, r.unchanged, r.downloaded, r.stale_partials),
        (2, 1, 1, 1)
    );
    assert!(r.complete);
    assert!(matches!(all.last(), Some(Command::Done(_))));
}

#[test]
fn a_failed_file_keeps_the_state_and_retires_nothing() {
    let local = LocalState {
        names: ["old.pgp".to_string()].into(),
        ..LocalState::default()
    };
    let mut p = sync_with(setup(Mode::Sync { since: None }), local);
    list(&mut p, vec![entry("a.pgp", 5)]);
    p.handle(
        Event::Failed {
            file: FileId(0),
            error: FetchError::Other("disk".into()),
            kept: 0,
        },
        Time::ZERO,
    );
    let cmds = drain(&mut p);
    assert!(cmds
        .iter()
        .all(|c| !matches!(c, Command::Record { .. } | Command::Retire { .. })));
    let r = done(&cmds).expect("done").as_ref().expect("ok");
    assert_eq!(r.failures, 1);
    assert!(!r.complete);
}

#[test]
fn pages_are_asked_one_at_a_time_after_their_files() {
    let mut p = new_sync();
    let page = Page {
        entries: vec![entry("a.pgp", 1)],
        next: Some("/p2p/f?after=x".into()),
        ..Page::default()
    };
    p.handle(Event::Page(page), Time::ZERO);
    let all = run_files(&mut p);
    let first_file = all
        .iter()
        .position(|c| matches!(c, Command::Settled { .. }));
    let next_list = all.iter().position(|c| matches!(c, Command::List { .. }));
    assert!(first_file < next_list, "{all:?}");
    assert!(all.contains(&Command::List {
        link: "/p2p/f?after=x".into(),
        since: None
    }));
}

#[test]
fn an_incremental_sync_reads_the_whole_listing_for_names_before_retiring() {
    let local = LocalState {
        names: ["kept.pgp".to_string(), "gone.pgp".into()].into(),
        ..LocalState::default()
    };
    let mut p = SyncPlan::new(setup(Mode::Sync { since: Some(400) }), local, Time::ZERO);
    assert_eq!(
        drain(&mut p),
        [Command::List {
            link: FIRST.into(),
            since: Some(400)
        }]
    );
    p.handle(Event::Page(last_page(vec![])), Time::ZERO);
    assert_eq!(
        drain(&mut p),
        [
            Command::Listed {
                entries: vec![],
                files: 0,
                bytes: 0
            },
            Command::List {
                link: FIRST.into(),
                since: None
            }
        ]
    );
    p.handle(
        Event::Page(last_page(vec![entry("kept.pgp", 3)])),
        Time::ZERO,
    );
    let cmds = drain(&mut p);
    assert_eq!(fetches(&cmds), [], "the names walk downloads nothing");
    assert!(cmds.contains(&Command::Retire {
        name: "gone.pgp".into()
    }));
    assert!(!cmds.contains(&Command::Retire {
        name: "kept.pgp".into()
    }));
    assert_eq!(done(&cmds).unwrap().as_ref().unwrap().listing_requests, 2);
}

#[test]
fn a_listing_without_pages_retires_nothing_and_records_the_second_reached() {
    let local = LocalState {
        names: ["x.pgp".to_string()].into(),
        ..LocalState::default()
    };
    let mut p = SyncPlan::new(setup(Mode::Sync { since: Some(100) }), local, Time::ZERO);
    // A Go-like friend with one file dated second 100, clock 200.
    let serve = |_: &str, since: Option<u64>| Page {
        entries: match since.unwrap_or(0) <= 100 {
            true => vec![entry("a.pgp", 1)],
            false => vec![],
        },
        date: Some(200),
        ..Page::default()
    };
    let all = drive(&mut p, serve, |_| (false, 0));
    assert!(all.iter().all(|c| !matches!(c, Command::Retire { .. })));
    assert!(all.contains(&Command::Record { mark: 100 }), "{all:?}");
    let r = done(&all).unwrap().as_ref().unwrap();
    assert!(r.stepped && r.complete && !r.listing_truncated);
}

#[test]
fn a_partial_download_is_resumed_and_a_refused_range_restarts_once() {
    let mut p = new_sync();
    list(&mut p, vec![entry("a.pgp", 100)]);
    let a = FileId(0);
    absent(&mut p, &[(a, 40)], Time::ZERO);
    assert_eq!(fetches(&drain(&mut p)), [(a, 40)]);
    let range = Event::Failed {
        file: a,
        error: FetchError::RangeNotSatisfiable,
        kept: 40,
    };
    p.handle(range.clone(), Time::ZERO);
    let cmds = drain(&mut p);
    assert_eq!(
        cmds[0],
        Command::RemovePartial {
            name: "a.pgp".into(),
            sum: "ab".repeat(32)
        }
    );
    assert_eq!(fetches(&cmds), [(a, 0)]);
    p.handle(range, Time::ZERO);
    let cmds = drain(&mut p);
    assert!(
        matches!(cmds[0], Command::GiveUp { file, .. } if file == a),
        "only once"
    );
}

#[test]
fn a_partial_longer_than_the_file_is_dropped_and_a_complete_one_installed() {
    let mut p = new_sync();
    list(&mut p, vec![entry("a.pgp", 10), entry("b.pgp", 10)]);
    absent(&mut p, &[(FileId(0), 11), (FileId(1), 10)], Time::ZERO);
    let cmds = drain(&mut p);
    let remove = Command::RemovePartial {
        name: "a.pgp".into(),
        sum: "ab".repeat(32),
    };
    let restart = Command::Fetch {
        file: FileId(0),
        from: 0,
    };
    let pos = |c: &Command| cmds.iter().position(|x| x == c);
    assert!(pos(&remove) < pos(&restart), "{cmds:?}");
    assert!(cmds.contains(&Command::Install { file: FileId(1) }));
}

#[test]
fn the_quota_refuses_before_asking() {
    let mut s = setup(Mode::Sync { since: None });
    s.limits.quota = 100;
    let local = LocalState {
        bytes: 60,
        ..LocalState::default()
    };
    let mut p = sync_with(s, local);
    list(&mut p, vec![entry("big.pgp", 41), entry("ok.pgp", 40)]);
    absent(&mut p, &[(FileId(0), 0), (FileId(1), 0)], Time::ZERO);
    let cmds = drain(&mut p);
    assert_eq!(fetches(&cmds), [(FileId(1), 0)]);
    assert!(cmds.contains(&Command::GiveUp {
        file: FileId(0),
        name: "big.pgp".into(),
        reason: GiveUp::OverQuota {
            needed: 41,
            used: 60,
            quota: 100
        }
    }));
}

#[test]
fn a_slow_body_gives_up_at_its_floor_and_progress_moves_it() {
    let mut s = setup(Mode::Sync { since: None });
    s.limits.min_rate = 10;
    s.limits.slow_grace = Duration::from_secs(2);
    let mut p = sync_with(s, LocalState::default());
    list(&mut p, vec![entry("a.pgp", 1000)]);
    let a = FileId(0);
    absent(&mut p, &[(a, 0)], Time(1000));
    drain(&mut p);
    assert_eq!(p.poll_timeout(), Some(Time(3000)));
    p.handle(Event::Progress { file: a, got: 10 }, Time(2500));
    assert_eq!(p.poll_timeout(), Some(Time(4000)), "10 bytes earn a second");
    p.handle_timeout(Time(3999));
    assert!(drain(&mut p).is_empty());
    p.handle_timeout(Time(4000));
    let cmds = drain(&mut p);
    assert_eq!(
        cmds[0],
        Command::GiveUp {
            file: a,
            name: "a.pgp".into(),
            reason: GiveUp::TooSlow {
                got: 10,
                elapsed: Duration::from_secs(3),
                min_rate: 10
            }
        }
    );
    assert_eq!(p.in_flight(), 0);
}

#[test]
fn a_refused_file_waits_its_retry_after_and_a_503_narrows_the_window() {
    let mut p = new_sync();
    list(
        &mut p,
        vec![entry("a.pgp", 1), entry("b.pgp", 1), entry("c.pgp", 1)],
    );
    absent(&mut p, &[(FileId(0), 0), (FileId(1), 0)], Time::ZERO);
    assert_eq!(fetches(&drain(&mut p)).len(), 2);
    let refused = Event::Refused {
        target: Target::File(FileId(0)),
        status: 503,
        retry_after: Some(Duration::from_secs(4)),
    };
    p.handle(refused, Time(1000));
    assert!(drain(&mut p).is_empty());
    let t = p.poll_timeout().expect("a wait");
    assert!(t >= Time(5000) && t <= Time(7000), "{t:?}");
    p.handle_timeout(t);
    assert!(
        fetches(&drain(&mut p)).is_empty(),
        "the window is one now, b holds it"
    );
    p.handle(
        Event::Fetched {
            file: FileId(1),
            got: 1,
            resumed: false,
        },
        t,
    );
    assert_eq!(fetches(&drain(&mut p)), [(FileId(0), 0)]);
    assert!(p.in_flight() <= 1);
}

#[test]
fn a_stubborn_friend_is_given_up_after_the_retries() {
    let mut p = new_sync();
    let mut now = Time::ZERO;
    let refused = Event::Refused {
        target: Target::Listing,
        status: 429,
        retry_after: Some(Duration::ZERO),
    };
    for _ in 0..5 {
        p.handle(refused.clone(), now);
        now = p.poll_timeout().expect("waits");
        p.handle_timeout(now);
        assert!(matches!(drain(&mut p)[..], [Command::List { .. }]));
    }
    p.handle(refused, now);
    let cmds = drain(&mut p);
    assert_eq!(
        done(&cmds),
        Some(&Err(Abort::Throttled {
            status: 429,
            retries: 5
        }))
    );
    assert_eq!(p.poll_timeout(), None);
}

#[test]
fn list_mode_hands_out_every_page() {
    let mut p = sync_with(setup(Mode::List { since: None }), LocalState::default());
    let bad = Entry {
        name: None,
        ..entry("x", 1)
    };
    let cmds = list(&mut p, vec![entry("a.pgp", 2), bad.clone()]);
    assert_eq!(
        cmds[0],
        Command::Listed {
            entries: vec![entry("a.pgp", 2), bad],
            files: 2,
            bytes: 3
        }
    );
    let r = done(&cmds).unwrap().as_ref().unwrap();
    assert_eq!((r.server_time, r.recorded), (Some(500), None));
}

#[test]
fn fetch_mode_fetches_one_file_without_a_listing() {
    let mut p = SyncPlan::new(
        setup(Mode::Fetch(entry("a.pgp", 3))),
        LocalState::default(),
        Time::ZERO,
    );
    let all = run_files(&mut p);
    assert_eq!(inspected(&all), [FileId(0)]);
    assert!(all
        .iter()
        .all(|c| !matches!(c, Command::List { .. } | Command::Record { .. })));
    assert_eq!(done(&all).unwrap().as_ref().unwrap().downloaded, 1);
}

#[test]
fn concurrency_bounds_the_files_worked_on() {
    let mut p = new_sync();
    let many = (0..10).map(|i| entry(&format!("{i}.pgp"), 1)).collect();
    // Concurrency 2: 4 files inspected, at most 2 of them fetched at once.
    assert_eq!(inspected(&list(&mut p, many)).len(), 4);
    assert_eq!(p.active(), 4);
    let four: Vec<_> = (0..4).map(|i| (FileId(i), 0)).collect();
    absent(&mut p, &four, Time::ZERO);
    let fetches = drain(&mut p)
        .into_iter()
        .filter(|c| matches!(c, Command::Fetch { .. }))
        .count();
    assert_eq!(fetches, 2);
    assert_eq!(p.in_flight(), 2);
}

#[test]
fn a_bad_sum_is_never_looked_at() {
    let mut p = new_sync();
    let bad = Entry {
        sum: "../../x".into(),
        ..entry("a.pgp", 1)
    };
    let cmds = list(&mut p, vec![bad]);
    assert!(inspected(&cmds).is_empty(), "{cmds:?}");
    assert!(cmds.contains(&Command::GiveUp {
        file: FileId(0),
        name: "a.pgp".into(),
        reason: GiveUp::BadSum("../../x".into())
    }));
}

/// Every command's files that match `pick`.
fn files_of(cmds: &[Command], pick: impl Fn(&Command) -> Option<Vec<FileId>>) -> Vec<FileId> {
    cmds.iter().filter_map(pick).flatten().collect()
}

fn staged(cmds: &[Command]) -> Vec<FileId> {
    files_of(cmds, |c| match c {
        Command::Stage { file } => Some(vec![*file]),
        _ => None,
    })
}

fn commits(cmds: &[Command]) -> Vec<Vec<FileId>> {
    cmds.iter()
        .filter_map(|c| match c {
            Command::Commit { files } => Some(files.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn small_files_are_committed_together_before_they_count() {
    let mut p = new_sync();
    let big = BATCH_FILE_MAX + 1;
    list(
        &mut p,
        vec![entry("a.pgp", 5), entry("b.pgp", 7), entry("c.pgp", big)],
    );
    absent(
        &mut p,
        &[(FileId(0), 0), (FileId(1), 0), (FileId(2), 0)],
        Time::ZERO,
    );
    drain(&mut p);
    let fetched = |p: &mut SyncPlan, file, got| {
        let e = Event::Fetched {
            file: FileId(file),
            got,
            resumed: false,
        };
        p.handle(e, Time::ZERO);
        drain(p)
    };
    // A small file is staged, and waits while others may still join.
    let cmds = fetched(&mut p, 0, 5);
    assert_eq!(staged(&cmds), [FileId(0)]);
    p.handle(Event::Staged { file: FileId(0) }, Time::ZERO);
    assert!(commits(&drain(&mut p)).is_empty(), "b.pgp is on its way");
    // A staged file no longer holds a place: c.pgp (concurrency 2) starts.
    assert_eq!(p.active(), 2);
    assert_eq!(p.uncommitted(), 1);
    // The large file is installed alone.
    let cmds = fetched(&mut p, 2, big);
    assert!(cmds.contains(&Command::Install { file: FileId(2) }));
    p.handle(Event::Installed { file: FileId(2) }, Time::ZERO);
    let cmds = fetched(&mut p, 1, 7);
    assert_eq!(staged(&cmds), [FileId(1)]);
    // An early Installed for a staged file is not its commit: ignored.
    p.handle(Event::Installed { file: FileId(1) }, Time::ZERO);
    p.handle(Event::Staged { file: FileId(1) }, Time::ZERO);
    let cmds = drain(&mut p);
    // Nothing else on its way: both commit together, and nothing is
    // recorded before each is installed.
    assert_eq!(commits(&cmds), [vec![FileId(0), FileId(1)]]);
    assert!(!cmds.iter().any(|c| matches!(c, Command::Record { .. })));
    p.handle(Event::Installed { file: FileId(0) }, Time::ZERO);
    assert!(!drain(&mut p)
        .iter()
        .any(|c| matches!(c, Command::Record { .. })));
    p.handle(Event::Installed { file: FileId(1) }, Time::ZERO);
    let cmds = drain(&mut p);
    assert!(cmds.contains(&Command::Record { mark: 499 }));
    assert_eq!(done(&cmds).unwrap().as_ref().unwrap().downloaded, 3);
}

#[test]
fn a_failed_commit_records_nothing() {
    let mut p = new_sync();
    p.handle(Event::Page(last_page(vec![entry("a.pgp", 5)])), Time::ZERO);
    let all = drive(&mut p, |_, _| last_page(vec![]), |_| (false, 0));
    // `drive` answers commits: here it went well.
    assert_eq!(commits(&all), [vec![FileId(0)]]);
    assert!(all.contains(&Command::Record { mark: 499 }));

    let mut p = new_sync();
    list(&mut p, vec![entry("a.pgp", 5)]);
    absent(&mut p, &[(FileId(0), 0)], Time::ZERO);
    drain(&mut p);
    let e = Event::Fetched {
        file: FileId(0),
        got: 5,
        resumed: false,
    };
    p.handle(e, Time::ZERO);
    p.handle(Event::Staged { file: FileId(0) }, Time::ZERO);
    assert_eq!(commits(&drain(&mut p)), [vec![FileId(0)]]);
    // The flush failed: the file is not installed, the state stays.
    let failed = Event::Failed {
        file: FileId(0),
        error: FetchError::Other("flush: I/O error".into()),
        kept: 0,
    };
    p.handle(failed, Time::ZERO);
    let cmds = drain(&mut p);
    assert!(!cmds.iter().any(|c| matches!(c, Command::Record { .. })));
    let r = done(&cmds).expect("done").as_ref().expect("ok");
    assert_eq!((r.downloaded, r.failures, r.complete), (0, 1, false));
}

#[test]
fn a_batch_holds_at_most_batch_max_files() {
    let mut s = setup(Mode::Sync { since: None });
    s.limits.concurrency = 100;
    let mut p = sync_with(s, LocalState::default());
    let n = BATCH_MAX + 10;
    let many = (0..n).map(|i| entry(&format!("{i}.pgp"), 1)).collect();
    let cmds = list(&mut p, many);
    let files = inspected(&cmds);
    assert_eq!(files.len(), n);
    let all: Vec<_> = files.iter().map(|f| (*f, 0)).collect();
    absent(&mut p, &all, Time::ZERO);
    drain(&mut p);
    let mut batches = Vec::new();
    for f in &files {
        let e = Event::Fetched {
            file: *f,
            got: 1,
            resumed: false,
        };
        p.handle(e, Time::ZERO);
        p.handle(Event::Staged { file: *f }, Time::ZERO);
        batches.extend(commits(&drain(&mut p)));
    }
    // Full at BATCH_MAX while others were on their way; the rest once
    // nothing else could join.
    let sizes: Vec<_> = batches.iter().map(Vec::len).collect();
    assert_eq!(sizes, [BATCH_MAX, 10]);
}

/// A friend whose commits never end: files on their way may all be staged,
/// so no more start than [`MAX_UNCOMMITTED`] leaves room for.
#[test]
fn staged_files_stay_within_the_uncommitted_bound_while_commits_hang() {
    let mut p = new_sync();
    let n = 3 * MAX_UNCOMMITTED;
    let many = (0..n).map(|i| entry(&format!("{i}.pgp"), 1)).collect();
    let mut cmds = list(&mut p, many);
    let mut peak = 0;
    while !cmds.is_empty() {
        for c in &cmds {
            let e = match c {
                Command::Inspect { file, .. } => Event::Local {
                    file: *file,
                    same: false,
                    partial: 0,
                },
                Command::Fetch { file, .. } => Event::Fetched {
                    file: *file,
                    got: 1,
                    resumed: false,
                },
                Command::Stage { file } => Event::Staged { file: *file },
                _ => continue,
            };
            p.handle(e, Time::ZERO);
            peak = peak.max(p.uncommitted());
        }
        cmds = drain(&mut p);
    }
    assert_eq!(peak, MAX_UNCOMMITTED);
}
