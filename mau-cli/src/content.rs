//! Content commands: share, files, open, delete, follow, unfollow, follows,
//! sync.

use std::io::IsTerminal;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mau_net::control::{self, ControlRequest, ControlResponse};
use mau_net::sync::{FriendClient, Outcome, Progress, SyncOptions, SyncReport};
use mau_proto::{Contact, Fingerprint, PeerAddress};
use mau_store::Store;

use crate::output::{self, outln};
use crate::runtime::Exec;
use crate::{account, table};

/// Loads the account in `dir` as a content store.
pub fn store(dir: &Path) -> Result<Store, String> {
    Store::new(account::load(dir)?).map_err(|e| e.to_string())
}

pub fn share(
    dir: &Path,
    file: &Path,
    name: Option<&str>,
    to: &[Fingerprint],
) -> Result<(), String> {
    if file.is_dir() {
        return Err(format!(
            "{} is a directory: share files one by one (e.g. `for f in DIR/*; do mau share \"$f\"; done`)",
            file.display()
        ));
    }
    let s = store(dir)?;
    let name = match name {
        Some(n) => n.to_string(),
        None => file
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| format!("{}: no usable file name", file.display()))?
            .to_string(),
    };
    let input = std::fs::File::open(file).map_err(|e| format!("{}: {e}", file.display()))?;
    let e = s
        .share(&name, std::io::BufReader::new(input), to)
        .map_err(|e| e.to_string())?;
    outln!(
        "shared {} ({}) with {} friend(s)",
        e.name,
        output::size(e.size),
        to.len()
    );
    Ok(())
}

pub fn files(dir: &Path, fpr: Option<Fingerprint>, json: bool) -> Result<(), String> {
    let s = store(dir)?;
    let fpr = fpr.unwrap_or_else(|| s.fingerprint());
    let friends = s.account().friends().map_err(|e| e.to_string())?;
    let mut rows = Vec::new();
    let mut records = Vec::new();
    for e in s.files(&fpr).map_err(|e| e.to_string())? {
        let (_, meta) = s.meta(&e.path).map_err(|e| e.to_string())?;
        let to: Vec<&mau_identity::Friend> = friends
            .iter()
            .filter(|f| mau_identity::content::is_recipient(&meta.recipients, f.cert()))
            .collect();
        let versions = s.versions(&e.path).len();
        if json {
            records.push(serde_json::json!({
                "name": e.name,
                "size": e.size,
                "modified": output::time(e.modified),
                "versions": versions,
                "shared_with": to.iter().map(|f| f.fingerprint().to_string()).collect::<Vec<_>>(),
            }));
            continue;
        }
        let names: Vec<String> = to
            .iter()
            .map(|f| {
                f.user_ids()
                    .first()
                    .cloned()
                    .unwrap_or_else(|| f.fingerprint().to_string())
            })
            .collect();
        rows.push(vec![
            e.name.clone(),
            output::size(e.size),
            output::time(e.modified),
            versions.to_string(),
            names.join(", "),
        ]);
    }
    if json {
        return output::json(&records);
    }
    table::print(
        &["NAME", "SIZE", "MODIFIED", "VERSIONS", "SHARED WITH"],
        &rows,
    );
    Ok(())
}

