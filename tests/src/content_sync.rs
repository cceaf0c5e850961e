//! Content and friend-sync scenarios: the Go server's acceptance behaviours,
//! a 250-file sync between two real nodes, a friend on a Go-like server
//! (no pages), and faults (a server dying mid-transfer, corrupted and
//! wrongly signed files, a full disk). Hostile friends: [`hostile`].

pub mod fake_friend;
pub mod hostile;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use mau_identity::{Account, KeyVersion, TlsIdentity};
use mau_net::runtime::Runtime;
use mau_net::sync::{FriendClient, Progress, SyncOptions, SyncReport};
use mau_net::{ClientError, RunningNode};
use mau_proto::{Contact, Fingerprint, PeerAddress};
use mau_store::{sha256_file, Store};

/// One side of a friendship: its directory, store and (once started) node.
pub struct Peer<R: Runtime> {
    /// Keeps the directory alive.
    pub dir: tempfile::TempDir,
    /// The content store (owns the account).
    pub store: Arc<Store>,
    /// The running node, serving the store.
    pub node: Option<RunningNode<R>>,
}

impl<R: Runtime> Peer<R> {
    /// The account's fingerprint.
    pub fn fpr(&self) -> Fingerprint {
        self.store.fingerprint()
    }

    /// The node (panics if stopped).
    pub fn node(&self) -> &RunningNode<R> {
        self.node.as_ref().expect("node running")
    }
}

/// Creates an account in `dir` (few keys per test: generation is slow in
/// debug builds).
pub fn account_in(dir: &Path, name: &str) -> Account {
    Account::create(dir, name, "", "test passphrase", KeyVersion::V4)
        .unwrap_or_else(|e| panic!("account {name}: {e}"))
}

/// Accounts A (in `da`) and B (in `db`), each the other's friend.
pub fn mutual_friends(da: &Path, db: &Path) -> (Account, Account) {
    let a = account_in(da, "A");
    let b = account_in(db, "B");
    a.add_friend(b.export_public().expect("export").as_bytes())
        .expect("friend");
    b.add_friend(a.export_public().expect("export").as_bytes())
        .expect("friend");
    (a, b)
}

/// The stores of [`mutual_friends`], B following A.
pub fn following_stores(da: &Path, db: &Path) -> (Arc<Store>, Arc<Store>) {
    let (a, b) = mutual_friends(da, db);
    let sa = Arc::new(Store::new(a).expect("store"));
    let sb = Arc::new(Store::new(b).expect("store"));
    sb.follow(&sa.fingerprint()).expect("follow");
    (sa, sb)
}

/// Starts a node serving `store`, joining through `bootstrap`.
pub async fn serve<R: Runtime>(
    rt: &R,
    store: &Arc<Store>,
    seed: u64,
    bootstrap: Vec<Contact<PeerAddress>>,
) -> RunningNode<R> {
    let mut cfg = crate::config(seed);
    cfg.bootstrap = bootstrap;
    cfg.content = Some(store.clone());
    let s = store.clone();
    RunningNode::start(rt.clone(), cfg, move |addr| {
        TlsIdentity::from_account(s.account(), addr)
    })
    .await
    .unwrap_or_else(|e| panic!("node failed to start: {e}"))
}

/// Two friends A and B, B following A, both serving; B joined through A.
pub async fn friends<R: Runtime>(rt: &R) -> (Peer<R>, Peer<R>) {
    friends_in(rt, None).await
}

async fn friends_in<R: Runtime>(rt: &R, b_dir: Option<PathBuf>) -> (Peer<R>, Peer<R>) {
    let da = tempfile::tempdir().expect("tempdir");
    let db = match b_dir {
        Some(p) => tempfile::tempdir_in(p).expect("tempdir"),
        None => tempfile::tempdir().expect("tempdir"),
    };
    let (sa, sb) = following_stores(da.path(), db.path());
    let na = serve(rt, &sa, 1, vec![]).await;
    let nb = serve(rt, &sb, 2, vec![na.contact()]).await;
    crate::eventually(rt, "B joined", Duration::from_secs(30), || !nb.is_joining()).await;
    (
        Peer {
            dir: da,
            store: sa,
            node: Some(na),
        },
        Peer {
            dir: db,
            store: sb,
            node: Some(nb),
        },
    )
}

