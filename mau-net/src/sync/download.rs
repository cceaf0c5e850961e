//! One download: the request (resuming with `Range`), the body hashed as
//! it arrives and streamed to a partial file by a writer on the runtime's
//! blocking pool and, for a download from the start, to a verifier on
//! another blocking thread (signature and decryption checked as the bytes
//! arrive, so the file is not read again). A runtime whose blocking work runs
//! inline (the simulation, [`Runtime::blocking_is_concurrent`]) gets one
//! blocking write per batch instead, and the file verified afterwards.
//! Whether to download, from where, and for how long is the planner's
//! decision ([`mau_proto::sync`]).

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use hyper::header;
use mau_store::StoreError;

use super::wire::{content_range_start, percent_encode};
use super::{FriendClient, Progress, SyncError};
use crate::content::ListItem;
use crate::runtime::Runtime;

/// Files up to this size are received in memory, then hashed, verified
/// and written by one blocking task (fewer thread hops per small file);
/// the plan installs them in batches, so the two bounds are one.
const IN_MEMORY_MAX: u64 = mau_proto::sync::BATCH_FILE_MAX;
/// The body's chunks (one TLS record each, 16 KiB) go to the writer and
/// the verifier in batches of about this many bytes: each hand-off wakes a
/// blocking thread, so per chunk they cost more than the bytes.
const BATCH: usize = 1 << 20;
/// Batches queued for the writer and for the verifier (they share the
/// bytes): at most 16 MiB in flight per download, 64 MiB for the 4 large
/// downloads a sync runs at once by default. Deeper than the 4 it was:
/// the network, the writer and the verifier wait on each other less (a
/// 200 MiB sync ~7% faster on 2 cores).
const QUEUE: usize = 16;

/// Chunks of the body, shared by the writer and the verifier.
type Batch = std::sync::Arc<[Bytes]>;

/// What a friend's directory holds, read once per sync (blocking).
#[derive(Default)]
pub(super) struct LocalScan {
    /// Current files (names).
    pub(super) names: std::collections::BTreeSet<String>,
    /// Partial downloads: path, and the (name, sum) they are for.
    pub(super) partials: Vec<(PathBuf, String, String)>,
    /// Bytes of every file in the directory and its `.versions`
    /// directories.
    pub(super) bytes: u64,
}

/// Reads `dir` (blocking): see [`LocalScan`].
pub(super) fn scan_local(dir: &Path) -> std::io::Result<LocalScan> {
    let mut scan = LocalScan::default();
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(scan),
        Err(e) => return Err(e),
    };
    for entry in rd.flatten() {
        let Ok(md) = entry.metadata() else { continue };
        let name = entry.file_name().to_string_lossy().into_owned();
        if md.is_dir() {
            // `<name>.versions/`: old copies count against the quota.
            for v in std::fs::read_dir(entry.path())
                .into_iter()
                .flatten()
                .flatten()
            {
                if let Ok(m) = v.metadata() {
                    scan.bytes = scan.bytes.saturating_add(m.len());
                }
            }
            continue;
        }
        scan.bytes = scan.bytes.saturating_add(md.len());
        if let Some((name, sum)) = partial_of(&name) {
            scan.partials.push((entry.path(), name, sum));
        } else if mau_store::validate_name(&name).is_ok() && name.ends_with(mau_store::PGP_SUFFIX) {
            scan.names.insert(name);
        }
    }
    Ok(scan)
}

/// The (name, sum) of a partial download's file name
/// (`.<name>.part.<sum>`, [`mau_store::Store::partial_path`]).
fn partial_of(file: &str) -> Option<(String, String)> {
    let rest = file.strip_prefix('.')?;
    let (name, sum) = rest.rsplit_once(".part.")?;
    mau_store::is_sum(sum).then(|| (name.to_string(), sum.to_string()))
}