/// The old versions of `fpr`'s file `name`, oldest first: (id, path, size, time).
fn old_versions(
    s: &Store,
    fpr: &Fingerprint,
    name: &str,
) -> Result<Vec<(String, std::path::PathBuf, u64, std::time::SystemTime)>, String> {
    let name = mau_store::content_name(name);
    let dir = s
        .served_dir(fpr)
        .ok_or_else(|| format!("no files of {fpr} here"))?;
    let mut out = Vec::new();
    for sum in s.versions(&dir.join(&name)) {
        let path = s
            .version_path(fpr, &name, &sum)
            .map_err(|e| e.to_string())?;
        let meta = std::fs::metadata(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let modified = meta.modified().unwrap_or(std::time::UNIX_EPOCH);
        out.push((sum, path, meta.len(), modified));
    }
    out.sort_by_key(|v| v.3);
    Ok(out)
}

pub fn versions(
    dir: &Path,
    name: &str,
    fpr: Option<Fingerprint>,
    json: bool,
) -> Result<(), String> {
    let s = store(dir)?;
    let fpr = fpr.unwrap_or_else(|| s.fingerprint());
    let all = old_versions(&s, &fpr, name)?;
    if json {
        let v: Vec<_> = all
            .iter()
            .map(|(id, _, size, t)| {
                serde_json::json!({"version": id, "size": size, "replaced": output::time(*t)})
            })
            .collect();
        return output::json(&v);
    }
    let rows: Vec<Vec<String>> = all
        .iter()
        .map(|(id, _, size, t)| vec![id.clone(), output::size(*size), output::time(*t)])
        .collect();
    table::print(&["VERSION", "SIZE", "STORED"], &rows);
    Ok(())
}

pub fn open(
    dir: &Path,
    name: &str,
    fpr: Option<Fingerprint>,
    version: Option<&str>,
    output: Option<&Path>,
) -> Result<(), String> {
    let s = store(dir)?;
    let fpr = fpr.unwrap_or_else(|| s.fingerprint());
    let decrypt = |out: &mut dyn std::io::Write| -> Result<(), String> {
        match version {
            None => s.open(&fpr, name, out).map_err(|e| e.to_string()),
            Some(v) => open_version(&s, &fpr, name, v, out),
        }
    };
    match output {
        Some(p) => {
            let mut buf = Vec::new();
            decrypt(&mut buf)?;
            mau_identity::write_atomic(p, &buf).map_err(|e| e.to_string())
        }
        None => decrypt(&mut PipeQuiet(std::io::stdout().lock())),
    }
}

/// Decrypts an old version, picked by its id or a unique prefix of it.
fn open_version(
    s: &Store,
    fpr: &Fingerprint,
    name: &str,
    version: &str,
    out: &mut dyn std::io::Write,
) -> Result<(), String> {
    let all = old_versions(s, fpr, name)?;
    let matching: Vec<_> = all.iter().filter(|v| v.0.starts_with(version)).collect();
    let path = match matching.as_slice() {
        [one] => &one.1,
        [] => {
            return Err(format!(
                "{name} has no old version {version:?} (see `mau versions {name}`)"
            ))
        }
        _ => {
            return Err(format!(
                "{version:?} names several versions: give more of it"
            ))
        }
    };
    let cert = if *fpr == s.fingerprint() {
        std::sync::Arc::new(s.account().public_cert())
    } else {
        s.friend_cert(fpr).map_err(|e| e.to_string())?
    };
    let file = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    s.account()
        .open(std::io::BufReader::new(file), out, &cert)
        .map_err(|e| e.to_string())
}

/// Stdout for decrypted bytes: a closed pipe ends the process quietly.
struct PipeQuiet<W>(W);

impl<W: std::io::Write> std::io::Write for PipeQuiet<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        quiet_on_pipe(self.0.write(buf))
    }
    fn flush(&mut self) -> std::io::Result<()> {
        quiet_on_pipe(self.0.flush())
    }
}

fn quiet_on_pipe<T>(r: std::io::Result<T>) -> std::io::Result<T> {
    if let Err(e) = &r {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(i32::from(output::EXIT_OK));
        }
    }
    r
}

pub fn delete(dir: &Path, name: &str) -> Result<(), String> {
    store(dir)?.delete(name).map_err(|e| e.to_string())?;
    outln!("deleted {}", mau_store::content_name(name));
    Ok(())
}

pub fn follow(dir: &Path, fpr: &Fingerprint, on: bool) -> Result<(), String> {
    let s = store(dir)?;
    if on {
        s.follow(fpr).map_err(|e| e.to_string())?;
        outln!("following {fpr}");
    } else {
        s.unfollow(fpr).map_err(|e| e.to_string())?;
        outln!("unfollowed {fpr} (its files are kept in .{fpr})");
    }
    Ok(())
}

pub fn follows(dir: &Path, json: bool) -> Result<(), String> {
    let s = store(dir)?;
    let state = s.sync_state().map_err(|e| e.to_string())?;
    let rows: Vec<(String, usize, Option<String>)> = s
        .followed()
        .map_err(|e| e.to_string())?
        .into_iter()
        .map(|f| {
            (
                f.to_string(),
                s.files(&f).map(|v| v.len()).unwrap_or(0),
                state.last_sync(&f).map(output::time),
            )
        })
        .collect();
    if json {
        let v: Vec<_> = rows
            .iter()
            .map(|(f, n, t)| serde_json::json!({"fingerprint": f, "files": n, "last_sync": t}))
            .collect();
        return output::json(&v);
    }
    let rows: Vec<Vec<String>> = rows
        .into_iter()
        .map(|(f, n, t)| vec![f, n.to_string(), t.unwrap_or_else(|| "never".into())])
        .collect();
    table::print(&["FINGERPRINT", "FILES", "LAST SYNC"], &rows);
    Ok(())
}