fn opts() -> SyncOptions {
    SyncOptions {
        idle_timeout: Duration::from_secs(10),
        ..SyncOptions::default()
    }
}

/// B syncs A through B's node (DHT, then A's current address as fallback).
pub async fn sync_b_from_a<R: Runtime>(
    a: &Peer<R>,
    b: &Peer<R>,
    progress: &dyn Progress,
) -> SyncReport {
    let client = FriendClient::connect(
        b.node(),
        b.store.clone(),
        a.fpr(),
        &[a.node().advertised().clone()],
        opts(),
    )
    .await
    .expect("A reachable");
    client.sync(progress).await.expect("sync runs")
}

fn plain<R: Runtime>(p: &Peer<R>, owner: &Fingerprint, name: &str) -> Vec<u8> {
    let mut out = Vec::new();
    p.store
        .open(owner, name, &mut out)
        .unwrap_or_else(|e| panic!("open {name}: {e}"));
    out
}

/// A shares 250 files with B; B syncs all of them (several pages). A changes
/// 10 and adds 5; B's next sync downloads exactly those 15, keeping the old
/// copies as versions.
pub async fn sync_250_files_then_15<R: Runtime>(rt: R) {
    let (a, b) = friends(&rt).await;
    let (af, bf) = (a.fpr(), b.fpr());
    for i in 0..250 {
        a.store
            .share(
                &format!("post-{i:03}"),
                format!("post {i}").as_bytes(),
                &[bf],
            )
            .expect("share");
    }
    // Small pages, so the listing really is paginated.
    let client = FriendClient::connect(
        b.node(),
        b.store.clone(),
        af,
        &[a.node().advertised().clone()],
        SyncOptions {
            page_limit: 40,
            ..opts()
        },
    )
    .await
    .expect("A reachable");
    let listed = client.list(None).await.expect("list");
    assert_eq!(listed.items.len(), 250, "every file listed across pages");
    assert!(listed.server_time.is_some(), "the server's Date is used");
    let r = client.sync(&()).await.expect("sync");
    assert_eq!(
        (r.downloaded, r.unchanged, r.failed.len()),
        (250, 0, 0),
        "{r:?}"
    );
    assert!(r.complete);
    assert_eq!(plain(&b, &af, "post-123"), b"post 123");
    assert_eq!(b.store.files(&af).expect("files").len(), 250);
    let state = b.store.sync_state().expect("state");
    assert!(state.last_sync(&af).is_some());

    let old_sum = sha256_file(&b.store.dir_of(&af).join("post-007.pgp")).expect("sum");
    for i in 0..10 {
        a.store
            .share(
                &format!("post-{i:03}"),
                format!("post {i}, edited").as_bytes(),
                &[bf],
            )
            .expect("share");
    }
    for i in 250..255 {
        a.store
            .share(
                &format!("post-{i:03}"),
                format!("post {i}").as_bytes(),
                &[bf],
            )
            .expect("share");
    }
    let r = sync_b_from_a(&a, &b, &()).await;
    assert_eq!(r.downloaded, 15, "exactly the changed and new files: {r:?}");
    assert!(r.failed.is_empty() && r.complete, "{r:?}");
    // Files changed within a second of the last sync are listed again, and
    // skipped by size and sum.
    assert_eq!(r.unchanged, r.listed - 15, "{r:?}");
    assert_eq!(plain(&b, &af, "post-007"), b"post 7, edited");
    assert_eq!(plain(&b, &af, "post-254"), b"post 254");
    assert_eq!(b.store.files(&af).expect("files").len(), 255);
    let versions = b.store.versions(&b.store.dir_of(&af).join("post-007.pgp"));
    assert_eq!(versions, vec![old_sum], "old copy kept as a version");
    // A third sync fetches nothing.
    let r = sync_b_from_a(&a, &b, &()).await;
    assert_eq!(r.downloaded, 0, "{r:?}");
}

fn status<T: std::fmt::Debug>(r: Result<T, ClientError>) -> u16 {
    match r {
        Err(ClientError::Status { status, .. }) => status,
        other => panic!("expected an HTTP error, got {other:?}"),
    }
}

