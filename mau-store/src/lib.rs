//! # mau-store: content files on disk, the Go implementation's layout
//!
//! ```text
//! <root>/.mau/account.pgp                 the account (mau-identity)
//! <root>/.mau/<fpr>.pgp                   friends' public keys (mau-identity)
//! <root>/.mau-rs/sync_state.json          {"last_sync":{"<fpr>":"<RFC3339>"}} (mau-rs's own state)
//! <root>/<own fpr>/<name>.pgp             own files: signed by us, encrypted to us + recipients
//! <root>/<own fpr>/<name>.pgp.versions/<sha256>   older versions
//! <root>/<friend fpr>/<name>.pgp          a followed friend's files (following = the directory exists)
//! <root>/.<friend fpr>/                   an unfollowed friend's files (kept, hidden)
//! <root>/<fpr>/.<name>.part.<sha256>      a download in progress (hidden, resumable)
//! ```
//!
//! Every file replacement is atomic (temporary file, fsync, rename, fsync of
//! the directory) and the replaced bytes are first hard-linked into
//! `<name>.pgp.versions/<sha256>`: at every instant the current file is
//! either the old or the new one, and the old one is never lost. A
//! downloaded file replaces nothing before its size, SHA-256, signature (by
//! the friend whose directory it goes to) and decryption (to us) are checked.
//!
//! Everything here is blocking file I/O; the async servers call it inline
//! (small metadata operations, cached) — see `docs/sync.md`.

#![warn(missing_docs)]
#![forbid(unsafe_code)]

mod batch;
mod dir_sync;
mod state;
mod writeback;

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mau_identity::openpgp::{Cert, KeyHandle};
use mau_identity::{content, Account, ContentError, IdentityError};
use mau_proto::Fingerprint;

pub use batch::{Flush, Staged};
pub use state::{format_rfc3339, parse_rfc3339, SyncState, SYNC_STATE_FILE};
pub use writeback::WriteBack;

/// Suffix of content files.
pub const PGP_SUFFIX: &str = ".pgp";
/// Suffix of a content file's directory of older versions.
pub const VERSIONS_SUFFIX: &str = ".versions";
/// Longest accepted file name, in bytes (so that `<name>.versions` still
/// fits the usual 255-byte limit of file systems).
pub const MAX_NAME_LEN: usize = 255 - VERSIONS_SUFFIX.len();

/// What went wrong in the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A file operation failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The OS error (e.g. "No space left on device").
        source: io::Error,
    },
    /// A file name that could escape its directory or is otherwise unusable.
    #[error("invalid file name {name:?}: {reason}")]
    InvalidName {
        /// The name as given.
        name: String,
        /// Why it is refused.
        reason: &'static str,
    },
    /// An account or friend operation failed.
    #[error(transparent)]
    Identity(#[from] IdentityError),
    /// Signing, encrypting, verifying or decrypting failed.
    #[error(transparent)]
    Content(#[from] ContentError),
    /// The file does not exist.
    #[error("no such file: {0}")]
    NotFound(String),
    /// The account has no friend with this fingerprint.
    #[error("{0} is not a friend")]
    NotFriend(Fingerprint),
    /// A downloaded file has another size than announced.
    #[error("size mismatch: expected {expected} bytes, got {actual}")]
    SizeMismatch {
        /// Announced size.
        expected: u64,
        /// Size received.
        actual: u64,
    },
    /// A downloaded file has another SHA-256 than announced.
    #[error("checksum mismatch: expected {expected}, got {actual}")]
    SumMismatch {
        /// Announced sum.
        expected: String,
        /// Sum of what was received.
        actual: String,
    },
    /// A state file could not be parsed.
    #[error("{}: {reason}", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// The parse error.
        reason: String,
    },
}