/// Progress bars on a terminal, plain lines otherwise.
struct Bars {
    bar: Option<indicatif::ProgressBar>,
    done: Mutex<usize>,
    total: Mutex<usize>,
}

impl Bars {
    fn new() -> Self {
        Bars {
            bar: std::io::stderr()
                .is_terminal()
                .then(indicatif::ProgressBar::hidden),
            done: Mutex::new(0),
            total: Mutex::new(0),
        }
    }
}

impl Progress for Bars {
    fn listed(&self, files: usize, bytes: u64) {
        // Called once per listing page: totals grow as pages arrive.
        let mut total = self.total.lock().unwrap_or_else(|e| e.into_inner());
        let first = *total == 0;
        *total += files;
        match &self.bar {
            Some(bar) if first => {
                bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
                bar.set_length(bytes);
                bar.set_style(
                    indicatif::ProgressStyle::with_template(
                        "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
                    )
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                    .progress_chars("=> "),
                );
                bar.set_message(format!("0/{total} files"));
            }
            Some(bar) => bar.inc_length(bytes),
            None => eprintln!("{files} file(s) listed, {}", output::size(bytes)),
        }
    }

    fn bytes(&self, n: u64) {
        if let Some(bar) = &self.bar {
            bar.inc(n);
        }
    }

    fn file_done(&self, name: &str, result: &Result<Outcome, String>) {
        // A friend chose the name: never print its control characters.
        let name = mau_store::escaped(name);
        let mut done = self.done.lock().unwrap_or_else(|e| e.into_inner());
        *done += 1;
        let total = *self.total.lock().unwrap_or_else(|e| e.into_inner());
        match (&self.bar, result) {
            (Some(bar), Err(e)) => bar.println(format!("failed {name}: {e}")),
            (Some(bar), _) => bar.set_message(format!("{done}/{total} files")),
            (None, Ok(Outcome::Downloaded { bytes, resumed })) => {
                eprintln!(
                    "[{done}/{total}] {name}: {}{}",
                    output::size(*bytes),
                    if *resumed { " (resumed)" } else { "" }
                )
            }
            (None, Ok(Outcome::Unchanged)) => {}
            (None, Err(e)) => eprintln!("[{done}/{total}] {name}: failed: {e}"),
        }
    }
}

/// The friend's address from the running server's DHT (through the
/// control socket), or why there is none, naming what was tried.
async fn dht_address<R: mau_net::Runtime>(
    rt: &R,
    dir: &Path,
    fpr: Fingerprint,
) -> Result<PeerAddress, String> {
    let path = crate::paths::control_socket(dir);
    if !path.exists() {
        return Err(format!(
            "no address for {fpr}: no server runs in {} to look it up in the DHT \
             (start one with `mau server start`) and no --address HOST:PORT was given",
            dir.display()
        ));
    }
    eprintln!("looking up {fpr} in the DHT through the running server...");
    let answer = control::call(
        rt,
        &path,
        &ControlRequest::Lookup { fingerprint: fpr },
        Duration::from_secs(60),
    )
    .await;
    match answer {
        Ok(ControlResponse::Lookup(r)) if r.requests == 0 => Err(format!(
            "the running server knows no peers to look up {fpr} with: it has not joined \
             the network (give it --bootstrap FINGERPRINT@HOST:PORT), or pass --address HOST:PORT"
        )),
        Ok(ControlResponse::Lookup(r)) => r.found.map(|p| p.address).ok_or_else(|| {
            format!(
                "the DHT lookup for {fpr} did not find it ({} requests to peers, {} failed, \
                 {} closest peers answered): is its server running and joined? \
                 Pass --address HOST:PORT if you know where it listens",
                r.requests,
                r.failures,
                r.closest.len()
            )
        }),
        Ok(ControlResponse::Error { message }) => {
            Err(format!("the DHT lookup for {fpr} failed: {message}"))
        }
        Ok(_) => Err(format!(
            "the DHT lookup for {fpr}: unexpected answer from the server"
        )),
        Err(e) => Err(format!("the DHT lookup for {fpr}: {e}")),
    }
}

fn summary(r: &SyncReport) -> String {
    format!(
        "{}: {} listed, {} downloaded ({} resumed, {}), {} up to date, {} failed{}{}{}",
        r.friend.map(|f| f.to_string()).unwrap_or_default(),
        r.listed,
        r.downloaded,
        r.resumed,
        output::size(r.bytes),
        r.unchanged,
        r.failures,
        if r.retired.is_empty() {
            String::new()
        } else {
            format!(", {} no longer shared (moved to versions)", r.retired.len())
        },
        if r.throttled == 0 {
            String::new()
        } else {
            format!(", {} busy answers waited out (429/503)", r.throttled)
        },
        if r.listing_truncated {
            ", the friend's listing may be cut short (a server without pages): nothing retired"
        } else {
            ""
        }
    )
}