/// The Go server's behaviours: non-friends list `[]` and get 401,
/// non-recipients get 401, Range gives 206 (416 when unsatisfiable),
/// If-Modified-Since filters, versions are served, more than 100 files are
/// listed, names that could escape are refused with 400, missing is 404,
/// and a node without a store answers 404.
pub async fn content_acceptance<R: Runtime>(rt: R) {
    use hyper::header;
    let (a, b) = friends(&rt).await;
    let (af, bf) = (a.fpr(), b.fpr());
    let idle = Duration::from_secs(10);
    let shared = a
        .store
        .share("shared", &[7u8; 5000][..], &[bf])
        .expect("share");
    let first_sum = sha256_file(&shared.path).expect("sum");
    a.store.share("private", &b"mine"[..], &[]).expect("share");
    for i in 0..120 {
        a.store
            .share(&format!("n{i:03}"), &b"x"[..], &[bf])
            .expect("share");
    }
    let shared = a
        .store
        .share("shared", &[8u8; 5000][..], &[bf])
        .expect("share");
    let to_a = a.node().contact();
    let bc = b.node().client();
    let get = |path: String, headers: Vec<(header::HeaderName, String)>| {
        let bc = bc.clone();
        let to_a = to_a.clone();
        async move {
            let mut r = bc
                .get_streaming(&to_a, &path, &headers, idle)
                .await
                .expect("request");
            let body = r.collect(1 << 20).await.expect("body");
            (r.status(), r.headers().clone(), body)
        }
    };
    // A plain request (what Go sends) lists everything past 100.
    let (s, h, body) = get(format!("/p2p/{af}"), vec![]).await;
    assert_eq!(s, 200);
    assert_eq!(
        h.get(header::CONTENT_TYPE).map(|v| v.as_bytes()),
        Some(&b"application/json"[..])
    );
    let items: Vec<serde_json::Value> = serde_json::from_slice(&body).expect("json");
    assert_eq!(items.len(), 121, "120 + shared, not private");
    assert!(items.iter().all(|i| i["path"]
        .as_str()
        .is_some_and(|p| p.starts_with(&format!("/p2p/{af}/")))));
    let shared_item = items
        .iter()
        .find(|i| i["path"] == format!("/p2p/{af}/shared.pgp"))
        .expect("shared listed");
    assert_eq!(shared_item["size"], shared.size);
    assert_eq!(shared_item["sum"], sha256_file(&shared.path).expect("sum"));
    // Pages: limit and a Link to the next page.
    let (_, h, body) = get(format!("/p2p/{af}?limit=100"), vec![]).await;
    assert_eq!(
        serde_json::from_slice::<Vec<serde_json::Value>>(&body)
            .expect("json")
            .len(),
        100
    );
    let link = h
        .get(header::LINK)
        .and_then(|v| v.to_str().ok())
        .expect("link")
        .to_string();
    let next = link
        .trim_start_matches('<')
        .split('>')
        .next()
        .expect("target")
        .to_string();
    let (_, h, body) = get(next, vec![]).await;
    assert_eq!(
        serde_json::from_slice::<Vec<serde_json::Value>>(&body)
            .expect("json")
            .len(),
        21
    );
    assert!(h.get(header::LINK).is_none());
    // If-Modified-Since: the future filters everything out, the past nothing.
    let future = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(3600));
    let (_, _, body) = get(
        format!("/p2p/{af}"),
        vec![(header::IF_MODIFIED_SINCE, future)],
    )
    .await;
    assert_eq!(body, b"[]");
    // Go clients send their zero time for a full sync.
    let (_, _, body) = get(
        format!("/p2p/{af}"),
        vec![(
            header::IF_MODIFIED_SINCE,
            "Mon, 01 Jan 0001 00:00:00 GMT".into(),
        )],
    )
    .await;
    assert_eq!(
        serde_json::from_slice::<Vec<serde_json::Value>>(&body)
            .expect("json")
            .len(),
        121
    );
    let past = httpdate::fmt_http_date(SystemTime::now() - Duration::from_secs(3600));
    let (_, _, body) = get(
        format!("/p2p/{af}"),
        vec![(header::IF_MODIFIED_SINCE, past)],
    )
    .await;
    assert_eq!(
        serde_json::from_slice::<Vec<serde_json::Value>>(&body)
            .expect("json")
            .len(),
        121
    );
    let (s, _, _) = get(
        format!("/p2p/{af}"),
        vec![(header::IF_MODIFIED_SINCE, "garbage".into())],
    )
    .await;
    assert_eq!(s, 400);
    // The file, whole and in ranges.
    let stored = std::fs::read(&shared.path).expect("read");
    let (s, h, body) = get(format!("/p2p/{af}/shared.pgp"), vec![]).await;
    assert_eq!(s, 200);
    assert_eq!(body, stored);
    assert_eq!(
        h.get(header::ACCEPT_RANGES).map(|v| v.as_bytes()),
        Some(&b"bytes"[..])
    );
    assert_eq!(
        h.get(header::CONTENT_TYPE).map(|v| v.as_bytes()),
        Some(&b"application/octet-stream"[..])
    );
    let (s, h, body) = get(
        format!("/p2p/{af}/shared.pgp"),
        vec![(header::RANGE, "bytes=10-19".into())],
    )
    .await;
    assert_eq!(s, 206);
    assert_eq!(body, &stored[10..20]);
    let want = format!("bytes 10-19/{}", stored.len());
    assert_eq!(
        h.get(header::CONTENT_RANGE).and_then(|v| v.to_str().ok()),
        Some(want.as_str())
    );
    let (s, _, body) = get(
        format!("/p2p/{af}/shared.pgp"),
        vec![(header::RANGE, "bytes=-5".into())],
    )
    .await;
    assert_eq!((s, body.as_slice()), (206, &stored[stored.len() - 5..]));
    let (s, h, _) = get(
        format!("/p2p/{af}/shared.pgp"),
        vec![(header::RANGE, format!("bytes={}-", stored.len()))],
    )
    .await;
    assert_eq!(s, 416);
    let want = format!("bytes */{}", stored.len());
    assert_eq!(
        h.get(header::CONTENT_RANGE).and_then(|v| v.to_str().ok()),
        Some(want.as_str())
    );
    // The older version.
    let (s, _, body) = get(format!("/p2p/{af}/shared.pgp.version/{first_sum}"), vec![]).await;
    assert_eq!(s, 200);
    assert_eq!(mau_store::sha256_hex(&body), first_sum);
    let (s, _, _) = get(
        format!("/p2p/{af}/shared.pgp.version/{}", "0".repeat(64)),
        vec![],
    )
    .await;
    assert_eq!(s, 404);
    // Not a recipient; missing; escaping names.
    assert_eq!(
        status(
            bc.get(&to_a, &format!("/p2p/{af}/private.pgp"), 1 << 20)
                .await
        ),
        401
    );
    assert_eq!(
        status(bc.get(&to_a, &format!("/p2p/{af}/nope.pgp"), 1 << 20).await),
        404
    );
    for bad in [
        "..",
        "..%2F..%2F.mau%2Faccount.pgp",
        "a%5Cb.pgp",
        "a%00.pgp",
        ".%2E",
        &"x".repeat(400),
    ] {
        assert_eq!(
            status(bc.get(&to_a, &format!("/p2p/{af}/{bad}"), 1 << 20).await),
            400,
            "{bad}"
        );
    }
    // A stranger (valid TLS identity, not a friend): empty list, 401.
    let stranger = crate::start(&rt, 4242, crate::config(4242), vec![]).await;
    let sc = stranger.client();
    let body = sc
        .get(&to_a, &format!("/p2p/{af}"), 1 << 20)
        .await
        .expect("list");
    assert_eq!(&body[..], b"[]");
    assert_eq!(
        status(
            sc.get(&to_a, &format!("/p2p/{af}/shared.pgp"), 1 << 20)
                .await
        ),
        401
    );
    // A node without a content store.
    let to_s = stranger.contact();
    let f = stranger.fingerprint();
    assert_eq!(
        status(bc.get(&to_s, &format!("/p2p/{f}"), 1 << 20).await),
        404
    );
}