/// Opens (or creates, mode 0600) a partial file; `truncate` empties one
/// that exists.
///
/// Emptying goes through `open`'s `O_TRUNC`, never `set_len(0)` on the
/// file just created: on ext4, a truncation to size 0 marks the file to
/// be flushed when it is closed (`auto_da_alloc`, for programs that
/// replace a file by truncating it), which cost every small file of a
/// sync a write-back started on the blocking thread (close ~5% and
/// ftruncate ~2% of a 1,000-file sync's samples). `O_TRUNC` does not
/// truncate a file the same `open` created. The batch's flush makes the
/// data durable before any rename either way.
fn open_partial(partial: &Path, truncate: bool) -> std::io::Result<std::fs::File> {
    let mut opts = OpenOptions::new();
    opts.create(true).read(true).write(true).truncate(truncate);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    opts.open(partial)
}

/// A small file received in memory: checked against the listed size and
/// sum, its signature and decryption to us, then written to `partial`
/// (blocking). Returns its sum.
pub(super) fn check_and_write(
    store: &mau_store::Store,
    signer: &mau_proto::Fingerprint,
    item: &ListItem,
    bytes: &[u8],
    partial: &Path,
) -> Result<String, StoreError> {
    if bytes.len() as u64 != item.size {
        return Err(StoreError::SizeMismatch {
            expected: item.size,
            actual: bytes.len() as u64,
        });
    }
    let sum = mau_store::sha256_hex(bytes);
    if sum != item.sum {
        return Err(StoreError::SumMismatch {
            expected: item.sum.clone(),
            actual: sum,
        });
    }
    store.verify_bytes(signer, bytes)?;
    let mut file = open_partial(partial, true).map_err(|e| StoreError::io(partial, e))?;
    let written = file.write_all(bytes);
    if let Err(e) = written {
        let _ = std::fs::remove_file(partial);
        return Err(StoreError::io(partial, e));
    }
    Ok(sum)
}

/// A partial file being filled after its first `have` bytes. Blocking.
struct PartialWriter {
    path: PathBuf,
    file: std::fs::File,
    /// The write-back started as the file grows.
    writeback: mau_store::WriteBack,
}

impl PartialWriter {
    /// Opens `partial` and keeps its first `have` bytes.
    fn open(partial: &Path, have: u64) -> Result<Self, StoreError> {
        let io = |e: std::io::Error| StoreError::io(partial, e);
        // From the start: emptied by the open, and written from 0.
        let mut file = open_partial(partial, have == 0).map_err(io)?;
        if have > 0 {
            file.set_len(have).map_err(io)?;
            std::io::Seek::seek(&mut file, std::io::SeekFrom::Start(have)).map_err(io)?;
        }
        Ok(PartialWriter {
            path: partial.to_path_buf(),
            file,
            writeback: mau_store::WriteBack::new(have),
        })
    }

    /// Appends `batch`. A full disk removes the partial file (it cannot
    /// complete and holds space the store needs).
    fn write(&mut self, batch: &[Bytes]) -> Result<(), StoreError> {
        if let Err(e) = write_batch(&mut self.file, batch) {
            if e.kind() == std::io::ErrorKind::StorageFull {
                let _ = std::fs::remove_file(&self.path);
            }
            return Err(StoreError::io(&self.path, e));
        }
        for chunk in batch {
            self.writeback.wrote(&self.file, chunk.len() as u64);
        }
        Ok(())
    }
}

/// Writes the body's batches to `partial` after its first `have` bytes
/// ([`PartialWriter`]). Runs on the blocking pool; ends when the sender is
/// dropped.
fn write_partial(
    partial: &Path,
    have: u64,
    batches: async_channel::Receiver<Batch>,
) -> Result<(), StoreError> {
    let mut writer = PartialWriter::open(partial, have)?;
    while let Ok(batch) = batches.recv_blocking() {
        writer.write(&batch)?;
    }
    Ok(())
}

/// Where a big download's batches are written.
enum Sink<F> {
    /// [`write_partial`] on a blocking thread, fed through a channel (the
    /// sender is dropped at the end), and its result.
    Thread(Option<async_channel::Sender<Batch>>, F),
    /// One blocking task per batch, the writer moved into it and back: a
    /// runtime whose blocking work runs inline
    /// ([`Runtime::blocking_is_concurrent`] false) would never return from
    /// a writer waiting on a channel. `Err`: a write failed.
    PerBatch(Result<Box<PartialWriter>, SyncError>),
}