impl StoreError {
    /// An I/O error on `path`.
    pub fn io(path: &Path, source: io::Error) -> Self {
        StoreError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Checks that `name` is a single, visible file name: not empty, at most
/// [`MAX_NAME_LEN`] bytes, without `/`, `\`, `..` or control characters
/// (below 0x20, and 0x7f: a name is printed, and `\n` or an escape sequence
/// would forge lines or drive the terminal), not starting with `.` (hidden
/// names are the store's temporary and partial files). The one check of
/// names, on the serving side (requests, listings) and the fetching side.
pub fn validate_name(name: &str) -> Result<(), StoreError> {
    let bad = |reason| {
        Err(StoreError::InvalidName {
            name: name.chars().take(80).collect(),
            reason,
        })
    };
    if name.is_empty() {
        return bad("empty");
    }
    if name.len() > MAX_NAME_LEN {
        return bad("too long");
    }
    if name.contains(['/', '\\']) {
        return bad("contains a path separator");
    }
    if name.chars().any(|c| c < ' ' || c == '\x7f') {
        return bad("contains a control character");
    }
    if name.contains("..") {
        return bad("contains \"..\"");
    }
    if name.starts_with('.') {
        return bad("starts with a dot");
    }
    Ok(())
}

/// `name` for printing: control characters (and any other character
/// `char::escape_debug` escapes) as escapes, so that a name from a friend
/// cannot forge output lines or send terminal escape sequences.
pub fn escaped(name: &str) -> String {
    name.escape_debug().to_string()
}

/// `name` with the `.pgp` suffix (added if missing, as Go does).
pub fn content_name(name: &str) -> String {
    if name.ends_with(PGP_SUFFIX) {
        name.to_string()
    } else {
        format!("{name}{PGP_SUFFIX}")
    }
}

/// Lowercase hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(ring::digest::digest(&ring::digest::SHA256, bytes).as_ref())
}

/// Lowercase hex SHA-256 of a file, streamed.
pub fn sha256_file(path: &Path) -> Result<String, StoreError> {
    let mut hasher = Sha256::default();
    hasher.read_from(path, u64::MAX)?;
    Ok(hasher.finish())
}

/// An incremental SHA-256 (for hashing a download as it arrives).
pub struct Sha256(ring::digest::Context);

impl Default for Sha256 {
    fn default() -> Self {
        Sha256(ring::digest::Context::new(&ring::digest::SHA256))
    }
}

impl Sha256 {
    /// Adds bytes.
    pub fn update(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    /// The digest, lowercase hex.
    pub fn finish(self) -> String {
        hex(self.0.finish().as_ref())
    }

    /// The state after the first `len` bytes of the file at `path` (a
    /// resumed download hashes what it keeps, then the rest as it
    /// arrives). A shorter file is an error.
    pub fn of_prefix(path: &Path, len: u64) -> Result<Sha256, StoreError> {
        let mut hasher = Sha256::default();
        if hasher.read_from(path, len)? != len {
            return Err(StoreError::io(
                path,
                std::io::ErrorKind::UnexpectedEof.into(),
            ));
        }
        Ok(hasher)
    }

    /// Adds at most `limit` bytes read from the start of the file at
    /// `path`; returns how many.
    fn read_from(&mut self, path: &Path, limit: u64) -> Result<u64, StoreError> {
        let io = |e| StoreError::io(path, e);
        let mut f = File::open(path).map_err(io)?.take(limit);
        let mut buf = vec![0u8; 256 * 1024];
        let mut total = 0u64;
        loop {
            let n = f.read(&mut buf).map_err(io)?;
            if n == 0 {
                return Ok(total);
            }
            total += n as u64;
            self.update(&buf[..n]);
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// Whether `s` looks like a SHA-256 in lowercase hex.
pub fn is_sum(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// One content file in a directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileEntry {
    /// File name, with `.pgp`.
    pub name: String,
    /// Full path.
    pub path: PathBuf,
    /// Size in bytes.
    pub size: u64,
    /// Modification time.
    pub modified: SystemTime,
}

impl FileEntry {
    fn key(&self) -> (u128, &str) {
        (nanos(self.modified), &self.name)
    }
}

fn nanos(t: SystemTime) -> u128 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

/// A position in a listing ordered by (modification time, name): the
/// listing continues strictly after it. Encoded for URLs as
/// `<unix nanoseconds>-<hex of the name>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cursor {
    /// Modification time of the last entry, in nanoseconds since the epoch.
    pub modified_nanos: u128,
    /// Name of the last entry.
    pub name: String,
}

impl Cursor {
    /// The cursor right after `e`.
    pub fn after(e: &FileEntry) -> Self {
        Cursor {
            modified_nanos: nanos(e.modified),
            name: e.name.clone(),
        }
    }

    /// URL-safe text form.
    pub fn encode(&self) -> String {
        format!("{}-{}", self.modified_nanos, hex(self.name.as_bytes()))
    }

    /// Parses [`Cursor::encode`]'s form.
    pub fn decode(s: &str) -> Option<Cursor> {
        let (t, h) = s.split_once('-')?;
        // Digits and hex digits only (`parse` and `from_str_radix` take a `+`).
        if !t.bytes().all(|b| b.is_ascii_digit()) || !h.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let modified_nanos = t.parse().ok()?;
        if h.len() % 2 != 0 || h.len() > 2 * MAX_NAME_LEN {
            return None;
        }
        let bytes: Option<Vec<u8>> = (0..h.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(h.get(i..i + 2)?, 16).ok())
            .collect();
        let name = String::from_utf8(bytes?).ok()?;
        Some(Cursor {
            modified_nanos,
            name,
        })
    }
}

/// One page of a listing.
#[derive(Clone, Debug, Default)]
pub struct Page {
    /// The entries that passed the filter, oldest first.
    pub entries: Vec<FileEntry>,
    /// Where the next page starts, if anything is left.
    pub next: Option<Cursor>,
}

/// What the store knows about a file without decrypting it.
#[derive(Clone, Debug)]
pub struct FileMeta {
    /// SHA-256 of the stored bytes, lowercase hex.
    pub sum: String,
    /// Key handles the file is encrypted to.
    pub recipients: Vec<KeyHandle>,
}

#[derive(Clone)]
struct CachedMeta {
    size: u64,
    modified: SystemTime,
    meta: Arc<FileMeta>,
}

#[derive(Clone)]
struct CachedFriend {
    stamp: Option<(u64, SystemTime)>,
    checked: std::time::Instant,
    cert: Option<Arc<Cert>>,
}

/// How long a friend key looked up in a sub-keyring (not `.mau/<fpr>.pgp`)
/// is cached.
const FRIEND_CACHE_TTL: Duration = Duration::from_secs(10);
/// Most cached file metadata entries.
const META_CACHE_MAX: usize = 100_000;

/// The content store of one account.
pub struct Store {
    root: PathBuf,
    account: Account,
    meta: Mutex<HashMap<PathBuf, CachedMeta>>,
    friends: Mutex<HashMap<Fingerprint, CachedFriend>>,
    state: Mutex<()>,
    /// Directory fsyncs shared by installs done together.
    dir_sync: dir_sync::DirSync,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("root", &self.root)
            .field("fingerprint", &self.account.fingerprint())
            .finish_non_exhaustive()
    }
}

fn mkdir_private(path: &Path) -> Result<(), StoreError> {
    mau_identity::create_private_dir(path).map_err(|e| StoreError::io(path, e))
}

pub(crate) fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    mau_identity::sync_dir(dir).map_err(|e| StoreError::io(dir, e))
}

/// A new hidden temporary file next to `dest` (mode 0600).
fn temp_beside(dest: &Path) -> Result<(PathBuf, File), StoreError> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let dir = dest.parent().unwrap_or(Path::new("."));
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(
        ".{name}.tmp.{}.{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let mut o = fs::OpenOptions::new();
    o.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(0o600);
    }
    let f = o.open(&tmp).map_err(|e| StoreError::io(&tmp, e))?;
    Ok((tmp, f))
}

/// Renames `tmp` over `dest` (same directory), first hard-linking an
/// existing `dest` into `<dest>.versions/<sha256>` (made durable before
/// the rename, so the old copy is never lost). The rename itself is
/// durable only once `dest`'s directory is fsynced: the caller's part.
/// A missing `tmp` is an error before anything is linked.
fn place(tmp: &Path, dest: &Path) -> Result<(), StoreError> {
    // Most files are new: one rename that refuses to replace says so in
    // one call (a sync of 1,000 small files spent ~4% of its samples in
    // the two `stat`s it replaces). It fails on a missing `tmp` before
    // looking at `dest`.
    match rename_new(tmp, dest) {
        Ok(true) => return Ok(()),
        Ok(false) => {}
        Err(e) => return Err(StoreError::io(tmp, e)),
    }
    if !tmp.exists() {
        let e = io::Error::from(io::ErrorKind::NotFound);
        return Err(StoreError::io(tmp, e));
    }
    if dest.is_file() {
        let sum = sha256_file(dest)?;
        let vdir = versions_dir(dest);
        mkdir_private(&vdir)?;
        let vpath = vdir.join(&sum);
        match fs::hard_link(dest, &vpath) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(StoreError::io(&vpath, e)),
        }
        sync_dir(&vdir)?;
    }
    fs::rename(tmp, dest).map_err(|e| StoreError::io(dest, e))
}