/// Stops a node after `after` bytes arrived.
struct KillAfter<R: Runtime> {
    after: u64,
    seen: Mutex<u64>,
    node: Mutex<Option<RunningNode<R>>>,
}

impl<R: Runtime> Progress for KillAfter<R> {
    fn bytes(&self, n: u64) {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        *seen += n;
        if *seen >= self.after {
            // Dropping a node stops it (without waiting for its tasks).
            drop(self.node.lock().unwrap_or_else(|e| e.into_inner()).take());
        }
    }
}

/// The server dies in the middle of a large file: nothing is installed,
/// the partial download stays, and the next sync (server restarted on a new
/// port) resumes it with `Range` instead of starting over.
pub async fn interrupted_download_resumes<R: Runtime>(rt: R) {
    let (mut a, b) = friends(&rt).await;
    let (af, bf) = (a.fpr(), b.fpr());
    let data: Vec<u8> = (0..24u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let big = a.store.share("big", &data[..], &[bf]).expect("share");
    let a_addr = a.node().advertised().clone();
    let killer = KillAfter {
        after: 512 << 10,
        seen: Mutex::new(0),
        node: Mutex::new(a.node.take()),
    };
    let client = FriendClient::connect(
        b.node(),
        b.store.clone(),
        af,
        &[a_addr],
        SyncOptions {
            concurrency: 1,
            ..opts()
        },
    )
    .await
    .expect("A reachable");
    let r = client.sync(&killer).await.expect("sync runs");
    assert_eq!(r.downloaded, 0, "{r:?}");
    assert_eq!(r.failed.len(), 1, "{r:?}");
    assert!(!r.complete);
    assert!(
        !b.store.dir_of(&af).join("big.pgp").exists(),
        "nothing installed"
    );
    let partial = b
        .store
        .partial_path(&af, "big.pgp", &sha256_file(&big.path).expect("sum"));
    let had = std::fs::metadata(&partial).map(|m| m.len()).unwrap_or(0);
    assert!(
        had > 0 && had < big.size,
        "partial download kept: {had} of {}",
        big.size
    );
    drop(killer);
    // Restart A (new port) and sync again.
    a.node = Some(serve(&rt, &a.store, 3, vec![b.node().contact()]).await);
    let r = sync_b_from_a(&a, &b, &()).await;
    assert_eq!(r.downloaded, 1, "{r:?}");
    assert_eq!(r.resumed, 1, "resumed, not restarted: {r:?}");
    assert_eq!(r.bytes, big.size - had, "only the missing bytes travelled");
    assert!(r.complete);
    assert_eq!(plain(&b, &af, "big"), data);
    assert!(!partial.exists());
}

/// A file whose bytes were corrupted at the source, and a file signed by
/// someone else, are refused; the good old copy stays and the sync state
/// does not move.
pub async fn bad_files_are_rejected<R: Runtime>(rt: R) {
    // Small files are checked in memory, large ones (over 1 MiB) as they
    // stream in, on a verifier thread beside the writer.
    for padding in [0, 2 << 20] {
        bad_files_are_rejected_with(&rt, padding).await;
    }
}

/// [`bad_files_are_rejected`] with `padding` bytes added to each file.
async fn bad_files_are_rejected_with<R: Runtime>(rt: &R, padding: usize) {
    let padded = |text: &[u8]| [text, &vec![b'.'; padding][..]].concat();
    let (a, b) = friends(rt).await;
    let (af, bf) = (a.fpr(), b.fpr());
    let doc = a
        .store
        .share("doc", &padded(b"version 1")[..], &[bf])
        .expect("share");
    let other = a
        .store
        .share("other", &padded(b"fine")[..], &[bf])
        .expect("share");
    let r = sync_b_from_a(&a, &b, &()).await;
    assert_eq!(r.downloaded, 2, "{r:?}");
    let before = b.store.sync_state().expect("state").last_sync(&af);
    // Corrupt A's "doc" in place (a flipped byte in the encrypted data).
    let mut bytes = std::fs::read(&doc.path).expect("read");
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    std::fs::write(&doc.path, &bytes).expect("write");
    // Replace "other" with a file B signed (encrypted to both): wrong signer.
    let forged = b
        .store
        .share("forged", &padded(b"evil")[..], &[af])
        .expect("share");
    std::fs::copy(&forged.path, &other.path).expect("copy");
    let r = sync_b_from_a(&a, &b, &()).await;
    assert_eq!(r.downloaded, 0, "{r:?}");
    assert_eq!(r.failed.len(), 2, "{r:?}");
    assert!(!r.complete);
    assert!(
        r.failed
            .iter()
            .any(|(n, e)| n == "other.pgp" && e.contains("signature")),
        "{r:?}"
    );
    assert_eq!(plain(&b, &af, "doc"), padded(b"version 1"));
    assert_eq!(plain(&b, &af, "other"), padded(b"fine"));
    assert_eq!(b.store.sync_state().expect("state").last_sync(&af), before);
    let leftovers: Vec<_> = std::fs::read_dir(b.store.dir_of(&af))
        .expect("dir")
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
}

/// A small tmpfs, unmounted on drop (even when the test fails).
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(size: &str) -> Option<Tmpfs> {
        let dir = std::env::temp_dir().join(format!("mau-tmpfs-{}-{size}", std::process::id()));
        std::fs::create_dir_all(&dir).ok()?;
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&dir)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            let _ = std::fs::remove_dir(&dir);
            return None;
        }
        Some(Tmpfs(dir))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
        let _ = std::fs::remove_dir(&self.0);
    }
}

