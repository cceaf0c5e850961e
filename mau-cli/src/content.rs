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
    println!(
        "shared {} ({} bytes) with {} friend(s)",
        e.name,
        e.size,
        to.len()
    );
    Ok(())
}

pub fn files(dir: &Path, fpr: Option<Fingerprint>) -> Result<(), String> {
    let s = store(dir)?;
    let fpr = fpr.unwrap_or_else(|| s.fingerprint());
    let friends = s.account().friends().map_err(|e| e.to_string())?;
    let mut rows = Vec::new();
    for e in s.files(&fpr).map_err(|e| e.to_string())? {
        let (_, meta) = s.meta(&e.path).map_err(|e| e.to_string())?;
        let to: Vec<String> = friends
            .iter()
            .filter(|f| mau_identity::content::is_recipient(&meta.recipients, f.cert()))
            .map(|f| {
                f.user_ids()
                    .first()
                    .cloned()
                    .unwrap_or_else(|| f.fingerprint().to_string())
            })
            .collect();
        rows.push(vec![
            e.name.clone(),
            e.size.to_string(),
            mau_store::format_rfc3339(e.modified),
            s.versions(&e.path).len().to_string(),
            to.join(", "),
        ]);
    }
    table::print(
        &["NAME", "SIZE", "MODIFIED", "VERSIONS", "SHARED WITH"],
        &rows,
    );
    Ok(())
}

pub fn open(
    dir: &Path,
    name: &str,
    fpr: Option<Fingerprint>,
    output: Option<&Path>,
) -> Result<(), String> {
    let s = store(dir)?;
    let fpr = fpr.unwrap_or_else(|| s.fingerprint());
    match output {
        Some(p) => {
            let mut buf = Vec::new();
            s.open(&fpr, name, &mut buf).map_err(|e| e.to_string())?;
            mau_identity::write_atomic(p, &buf).map_err(|e| e.to_string())
        }
        None => s
            .open(&fpr, name, std::io::stdout().lock())
            .map_err(|e| e.to_string()),
    }
}

pub fn delete(dir: &Path, name: &str) -> Result<(), String> {
    store(dir)?.delete(name).map_err(|e| e.to_string())?;
    println!("deleted {}", mau_store::content_name(name));
    Ok(())
}

pub fn follow(dir: &Path, fpr: &Fingerprint, on: bool) -> Result<(), String> {
    let s = store(dir)?;
    if on {
        s.follow(fpr).map_err(|e| e.to_string())?;
        println!("following {fpr}");
    } else {
        s.unfollow(fpr).map_err(|e| e.to_string())?;
        println!("unfollowed {fpr} (its files are kept in .{fpr})");
    }
    Ok(())
}

pub fn follows(dir: &Path) -> Result<(), String> {
    let s = store(dir)?;
    let state = s.sync_state().map_err(|e| e.to_string())?;
    let rows: Vec<Vec<String>> = s
        .followed()
        .map_err(|e| e.to_string())?
        .into_iter()
        .map(|f| {
            vec![
                f.to_string(),
                s.files(&f).map(|v| v.len()).unwrap_or(0).to_string(),
                state
                    .last_sync(&f)
                    .map(mau_store::format_rfc3339)
                    .unwrap_or_else(|| "never".into()),
            ]
        })
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
            None => eprintln!("{files} file(s) listed, {bytes} bytes"),
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
                    "[{done}/{total}] {name}: {bytes} bytes{}",
                    if *resumed { " (resumed)" } else { "" }
                )
            }
            (None, Ok(Outcome::Unchanged)) => {}
            (None, Err(e)) => eprintln!("[{done}/{total}] {name}: failed: {e}"),
        }
    }
}

/// The friend's address from the running server's DHT (through the
/// control socket), if a server runs.
async fn dht_address<R: mau_net::Runtime>(
    rt: &R,
    dir: &Path,
    fpr: Fingerprint,
) -> Option<PeerAddress> {
    let path = dir.join(mau_identity::MAU_DIR).join("control.sock");
    if !path.exists() {
        return None;
    }
    let answer = control::call(
        rt,
        &path,
        &ControlRequest::Lookup { fingerprint: fpr },
        Duration::from_secs(60),
    )
    .await;
    match answer {
        Ok(ControlResponse::Lookup(r)) => r.found.map(|p| p.address),
        _ => None,
    }
}

fn summary(r: &SyncReport) -> String {
    format!(
        "{}: {} listed, {} downloaded ({} resumed, {} bytes), {} up to date, {} failed{}{}{}",
        r.friend.map(|f| f.to_string()).unwrap_or_default(),
        r.listed,
        r.downloaded,
        r.resumed,
        r.bytes,
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
}

/// `mau sync`, on the runtime `--runtime` names.
pub fn sync<E: Exec>(dir: &Path, args: SyncArgs) -> Result<(), String> {
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
    let failures = E::run(|rt| async move {
        let mut failures = 0usize;
        for fpr in friends {
            let mut addresses = args.address.clone();
            if let Some(a) = dht_address(&rt, dir, fpr).await {
                addresses.push(a);
            }
            let progress = Bars::new();
            let result = async {
                let mut last =
                    String::from("no address: pass --address HOST:PORT or run `mau server start`");
                for address in addresses {
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
                    println!("{}", summary(&r));
                    for (name, why) in &r.failed {
                        println!("  failed {}: {why}", mau_store::escaped(name));
                    }
                    if !r.complete {
                        failures += 1;
                    }
                }
                Err(e) => {
                    eprintln!("mau: sync {fpr}: {e}");
                    failures += 1;
                }
            }
        }
        failures
    });
    if failures > 0 {
        return Err(format!("{failures} friend(s) not completely synced"));
    }
    Ok(())
}