/// Renames `tmp` to `dest` if nothing is at `dest`: true if renamed,
/// false if `dest` exists or the file system cannot say (then nothing
/// was done).
#[cfg(target_os = "linux")]
fn rename_new(tmp: &Path, dest: &Path) -> io::Result<bool> {
    use rustix::fs::{renameat_with, RenameFlags, CWD};
    use rustix::io::Errno;
    match renameat_with(CWD, tmp, CWD, dest, RenameFlags::NOREPLACE) {
        Ok(()) => Ok(true),
        Err(Errno::EXIST | Errno::INVAL | Errno::NOSYS | Errno::OPNOTSUPP) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

#[cfg(not(target_os = "linux"))]
fn rename_new(_tmp: &Path, _dest: &Path) -> io::Result<bool> {
    Ok(false)
}

/// Removes a temporary file when dropped unless disarmed.
struct TempGuard(Option<PathBuf>);

impl Drop for TempGuard {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = fs::remove_file(p);
        }
    }
}

impl Store {
    /// The store of `account` (which must live in a directory).
    pub fn new(account: Account) -> Result<Store, StoreError> {
        let root = account
            .root()
            .ok_or(StoreError::Identity(IdentityError::NoDirectory))?
            .to_path_buf();
        Ok(Store {
            root,
            account,
            meta: Mutex::new(HashMap::new()),
            friends: Mutex::new(HashMap::new()),
            state: Mutex::new(()),
            dir_sync: dir_sync::DirSync::default(),
        })
    }