/// B's directory is on a 1 MiB file system: syncing a 2 MiB file fails with
/// a clear "no space" error, B's earlier files are intact, nothing is left
/// behind and the sync state does not move; sharing a large file fails the
/// same way and keeps the old version of the file. Needs root (mount);
/// skipped with a message otherwise.
pub async fn full_disk_loses_nothing<R: Runtime>(rt: R) {
    let Some(fs) = Tmpfs::mount("1m") else {
        eprintln!("SKIPPED full_disk_loses_nothing: cannot mount a tmpfs (needs root)");
        return;
    };
    let (a, b) = friends_in(&rt, Some(fs.0.clone())).await;
    let (af, bf) = (a.fpr(), b.fpr());
    a.store
        .share("small", &b"small and safe"[..], &[bf])
        .expect("share");
    let r = sync_b_from_a(&a, &b, &()).await;
    assert_eq!(r.downloaded, 1);
    let before = b.store.sync_state().expect("state").last_sync(&af);
    let noise: Vec<u8> = (0..2u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8)
        .collect();
    a.store.share("huge", &noise[..], &[bf]).expect("share");
    a.store
        .share("small", &b"small, edited"[..], &[bf])
        .expect("share");
    let r = sync_b_from_a(&a, &b, &()).await;
    assert!(!r.complete, "{r:?}");
    let (_, why) = r
        .failed
        .iter()
        .find(|(n, _)| n == "huge.pgp")
        .expect("huge failed");
    assert!(why.contains("No space left"), "unclear error: {why}");
    assert_eq!(b.store.sync_state().expect("state").last_sync(&af), before);
    assert!(!b.store.dir_of(&af).join("huge.pgp").exists());
    let small = plain(&b, &af, "small");
    assert!(
        small == b"small and safe" || small == b"small, edited",
        "{small:?}"
    );
    // B's own share of a large file: the old version of the file stays.
    let mine = b.store.share("mine", &b"old"[..], &[]).expect("share");
    let err = b
        .store
        .share("mine", &noise[..], &[])
        .expect_err("disk is full");
    assert!(err.to_string().contains("No space left"), "{err}");
    assert_eq!(plain(&b, &bf, "mine"), b"old");
    assert_eq!(
        sha256_file(&mine.path).ok(),
        Some(mau_store::sha256_hex(
            &std::fs::read(&mine.path).expect("read")
        ))
    );
    for dir in [b.store.dir_of(&af), b.store.dir_of(&bf)] {
        let leftovers: Vec<_> = std::fs::read_dir(&dir)
            .expect("dir")
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with('.'))
            .collect();
        assert!(
            leftovers.is_empty(),
            "left behind in {}: {leftovers:?}",
            dir.display()
        );
    }
    drop((a, b));
    drop(fs);
}