/// Writes every chunk of `batch` (one `writev` each time, not a copy into
/// a buffer first).
fn write_batch(file: &mut std::fs::File, batch: &[Bytes]) -> std::io::Result<()> {
    let mut slices: Vec<std::io::IoSlice<'_>> =
        batch.iter().map(|c| std::io::IoSlice::new(c)).collect();
    let mut rest = &mut slices[..];
    while !rest.is_empty() {
        match file.write_vectored(rest) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => std::io::IoSlice::advance_slices(&mut rest, n),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The bytes of a channel of batches as a blocking reader (for the
/// verifier); its end is the sender's drop.
struct ChannelReader {
    batches: async_channel::Receiver<Batch>,
    current: std::collections::VecDeque<Bytes>,
}

impl std::io::Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let mut n = 0;
        while n < buf.len() {
            let Some(chunk) = self.current.front_mut() else {
                if n > 0 {
                    // What is here now; the next batch may be a while.
                    break;
                }
                match self.batches.recv_blocking() {
                    Ok(b) => {
                        self.current.extend(b.iter().cloned());
                        continue;
                    }
                    Err(_) => return Ok(0),
                }
            };
            let k = (buf.len() - n).min(chunk.len());
            buf[n..n + k].copy_from_slice(&chunk.split_to(k));
            n += k;
            if chunk.is_empty() {
                self.current.pop_front();
            }
        }
        Ok(n)
    }
}

/// Hands `batch` to the verifier (while it listens) and the writer; false
/// if the writer stopped (its error is the one to report).
async fn hand_off<R: Runtime, F>(
    rt: &R,
    batch: Batch,
    verifier: &mut Option<async_channel::Sender<Batch>>,
    sink: &mut Option<Sink<F>>,
) -> bool {
    if let Some(v) = verifier {
        if v.send(batch.clone()).await.is_err() {
            // The verifier has its answer (a refusal): it is read later.
            *verifier = None;
        }
    }
    match sink {
        Some(Sink::Thread(Some(w), _)) => w.send(batch).await.is_ok(),
        Some(Sink::PerBatch(state)) => {
            let Ok(mut writer) = std::mem::replace(state, Err(SyncError::Blocking)) else {
                return false;
            };
            let done = rt
                .run_blocking(move || {
                    let r = writer.write(&batch);
                    (writer, r)
                })
                .await;
            *state = match done {
                Some((writer, Ok(()))) => Ok(writer),
                Some((_, Err(e))) => Err(e.into()),
                None => Err(SyncError::Blocking),
            };
            state.is_ok()
        }
        _ => true,
    }
}

/// What a download left in its partial file.
pub(super) struct Fetched {
    /// Bytes received now.
    pub(super) got: u64,
    /// Whether the earlier bytes were kept (a `Range` resume).
    pub(super) resumed: bool,
    /// SHA-256 of the whole file, if computed on the way.
    pub(super) sum: Option<String>,
    /// Signature and decryption were checked as the bytes arrived.
    pub(super) verified: bool,
    /// A small file's bytes, received in memory and not yet checked or
    /// written (see [`check_and_write`]).
    pub(super) memory: Option<Vec<u8>>,
}

/// Why the body loop stopped early.
enum Cut {
    /// More bytes than listed: the partial file is worthless.
    TooLong(u64),
    /// Anything else: the partial file is kept for a resume.
    Other(SyncError),
}

impl<R: Runtime> FriendClient<R> {
    /// Runs blocking `f` on the runtime's blocking pool.
    pub(super) async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, SyncError> {
        self.rt.run_blocking(f).await.ok_or(SyncError::Blocking)
    }

    /// Length of `path` on disk (0 if absent).
    pub(super) async fn len_on_disk(&self, path: &Path) -> Result<u64, SyncError> {
        let p = path.to_path_buf();
        self.blocking(move || std::fs::metadata(p).map_or(0, |m| m.len()))
            .await
    }

    /// Removes `path` if present.
    pub(super) async fn remove(&self, path: &Path) -> Result<(), SyncError> {
        let p = path.to_path_buf();
        self.blocking(move || match std::fs::remove_file(&p) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(SyncError::Store(StoreError::io(&p, e)))
            }
            _ => Ok(()),
        })
        .await?
    }

    /// Fills `partial` (holding `have` bytes) with the rest of the file
    /// (see [`Fetched`]). Nothing is written before the friend answers 200
    /// or 206 (a refusal is [`SyncError::Refused`], a 416 to a resume
    /// [`SyncError::RangeRefused`]: the planner decides what follows). A
    /// file that fails the streaming verification is removed.
    pub(super) async fn download_to(
        &self,
        item: &ListItem,
        name: &str,
        partial: &Path,
        mut have: u64,
        progress: &dyn Progress,
    ) -> Result<Fetched, SyncError> {
        let fpr = self.peer.fingerprint;
        let path = format!("/p2p/{fpr}/{}", percent_encode(name));
        let mut headers = Vec::new();
        if have > 0 {
            headers.push((header::RANGE, format!("bytes={have}-")));
        }
        let mut resp = self.request(&path, &headers).await?;
        let resumed = match resp.status() {
            206 if have > 0 => {
                let start = resp
                    .headers()
                    .get(header::CONTENT_RANGE)
                    .and_then(|v| v.to_str().ok())
                    .and_then(content_range_start);
                if start != Some(have) {
                    return Err(self.protocol("206 answer for another range"));
                }
                true
            }
            200 => {
                have = 0;
                false
            }
            // Our partial copy does not fit the file any more.
            416 if have > 0 => return Err(SyncError::RangeRefused { peer: fpr }),
            _ => {
                resp.error_for_status().await?;
                return Err(self.protocol("unexpected status"));
            }
        };
        // A small file from the start: in memory, checked before a byte is
        // written.
        let mut memory = (have == 0 && item.size <= IN_MEMORY_MAX)
            .then(|| Vec::with_capacity(usize::try_from(item.size).unwrap_or(0)));
        // The file's SHA-256 (the listed sum) is computed here, as the body
        // arrives, not by the writer: with it, the writer was as heavy as
        // the verifier (each ~0.2 s of CPU for 200 MiB), and on 2 cores
        // whichever of the two lagged filled its queue and held the
        // network back while the other idled (~15% of both cores idle).
        // The task receiving the body had CPU to spare. A resume hashes
        // the bytes it keeps first.
        let mut hasher = if have > 0 {
            let p = partial.to_path_buf();
            self.blocking(move || mau_store::Sha256::of_prefix(&p, have))
                .await??
        } else {
            mau_store::Sha256::default()
        };
        let concurrent = self.rt.blocking_is_concurrent();
        let mut sink = if memory.is_some() {
            None
        } else if concurrent {
            let (tx, rx) = async_channel::bounded::<Batch>(QUEUE);
            let target = partial.to_path_buf();
            let writer = self
                .rt
                .run_blocking(move || write_partial(&target, have, rx));
            Some(Sink::Thread(Some(tx), writer))
        } else {
            let target = partial.to_path_buf();
            let opened = self
                .blocking(move || PartialWriter::open(&target, have))
                .await;
            Some(Sink::PerBatch(
                opened.and_then(|w| w.map(Box::new).map_err(SyncError::Store)),
            ))
        };
        // A download from the start is verified as it arrives, on a second
        // thread (a resumed one, or one on a runtime without threads for
        // blocking work, is verified from the file afterwards).
        let (mut to_verifier, verifier) = if have == 0 && memory.is_none() && concurrent {
            let (vtx, vrx) = async_channel::bounded::<Batch>(QUEUE);
            let (store, reader) = (
                self.store.clone(),
                ChannelReader {
                    batches: vrx,
                    current: Default::default(),
                },
            );
            let check = self
                .rt
                .run_blocking(move || store.verify_reader(&fpr, reader));
            (Some(vtx), Some(check))
        } else {
            (None, None)
        };
        // (The throughput floor is the planner's: it drops this future.)
        let mut got = 0u64;
        let (mut pending, mut pending_len) = (Vec::new(), 0);
        let body = async {
            loop {
                let chunk = resp.chunk().await.map_err(|e| Cut::Other(e.into()))?;
                let Some(chunk) = chunk else { return Ok(()) };
                got += chunk.len() as u64;
                if have + got > item.size {
                    return Err(Cut::TooLong(have + got));
                }
                progress.bytes(chunk.len() as u64);
                if let Some(m) = &mut memory {
                    m.extend_from_slice(&chunk);
                    continue;
                }
                hasher.update(&chunk);
                pending_len += chunk.len();
                pending.push(chunk);
                if pending_len >= BATCH {
                    pending_len = 0;
                    let batch = std::mem::take(&mut pending).into();
                    if !hand_off(&self.rt, batch, &mut to_verifier, &mut sink).await {
                        return Ok(());
                    }
                }
            }
        }
        .await;
        // What arrived before the end, or before a cut that keeps the
        // partial file for a resume, is written too.
        if !pending.is_empty() && !matches!(body, Err(Cut::TooLong(_))) {
            hand_off(&self.rt, pending.into(), &mut to_verifier, &mut sink).await;
        }
        drop(to_verifier);
        let Some(sink) = sink else {
            // In memory: nothing was written yet.
            return match body {
                Err(Cut::TooLong(actual)) => Err(SyncError::Store(StoreError::SizeMismatch {
                    expected: item.size,
                    actual,
                })),
                Err(Cut::Other(e)) => Err(e),
                Ok(()) => Ok(Fetched {
                    got,
                    resumed,
                    sum: None,
                    verified: false,
                    memory: Some(memory.unwrap_or_default()),
                }),
            };
        };
        let written = match sink {
            Sink::Thread(tx, writer) => {
                drop(tx);
                writer.await.ok_or(SyncError::Blocking)?
            }
            Sink::PerBatch(Ok(_)) => Ok(()),
            Sink::PerBatch(Err(SyncError::Store(e))) => Err(e),
            Sink::PerBatch(Err(e)) => return Err(e),
        };
        let verified = match verifier {
            Some(v) => Some(v.await.ok_or(SyncError::Blocking)?),
            None => None,
        };
        match body {
            Err(Cut::TooLong(actual)) => {
                self.remove(partial).await?;
                Err(SyncError::Store(StoreError::SizeMismatch {
                    expected: item.size,
                    actual,
                }))
            }
            Err(Cut::Other(e)) => Err(e),
            Ok(()) => {
                written?;
                let sum = hasher.finish();
                if got != item.size || sum != item.sum {
                    // Size and sum first (their errors say more); the
                    // store's acceptance reports them.
                    return Ok(Fetched {
                        got,
                        resumed,
                        sum: Some(sum),
                        verified: false,
                        memory: None,
                    });
                }
                if let Some(Err(e)) = verified {
                    self.remove(partial).await?;
                    return Err(e.into());
                }
                Ok(Fetched {
                    got,
                    resumed,
                    sum: Some(sum),
                    verified: verified.is_some(),
                    memory: None,
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_names() {
        let sum = "ab".repeat(32);
        assert_eq!(
            partial_of(&format!(".a.b.pgp.part.{sum}")),
            Some(("a.b.pgp".into(), sum.clone()))
        );
        assert_eq!(partial_of(&format!("a.pgp.part.{sum}")), None);
        assert_eq!(partial_of(".a.pgp.part.xyz"), None);
        assert_eq!(partial_of(".a.pgp.tmp.1.2"), None);
    }

    #[test]
    fn a_partial_opened_from_the_start_holds_only_the_new_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(".f.part.x");
        std::fs::write(&path, b"an older, longer attempt").unwrap();
        open_partial(&path, true)
            .unwrap()
            .write_all(b"new")
            .unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"new");
        // A resume keeps what is there, and hashes it first.
        let mut hasher = mau_store::Sha256::of_prefix(&path, 2).unwrap();
        let mut w = PartialWriter::open(&path, 2).unwrap();
        w.write(&[Bytes::from_static(b"w!")]).unwrap();
        hasher.update(b"w!");
        assert_eq!(std::fs::read(&path).unwrap(), b"new!");
        assert_eq!(hasher.finish(), mau_store::sha256_hex(b"new!"));
        // A partial file shorter than what a resume keeps is an error.
        assert!(mau_store::Sha256::of_prefix(&path, 5).is_err());
    }
}