    /// The account directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The account.
    pub fn account(&self) -> &Account {
        &self.account
    }

    /// The account's fingerprint.
    pub fn fingerprint(&self) -> Fingerprint {
        self.account.fingerprint()
    }

    /// `<root>/<fpr>`: own files, or a followed friend's.
    pub fn dir_of(&self, fpr: &Fingerprint) -> PathBuf {
        self.root.join(fpr.to_string())
    }

    /// `<root>/.<fpr>`: an unfollowed friend's files.
    pub fn hidden_dir_of(&self, fpr: &Fingerprint) -> PathBuf {
        self.root.join(format!(".{fpr}"))
    }

    /// The directory whose files are served for `fpr`: `<root>/<fpr>`, or
    /// `<root>/.<fpr>` for an unfollowed friend (as Go resolves it).
    pub fn served_dir(&self, fpr: &Fingerprint) -> Option<PathBuf> {
        [self.dir_of(fpr), self.hidden_dir_of(fpr)]
            .into_iter()
            .find(|d| d.is_dir())
    }

    fn cached_friend(&self, fpr: &Fingerprint) -> Result<Option<Arc<Cert>>, StoreError> {
        let top = self
            .root
            .join(mau_identity::MAU_DIR)
            .join(format!("{fpr}.pgp"));
        let stamp = fs::metadata(&top)
            .ok()
            .and_then(|m| Some((m.len(), m.modified().ok()?)));
        {
            let cache = self.friends.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(c) = cache.get(fpr) {
                let fresh = match (c.stamp, stamp) {
                    (Some(a), Some(b)) => a == b,
                    (None, None) => c.checked.elapsed() < FRIEND_CACHE_TTL,
                    _ => false,
                };
                if fresh {
                    return Ok(c.cert.clone());
                }
            }
        }
        let cert = match self.account.friend(fpr) {
            Ok(f) => Some(Arc::new(f.cert().clone())),
            Err(IdentityError::FriendNotFound(_)) => None,
            Err(e) => return Err(e.into()),
        };
        let mut cache = self.friends.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() > 10_000 {
            cache.clear();
        }
        cache.insert(
            *fpr,
            CachedFriend {
                stamp,
                checked: std::time::Instant::now(),
                cert: cert.clone(),
            },
        );
        Ok(cert)
    }

    /// The friend's public key (cached; re-read when its file changes).
    pub fn friend_cert(&self, fpr: &Fingerprint) -> Result<Arc<Cert>, StoreError> {
        self.cached_friend(fpr)?.ok_or(StoreError::NotFriend(*fpr))
    }