/// Sets the modification time of `path`.
pub fn set_mtime(path: &Path, t: SystemTime) {
    std::fs::File::options()
        .write(true)
        .open(path)
        .and_then(|f| f.set_modified(t))
        .unwrap_or_else(|e| panic!("mtime of {}: {e}", path.display()));
}

/// B syncs a friend A whose server answers as the Go peer does (issue 14,
/// failure 3): at most 100 files per listing, oldest first, no `Link`, no
/// modification times. A shares 150 files, three per second (the three
/// with the same mtime): B's sync steps `If-Modified-Since` forward and
/// gets all 150. A shares 10 more and withdraws one: a plain sync gets the
/// 10, and `--full` retires nothing (a listing without pages may be cut,
/// so it proves nothing about what the friend no longer shares). Finally
/// 120 files dated within one second: Go cannot list past 100 of them, the
/// sync says the listing may be cut and does not move its state.
pub async fn go_friend_without_pages_loses_nothing<R: Runtime>(rt: R) {
    use fake_friend::{go_like, start};
    let (da, db) = (
        tempfile::tempdir().expect("tempdir"),
        tempfile::tempdir().expect("tempdir"),
    );
    let (sa, sb) = following_stores(da.path(), db.path());
    let (af, bf) = (sa.fingerprint(), sb.fingerprint());
    let base = SystemTime::now() - Duration::from_secs(7200);
    for i in 0..150u64 {
        let e = sa
            .share(&format!("go-{i:03}"), format!("go {i}").as_bytes(), &[bf])
            .expect("share");
        set_mtime(&e.path, base + Duration::from_secs(i / 3));
    }
    let identity = TlsIdentity::from_account(sa.account(), None).expect("identity");
    let friend = start(&rt, &identity, go_like(sa.clone(), af)).await;
    let client = |full: bool| {
        FriendClient::direct(
            rt.clone(),
            sb.clone(),
            Contact::new(af, PeerAddress::from(friend.addr)),
            SyncOptions { full, ..opts() },
        )
        .expect("client")
    };
    let r = client(false).sync(&()).await.expect("sync runs");
    println!(
        "go-like friend: {} files in {} listing requests",
        r.downloaded, r.listing_requests
    );
    assert!(r.stepped, "a listing without pages was not stepped: {r:?}");
    assert_eq!((r.downloaded, r.failures), (150, 0), "{r:?}");
    assert!(r.complete && !r.listing_truncated, "{r:?}");
    assert_eq!(sb.files(&af).expect("files").len(), 150);
    assert!(
        r.listing_requests <= 200,
        "stepping cost {} requests",
        r.listing_requests
    );
    let mut out = Vec::new();
    sb.open(&af, "go-149", &mut out).expect("open");
    assert_eq!(out, b"go 149");
    assert!(sb.sync_state().expect("state").last_sync(&af).is_some());

    // 10 more, and one withdrawn.
    for i in 150..160u64 {
        sa.share(&format!("go-{i:03}"), format!("go {i}").as_bytes(), &[bf])
            .expect("share");
    }
    std::fs::remove_file(sa.dir_of(&af).join("go-000.pgp")).expect("withdraw");
    let r = client(false).sync(&()).await.expect("sync runs");
    assert_eq!((r.downloaded, r.failures), (10, 0), "{r:?}");
    assert!(r.complete, "{r:?}");
    let r = client(true).sync(&()).await.expect("sync runs");
    assert_eq!((r.downloaded, r.failures), (0, 0), "{r:?}");
    assert!(
        r.retired.is_empty(),
        "retired on a listing without pages: {r:?}"
    );
    assert_eq!(sb.files(&af).expect("files").len(), 160);

    // 120 files in one second (after the sync mark): more than Go's page
    // can reach.
    let second = SystemTime::now() + Duration::from_secs(2);
    for i in 0..120u64 {
        let e = sa
            .share(&format!("tie-{i:03}"), format!("tie {i}").as_bytes(), &[bf])
            .expect("share");
        set_mtime(&e.path, second);
    }
    let before = sb.sync_state().expect("state").last_sync(&af);
    let r = client(false).sync(&()).await.expect("sync runs");
    assert!(r.listing_truncated && !r.complete, "{r:?}");
    assert!(r.downloaded >= 100, "{r:?}");
    assert_eq!(sb.sync_state().expect("state").last_sync(&af), before);
    drop(friend);
}