/// Options of `mau sync`.
pub struct SyncArgs {
    pub fingerprint: Option<Fingerprint>,
    pub address: Vec<PeerAddress>,
    pub full: bool,
    pub concurrency: usize,
    pub idle_timeout: u64,
    /// One JSON array of per-friend reports on stdout instead of text.
    pub json: bool,
}

/// A friend's sync report as `mau sync --json` prints it.
fn report_json(r: &SyncReport) -> serde_json::Value {
    serde_json::json!({
        "friend": r.friend,
        "complete": r.complete,
        "listed": r.listed,
        "downloaded": r.downloaded,
        "resumed": r.resumed,
        "unchanged": r.unchanged,
        "bytes": r.bytes,
        "failed": r.failures,
        "failures": r.failed.iter().map(|(n, why)| serde_json::json!({"name": n, "error": why})).collect::<Vec<_>>(),
        "retired": r.retired.len(),
        "throttled": r.throttled,
        "listing_truncated": r.listing_truncated,
    })
}

/// Tells the server running in `dir`, if any, what a sync moved (its
/// metrics count it). Best effort: no server, no count.
async fn report_to_server<R: mau_net::Runtime>(rt: &R, dir: &Path, r: &SyncReport) {
    let path = crate::paths::control_socket(dir);
    if !path.exists() {
        return;
    }
    let request = ControlRequest::Synced {
        counts: mau_net::metrics::SyncCounts::from(r),
    };
    if let Err(e) = control::call(rt, &path, &request, Duration::from_secs(2)).await {
        tracing::debug!(error = %e, "sync report not counted by the server");
    }
}

/// `mau sync`, on the runtime `--runtime` names.
pub fn sync<E: Exec>(dir: &Path, args: SyncArgs) -> Result<(), crate::output::Failure> {
    let s = Arc::new(store(dir)?);
    let friends = match args.fingerprint {
        Some(f) => vec![f],
        None => s.followed().map_err(|e| e.to_string())?,
    };
    if friends.is_empty() {
        return Err("no friend followed: mau follow FINGERPRINT".into());
    }
    let opts = SyncOptions {
        concurrency: args.concurrency.max(1),
        idle_timeout: Duration::from_secs(args.idle_timeout.max(1)),
        full: args.full,
        ..SyncOptions::default()
    };
    let json = args.json;
    let (failures, reports) = E::run(|rt| async move {
        let mut failures = 0usize;
        let mut reports = Vec::new();
        for fpr in friends {
            let mut addresses = args.address.clone();
            let mut last = String::new();
            match dht_address(&rt, dir, fpr).await {
                Ok(a) => addresses.push(a),
                Err(why) => last = why,
            }
            let progress = Bars::new();
            let result = async {
                for address in addresses {
                    eprintln!(
                        "syncing {fpr} at {address} (waiting up to {}s for each answer)...",
                        opts.idle_timeout.as_secs()
                    );
                    let client = FriendClient::direct(
                        rt.clone(),
                        s.clone(),
                        Contact::new(fpr, address.clone()),
                        opts.clone(),
                    )
                    .map_err(|e| e.to_string())?;
                    match client.sync(&progress).await {
                        Ok(r) => return Ok(r),
                        Err(e) => last = format!("{address}: {e}"),
                    }
                }
                Err(last)
            }
            .await;
            if let Some(bar) = &progress.bar {
                bar.finish_and_clear();
            }
            match result {
                Ok(r) => {
                    report_to_server(&rt, dir, &r).await;
                    if json {
                        reports.push(report_json(&r));
                    } else {
                        outln!("{}", summary(&r));
                        for (name, why) in &r.failed {
                            outln!("  failed {}: {why}", mau_store::escaped(name));
                        }
                    }
                    if !r.complete {
                        failures += 1;
                    }
                }
                Err(e) => {
                    eprintln!("mau: sync {fpr}: {e}");
                    if json {
                        reports.push(serde_json::json!({"friend": fpr, "error": e}));
                    }
                    failures += 1;
                }
            }
        }
        (failures, reports)
    });
    if failures > 0 {
        let mut f =
            crate::output::Failure::from(format!("{failures} friend(s) not completely synced"));
        // One JSON document on stdout: the reports ride in the error.
        f.details = json.then(|| serde_json::Value::from(reports));
        return Err(f);
    }
    if json {
        output::json(&reports)?;
    }
    Ok(())
}