    /// Whether `caller` is a friend among the recipients of the file `meta`
    /// describes (the Go server's rule: only friends' keys count).
    pub fn may_read(&self, caller: &Fingerprint, meta: &FileMeta) -> bool {
        match self.cached_friend(caller) {
            Ok(Some(cert)) => content::is_recipient(&meta.recipients, &cert),
            Ok(None) => false,
            Err(e) => {
                tracing::warn!(%caller, error = %e, "cannot read a friend's key");
                false
            }
        }
    }

    /// Size, modification time, SHA-256 and recipients of a file (cached
    /// until its size or modification time changes).
    pub fn meta(&self, path: &Path) -> Result<(FileEntry, Arc<FileMeta>), StoreError> {
        let md = fs::metadata(path).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => StoreError::NotFound(path.display().to_string()),
            _ => StoreError::io(path, e),
        })?;
        if !md.is_file() {
            return Err(StoreError::NotFound(path.display().to_string()));
        }
        let modified = md.modified().map_err(|e| StoreError::io(path, e))?;
        let entry = FileEntry {
            name: path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            path: path.to_path_buf(),
            size: md.len(),
            modified,
        };
        {
            let cache = self.meta.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(c) = cache.get(path) {
                if c.size == entry.size && c.modified == modified {
                    return Ok((entry, c.meta.clone()));
                }
            }
        }
        let sum = sha256_file(path)?;
        let recipients = {
            let f = File::open(path).map_err(|e| StoreError::io(path, e))?;
            content::recipients(io::BufReader::new(f)).unwrap_or_default()
        };
        let meta = Arc::new(FileMeta { sum, recipients });
        let mut cache = self.meta.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= META_CACHE_MAX {
            cache.clear();
        }
        cache.insert(
            path.to_path_buf(),
            CachedMeta {
                size: entry.size,
                modified,
                meta: meta.clone(),
            },
        );
        Ok((entry, meta))
    }

    /// Every content file (`*.pgp`, not hidden) in `dir`, oldest first
    /// (ties by name).
    pub fn files_in(&self, dir: &Path) -> Result<Vec<FileEntry>, StoreError> {
        let rd = match fs::read_dir(dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(StoreError::io(dir, e)),
        };
        let mut out = Vec::new();
        for entry in rd {
            let entry = entry.map_err(|e| StoreError::io(dir, e))?;
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            // Hidden (the store's own temporary files) or unusable names
            // (e.g. control characters, written by another program) are
            // neither listed nor served.
            if !name.ends_with(PGP_SUFFIX) || validate_name(&name).is_err() {
                continue;
            }
            let Ok(md) = entry.metadata() else { continue };
            if !md.is_file() {
                continue;
            }
            out.push(FileEntry {
                path: entry.path(),
                name,
                size: md.len(),
                modified: md.modified().unwrap_or(UNIX_EPOCH),
            });
        }
        out.sort_by(|a, b| a.key().cmp(&b.key()));
        Ok(out)
    }

    /// Content files of `fpr` (own or a friend's), oldest first.
    pub fn files(&self, fpr: &Fingerprint) -> Result<Vec<FileEntry>, StoreError> {
        match self.served_dir(fpr) {
            Some(d) => self.files_in(&d),
            None => Ok(Vec::new()),
        }
    }

    /// One page of `fpr`'s files modified at or after `since`, strictly after
    /// `cursor`, keeping those `keep` accepts: at most `limit` entries, and
    /// at most `scan` files examined (so a page can be empty but still have
    /// a next cursor).
    pub fn page(
        &self,
        fpr: &Fingerprint,
        since: Option<SystemTime>,
        cursor: Option<&Cursor>,
        limit: usize,
        scan: usize,
        mut keep: impl FnMut(&FileEntry) -> bool,
    ) -> Result<Page, StoreError> {
        let all = self.files(fpr)?;
        let since = since.map(nanos);
        let mut page = Page::default();
        let mut last: Option<&FileEntry> = None;
        let candidates = all.iter().filter(|e| {
            since.is_none_or(|s| nanos(e.modified) >= s)
                && cursor.is_none_or(|c| e.key() > (c.modified_nanos, c.name.as_str()))
        });
        for (scanned, e) in candidates.enumerate() {
            if page.entries.len() >= limit || scanned >= scan {
                page.next = last.map(Cursor::after);
                return Ok(page);
            }
            last = Some(e);
            if keep(e) {
                page.entries.push(e.clone());
            }
        }
        Ok(page)
    }

    /// Path of own file `name` (validated; `.pgp` added).
    pub fn own_path(&self, name: &str) -> Result<PathBuf, StoreError> {
        let name = content_name(name);
        validate_name(&name)?;
        Ok(self.dir_of(&self.fingerprint()).join(name))
    }

    /// Signs and encrypts `input` to the account and `recipients` (friends),
    /// and stores it as own file `name` (`.pgp` added). A file of that name
    /// is replaced atomically, its old bytes kept as a version.
    pub fn share(
        &self,
        name: &str,
        input: impl Read,
        recipients: &[Fingerprint],
    ) -> Result<FileEntry, StoreError> {
        let dest = self.own_path(name)?;
        let certs = recipients
            .iter()
            .map(|f| self.friend_cert(f))
            .collect::<Result<Vec<_>, _>>()?;
        let refs: Vec<&Cert> = certs.iter().map(|c| c.as_ref()).collect();
        let dir = dest.parent().unwrap_or(Path::new("."));
        mkdir_private(dir)?;
        let (tmp, file) = temp_beside(&dest)?;
        let guard = TempGuard(Some(tmp.clone()));
        let mut w = io::BufWriter::with_capacity(256 * 1024, file);
        self.account
            .seal(input, &mut w, &refs)
            .map_err(|e| match e {
                ContentError::Io(source) => StoreError::Io {
                    path: tmp.clone(),
                    source,
                },
                e => e.into(),
            })?;
        let file = w
            .into_inner()
            .map_err(|e| StoreError::io(&tmp, e.into_error()))?;
        file.sync_all().map_err(|e| StoreError::io(&tmp, e))?;
        drop(file);
        self.install(&tmp, &dest)?;
        std::mem::forget(guard);
        tracing::info!(file = %dest.display(), recipients = recipients.len(), "shared a file");
        self.meta(&dest).map(|(e, _)| e)
    }

    /// Moves the synced temporary file `tmp` to `dest` (same directory):
    /// an existing `dest` is first hard-linked into
    /// `<dest>.versions/<sha256>`, then `tmp` is renamed over it.
    pub fn install(&self, tmp: &Path, dest: &Path) -> Result<(), StoreError> {
        let dir = dest.parent().unwrap_or(Path::new("."));
        place(tmp, dest)?;
        // Shared with the installs into `dir` done at the same time.
        self.dir_sync.renamed_into(dir)
    }

    /// Deletes own file `name` and its versions (as Go's `mau delete`).
    pub fn delete(&self, name: &str) -> Result<(), StoreError> {
        let path = self.own_path(name)?;
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(StoreError::NotFound(content_name(name)))
            }
            Err(e) => return Err(StoreError::io(&path, e)),
        }
        let vdir = versions_dir(&path);
        match fs::remove_dir_all(&vdir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(StoreError::io(&vdir, e)),
        }
        if let Some(dir) = path.parent() {
            sync_dir(dir)?;
        }
        tracing::info!(file = %path.display(), "deleted a file");
        Ok(())
    }

    /// Path of a stored older version of `fpr`'s `name`.
    pub fn version_path(
        &self,
        fpr: &Fingerprint,
        name: &str,
        sum: &str,
    ) -> Result<PathBuf, StoreError> {
        validate_name(name)?;
        if !is_sum(sum) {
            return Err(StoreError::InvalidName {
                name: sum.chars().take(80).collect(),
                reason: "a version is a lowercase hex SHA-256",
            });
        }
        let dir = self
            .served_dir(fpr)
            .ok_or_else(|| StoreError::NotFound(name.to_string()))?;
        Ok(versions_dir(&dir.join(name)).join(sum))
    }

    /// The sums of the stored older versions of `path`.
    pub fn versions(&self, path: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(versions_dir(path))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| is_sum(n))
            .collect();
        v.sort();
        v
    }

    /// Follows `fpr` (a friend): creates `<root>/<fpr>`, or renames
    /// `<root>/.<fpr>` back.
    pub fn follow(&self, fpr: &Fingerprint) -> Result<(), StoreError> {
        self.friend_cert(fpr)?;
        let dir = self.dir_of(fpr);
        if dir.is_dir() {
            return Ok(());
        }
        let hidden = self.hidden_dir_of(fpr);
        if hidden.is_dir() {
            fs::rename(&hidden, &dir).map_err(|e| StoreError::io(&dir, e))?;
        } else {
            mkdir_private(&dir)?;
        }
        sync_dir(&self.root)
    }

    /// Unfollows `fpr`: renames `<root>/<fpr>` to `<root>/.<fpr>` (its files
    /// are kept).
    pub fn unfollow(&self, fpr: &Fingerprint) -> Result<(), StoreError> {
        let dir = self.dir_of(fpr);
        if !dir.is_dir() {
            return Ok(());
        }
        let hidden = self.hidden_dir_of(fpr);
        if hidden.exists() {
            // An older unfollowed copy: keep it under a unique name.
            let stamp = nanos(SystemTime::now());
            let old = self.root.join(format!(".{fpr}.{stamp}"));
            fs::rename(&hidden, &old).map_err(|e| StoreError::io(&old, e))?;
        }
        fs::rename(&dir, &hidden).map_err(|e| StoreError::io(&hidden, e))?;
        sync_dir(&self.root)
    }

    /// The friends followed: directories named by a friend's fingerprint.
    pub fn followed(&self) -> Result<Vec<Fingerprint>, StoreError> {
        let own = self.fingerprint();
        let mut out = Vec::new();
        let rd = fs::read_dir(&self.root).map_err(|e| StoreError::io(&self.root, e))?;
        for entry in rd.flatten() {
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            let Ok(fpr) = Fingerprint::parse(&name) else {
                continue;
            };
            if fpr == own || !entry.path().is_dir() || name != fpr.to_string() {
                continue;
            }
            if self.cached_friend(&fpr)?.is_some() {
                out.push(fpr);
            }
        }
        out.sort();
        Ok(out)
    }

    /// Where a download of `fpr`'s `name` with sum `sum` is kept while in
    /// progress (hidden, so never listed or served).
    pub fn partial_path(&self, fpr: &Fingerprint, name: &str, sum: &str) -> PathBuf {
        self.dir_of(fpr).join(format!(".{name}.part.{sum}"))
    }

    /// Checks a completely downloaded `partial` against the announced size
    /// and sum, the signature of `fpr` and decryption to us, then installs
    /// it as `<root>/<fpr>/<name>` (the old copy kept as a version). On a
    /// verification failure the partial file is removed and nothing else
    /// changes.
    pub fn accept_download(
        &self,
        fpr: &Fingerprint,
        name: &str,
        partial: &Path,
        size: u64,
        sum: &str,
    ) -> Result<PathBuf, StoreError> {
        self.accept_download_hashed(fpr, name, partial, size, sum, None)
    }

    /// [`Store::accept_download`] when the caller hashed the bytes as it
    /// wrote them (`hashed`: their SHA-256), which saves reading the file
    /// once more.
    pub fn accept_download_hashed(
        &self,
        fpr: &Fingerprint,
        name: &str,
        partial: &Path,
        size: u64,
        sum: &str,
        hashed: Option<String>,
    ) -> Result<PathBuf, StoreError> {
        self.accept(fpr, name, partial, size, sum, hashed, false)
    }

    /// [`Store::accept_download`] for bytes the caller hashed (`hashed`)
    /// and checked with [`Store::verify_reader`] as they arrived: the file
    /// is not read again.
    pub fn accept_download_verified(
        &self,
        fpr: &Fingerprint,
        name: &str,
        partial: &Path,
        size: u64,
        sum: &str,
        hashed: String,
    ) -> Result<PathBuf, StoreError> {
        self.accept(fpr, name, partial, size, sum, Some(hashed), true)
    }

    #[allow(clippy::too_many_arguments)]
    fn accept(
        &self,
        fpr: &Fingerprint,
        name: &str,
        partial: &Path,
        size: u64,
        sum: &str,
        hashed: Option<String>,
        verified: bool,
    ) -> Result<PathBuf, StoreError> {
        validate_name(name)?;
        let dest = self.dir_of(fpr).join(name);
        self.check_download(fpr, partial, size, sum, hashed, verified)?;
        let mut guard = TempGuard(Some(partial.to_path_buf()));
        File::open(partial)
            .and_then(|f| f.sync_all())
            .map_err(|e| StoreError::io(partial, e))?;
        self.install(partial, &dest)?;
        guard.0 = None;
        Ok(dest)
    }

    /// Checks a completely downloaded `partial` as
    /// [`Store::accept_download`] does (size, sum unless `hashed` gives
    /// it, signature and decryption unless `verified`), without making it
    /// durable or installing it: see [`Store::commit_downloads`]. A file
    /// that fails is removed.
    pub fn check_download(
        &self,
        fpr: &Fingerprint,
        partial: &Path,
        size: u64,
        sum: &str,
        hashed: Option<String>,
        verified: bool,
    ) -> Result<(), StoreError> {
        let mut guard = TempGuard(Some(partial.to_path_buf()));
        let actual = fs::metadata(partial)
            .map_err(|e| StoreError::io(partial, e))?
            .len();
        if actual != size {
            return Err(StoreError::SizeMismatch {
                expected: size,
                actual,
            });
        }
        let actual = match hashed {
            Some(h) => h,
            None => sha256_file(partial)?,
        };
        if actual != sum {
            return Err(StoreError::SumMismatch {
                expected: sum.to_string(),
                actual,
            });
        }
        if !verified {
            self.verify(fpr, partial)?;
        }
        guard.0 = None;
        Ok(())
    }

    /// Checks that `path` is signed by `signer` and decrypts for us.
    pub fn verify(&self, signer: &Fingerprint, path: &Path) -> Result<(), StoreError> {
        let f = File::open(path).map_err(|e| StoreError::io(path, e))?;
        self.verify_reader(signer, io::BufReader::new(f))
    }

    /// Checks that the bytes `input` yields are signed by `signer` and
    /// decrypt for us (e.g. a download, as it arrives).
    pub fn verify_reader(
        &self,
        signer: &Fingerprint,
        input: impl Read + Send + Sync,
    ) -> Result<(), StoreError> {
        let cert = self.friend_cert(signer)?;
        self.account.check(input, &cert).map_err(StoreError::from)
    }

    /// [`Store::verify_reader`] for bytes in memory (a small download).
    pub fn verify_bytes(&self, signer: &Fingerprint, input: &[u8]) -> Result<(), StoreError> {
        let cert = self.friend_cert(signer)?;
        self.account
            .check_bytes(input, &cert)
            .map_err(StoreError::from)
    }

    /// Decrypts `fpr`'s file `name` (own or a friend's) into `output`,
    /// checking the owner's signature.
    pub fn open(
        &self,
        fpr: &Fingerprint,
        name: &str,
        output: impl Write,
    ) -> Result<(), StoreError> {
        let name = content_name(name);
        validate_name(&name)?;
        let dir = self
            .served_dir(fpr)
            .ok_or_else(|| StoreError::NotFound(name.clone()))?;
        let path = dir.join(&name);
        let f = File::open(&path).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => StoreError::NotFound(name.clone()),
            _ => StoreError::io(&path, e),
        })?;
        let cert = if *fpr == self.fingerprint() {
            Arc::new(self.account.public_cert())
        } else {
            self.friend_cert(fpr)?
        };
        self.account
            .open(io::BufReader::new(f), output, &cert)
            .map_err(StoreError::from)
    }

    /// Retires a friend's file that the friend no longer lists: it moves to
    /// `<name>.versions/<sha256>` (still on disk, no longer current).
    pub fn retire(&self, fpr: &Fingerprint, name: &str) -> Result<(), StoreError> {
        validate_name(name)?;
        let path = self.dir_of(fpr).join(name);
        let sum = sha256_file(&path)?;
        let vdir = versions_dir(&path);
        mkdir_private(&vdir)?;
        let vpath = vdir.join(sum);
        fs::rename(&path, &vpath).map_err(|e| StoreError::io(&vpath, e))?;
        sync_dir(&vdir)?;
        if let Some(d) = path.parent() {
            sync_dir(d)?;
        }
        Ok(())
    }

    /// The sync state (`.mau-rs/sync_state.json`).
    pub fn sync_state(&self) -> Result<SyncState, StoreError> {
        SyncState::load(&self.root)
    }

    /// Records a complete sync of `fpr` up to `t` (read-modify-write under a
    /// lock, so concurrent syncs of different friends do not lose entries).
    pub fn record_sync(&self, fpr: Fingerprint, t: SystemTime) -> Result<(), StoreError> {
        let _g = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let mut s = SyncState::load(&self.root)?;
        s.set_last_sync(fpr, t);
        s.save(&self.root)
    }
}

/// `<file>.versions`.
pub fn versions_dir(file: &Path) -> PathBuf {
    let mut s = file.as_os_str().to_owned();
    s.push(VERSIONS_SUFFIX);
    PathBuf::from(s)
}

#[cfg(test)]
mod tests;