/// A plain sync (not `--full`) notices a file the friend withdrew: it is
/// retired (kept as a version, no longer current) with nothing downloaded,
/// for one more listing request (the names of the whole listing).
pub async fn plain_sync_retires_withdrawn_files<R: Runtime>(rt: R) {
    let (a, b) = friends(&rt).await;
    let (af, bf) = (a.fpr(), b.fpr());
    for i in 0..5 {
        a.store
            .share(&format!("note-{i}"), format!("note {i}").as_bytes(), &[bf])
            .expect("share");
    }
    let r = sync_b_from_a(&a, &b, &()).await;
    assert_eq!((r.downloaded, r.failures), (5, 0), "{r:?}");
    a.store.delete("note-2").expect("delete");
    let kept = b.store.dir_of(&af).join("note-2.pgp");
    let sum = sha256_file(&kept).expect("sum");
    let r = sync_b_from_a(&a, &b, &()).await;
    assert!(r.complete, "{r:?}");
    assert_eq!(r.downloaded, 0, "{r:?}");
    assert_eq!(r.retired, vec!["note-2.pgp".to_string()], "{r:?}");
    assert_eq!(r.listing_requests, 2, "incremental + names: {r:?}");
    assert!(!kept.exists());
    assert_eq!(
        b.store.versions(&kept),
        vec![sum],
        "old copy kept as a version"
    );
    assert_eq!(b.store.files(&af).expect("files").len(), 4);
    // Nothing withdrawn: nothing retired.
    let r = sync_b_from_a(&a, &b, &()).await;
    assert!(r.retired.is_empty() && r.complete, "{r:?}");
}

/// A friend on a Go-like server with files dated at random (seeded): runs
/// of files in one second (up to 60, below Go's page), neighbours a second
/// apart, gaps of up to a day; after each of 3 rounds of 120 more files
/// (anywhere in the past month) a `--full` sync has every file, reports a
/// whole walk, and never retires anything.
pub async fn go_friend_random_dates_all_arrive<R: Runtime>(rt: R) {
    use fake_friend::{go_like, start};
    let (da, db) = (
        tempfile::tempdir().expect("tempdir"),
        tempfile::tempdir().expect("tempdir"),
    );
    let (sa, sb) = following_stores(da.path(), db.path());
    let (af, bf) = (sa.fingerprint(), sb.fingerprint());
    let identity = TlsIdentity::from_account(sa.account(), None).expect("identity");
    let friend = start(&rt, &identity, go_like(sa.clone(), af)).await;
    let client = FriendClient::direct(
        rt.clone(),
        sb.clone(),
        Contact::new(af, PeerAddress::from(friend.addr)),
        SyncOptions {
            full: true,
            ..opts()
        },
    )
    .expect("client");
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let mut rng = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let month_ago = SystemTime::now() - Duration::from_secs(30 * 86_400);
    let mut per_second = std::collections::HashMap::<u64, usize>::new();
    for round in 0..3 {
        let mut at = rng() % (29 * 86_400);
        let mut run = 0;
        for i in 0..120 {
            match rng() % 4 {
                // Same second (another nanosecond, or the very same time).
                0 | 1 if run < 60 => run += 1,
                2 => (at, run) = (at + 1, 0),
                _ => (at, run) = (at + rng() % 86_400, 0),
            }
            // Never as many in one second as Go's page holds.
            at = at.min(29 * 86_400);
            while per_second.get(&at).copied().unwrap_or(0) >= 60 {
                at += 1;
            }
            *per_second.entry(at).or_insert(0) += 1;
            let e = sa
                .share(&format!("r{round}-{i:03}"), &b"x"[..], &[bf])
                .expect("share");
            let nanos = if rng() % 2 == 0 {
                0
            } else {
                rng() % 1_000_000_000
            };
            set_mtime(&e.path, month_ago + Duration::new(at, nanos as u32));
        }
        let r = client.sync(&()).await.expect("sync runs");
        println!(
            "go-like random dates, round {round}: {} new files in {} listing requests",
            r.downloaded, r.listing_requests
        );
        assert!(r.complete && !r.listing_truncated, "{r:?}");
        assert!(r.retired.is_empty(), "{r:?}");
        assert_eq!((r.downloaded, r.failures), (120, 0), "round {round}: {r:?}");
        assert_eq!(sb.files(&af).expect("files").len(), 120 * (round + 1));
    }
}
