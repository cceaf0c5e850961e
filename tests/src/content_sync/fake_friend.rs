//! A friend's server written by hand, for sync scenarios a real node never
//! produces: a Go-like listing (at most 100 files, oldest first, no `Link`,
//! no modification times) and hostile answers (endless listings, a body
//! that trickles or never ends). Mutual TLS with the friend's own key, one
//! request per connection (`Connection: close`).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_lite::io::{AsyncReadExt, AsyncWriteExt};
use mau_identity::TlsIdentity;
use mau_net::runtime::Runtime;
use mau_net::sync::wire::{listed_path, ListItem};
use mau_proto::Fingerprint;
use mau_store::Store;

/// A request as the fake friend saw it.
#[derive(Clone, Debug)]
pub struct Request {
    /// The path, without the query.
    pub path: String,
    /// Header names (lower case) and values.
    pub headers: Vec<(String, String)>,
}

impl Request {
    /// The value of header `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// How the fake friend answers one request.
pub enum Answer {
    /// A whole answer.
    Whole {
        /// Status code.
        status: u16,
        /// Extra headers.
        headers: Vec<(String, String)>,
        /// The body.
        body: Vec<u8>,
    },
    /// `200` with bytes held once for every request, written as fast as
    /// the client reads them.
    Shared(Arc<Vec<u8>>),
    /// `200` announcing `length` bytes, then `chunk` written `times` times
    /// (`usize::MAX`: until the client leaves), `pause` between writes.
    Trickle {
        /// The `Content-Length` announced.
        length: u64,
        /// What each write sends.
        chunk: Vec<u8>,
        /// Writes.
        times: usize,
        /// Pause before each write.
        pause: Duration,
    },
}

/// A running fake friend; stops accepting when dropped.
pub struct FakeFriend {
    /// Where it listens (127.0.0.1).
    pub addr: SocketAddr,
    /// The paths (with query) asked for, in order.
    pub log: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
}

impl FakeFriend {
    /// Requests whose path (with query) satisfies `f`.
    pub fn count(&self, f: impl Fn(&str) -> bool) -> usize {
        self.log
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|p| f(p))
            .count()
    }
}

impl Drop for FakeFriend {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        // Wake the accept loop so that it sees the flag.
        let _ = std::net::TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
    }
}

fn head(status: u16, headers: &[(String, String)], length: u64) -> Vec<u8> {
    let mut h = format!(
        "HTTP/1.1 {status} Fake\r\ncontent-length: {length}\r\nconnection: close\r\ndate: {}\r\n",
        httpdate::fmt_http_date(SystemTime::now())
    );
    for (name, value) in headers {
        h.push_str(&format!("{name}: {value}\r\n"));
    }
    h.push_str("\r\n");
    h.into_bytes()
}

/// Starts a fake friend presenting `identity`, answering with `answer`.
pub async fn start<R: Runtime>(
    rt: &R,
    identity: &TlsIdentity,
    answer: impl Fn(&Request) -> Answer + Send + Sync + 'static,
) -> FakeFriend {
    let tls = mau_identity::server_config(identity).expect("server config");
    let listener = rt
        .bind_tcp(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .expect("bind");
    let addr = R::tcp_local_addr(&listener).expect("addr");
    let log: Arc<Mutex<Vec<String>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let answer = Arc::new(answer);
    let (rt2, log2, stop2) = (rt.clone(), log.clone(), stop.clone());
    rt.spawn(async move {
        while let Ok((s, _)) = R::accept_tcp(&listener).await {
            if stop2.load(Ordering::Acquire) {
                break;
            }
            let (tls, answer, log, rt3) = (tls.clone(), answer.clone(), log2.clone(), rt2.clone());
            rt2.spawn(async move {
                let Ok(mut conn) = futures_rustls::TlsAcceptor::from(tls).accept(s).await else {
                    return;
                };
                let mut raw = Vec::new();
                let mut buf = [0u8; 4096];
                while !raw.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut buf).await {
                        Ok(n) if n > 0 && raw.len() < 64 * 1024 => raw.extend_from_slice(&buf[..n]),
                        _ => return,
                    }
                }
                let text = String::from_utf8_lossy(&raw).into_owned();
                let mut lines = text.split("\r\n");
                let target = lines
                    .next()
                    .and_then(|l| l.split(' ').nth(1))
                    .unwrap_or("")
                    .to_string();
                log.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(target.clone());
                let req = Request {
                    path: target.split('?').next().unwrap_or("").to_string(),
                    headers: lines
                        .filter_map(|l| l.split_once(':'))
                        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
                        .collect(),
                };
                match answer(&req) {
                    Answer::Whole {
                        status,
                        headers,
                        body,
                    } => {
                        let mut bytes = head(status, &headers, body.len() as u64);
                        bytes.extend_from_slice(&body);
                        let _ = conn.write_all(&bytes).await;
                    }
                    Answer::Shared(body) => {
                        let h = head(200, &[], body.len() as u64);
                        if conn.write_all(&h).await.is_err() {
                            return;
                        }
                        for chunk in body.chunks(64 << 10) {
                            if conn.write_all(chunk).await.is_err() {
                                return;
                            }
                        }
                    }
                    Answer::Trickle {
                        length,
                        chunk,
                        times,
                        pause,
                    } => {
                        let h = head(200, &[], length);
                        if conn.write_all(&h).await.is_err() {
                            return;
                        }
                        for _ in 0..times {
                            rt3.sleep(pause).await;
                            if conn.write_all(&chunk).await.is_err() || conn.flush().await.is_err()
                            {
                                return;
                            }
                        }
                    }
                }
                let _ = conn.flush().await;
                let _ = conn.close().await;
            });
        }
    });
    FakeFriend { addr, log, stop }
}

/// Seconds of an `If-Modified-Since` value as Go reads it (none, or a date
/// before 1970: everything).
fn since_of(req: &Request) -> u64 {
    req.header("if-modified-since")
        .and_then(|v| httpdate::parse_http_date(v).ok())
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs())
}

/// The listing entries of `owner`'s files in `store` modified at or after
/// second `since`, oldest first (mtime, then name), at most `limit`.
pub fn items_of(store: &Store, owner: &Fingerprint, since: u64, limit: usize) -> Vec<ListItem> {
    let mut files: Vec<_> = store
        .files(owner)
        .expect("files")
        .into_iter()
        .filter(|e| {
            e.modified
                .duration_since(UNIX_EPOCH)
                .is_ok_and(|d| d.as_secs() >= since)
        })
        .collect();
    files.sort_by(|a, b| (a.modified, &a.name).cmp(&(b.modified, &b.name)));
    files
        .iter()
        .take(limit)
        .map(|e| ListItem {
            path: listed_path(owner, &e.name),
            size: e.size,
            sum: mau_store::sha256_file(&e.path).expect("sum"),
        })
        .collect()
}

/// A listing page of `items`; `end`: marked as the last page, as a mau-rs
/// server does (without it, the client must assume a cut listing).
pub fn page(items: &[ListItem], end: bool) -> Answer {
    let mut headers = vec![("content-type".to_string(), "application/json".to_string())];
    if end {
        headers.push(("mau-listing".to_string(), "end".to_string()));
    }
    Answer::Whole {
        status: 200,
        headers,
        body: serde_json::to_vec(items).expect("json"),
    }
}

/// `owner`'s file named by `req`'s path, whole, or 404.
pub fn file(store: &Store, owner: &Fingerprint, req: &Request) -> Answer {
    let name = req
        .path
        .strip_prefix(&format!("/p2p/{owner}/"))
        .unwrap_or("");
    match std::fs::read(store.dir_of(owner).join(name)) {
        Ok(body) if mau_store::validate_name(name).is_ok() => Answer::Whole {
            status: 200,
            headers: vec![],
            body,
        },
        _ => Answer::Whole {
            status: 404,
            headers: vec![],
            body: b"no such file".to_vec(),
        },
    }
}

/// What the Go peer answers for `owner`'s files in `store`: a listing is
/// the oldest 100 files modified at or after `If-Modified-Since` (whole
/// seconds), ordered by modification time, with no `Link` and no times; a
/// file is its bytes.
pub fn go_like(store: Arc<Store>, owner: Fingerprint) -> impl Fn(&Request) -> Answer + Send + Sync {
    move |req| {
        if req.path == format!("/p2p/{owner}") {
            let items = items_of(&store, &owner, since_of(req), mau_net::sync::wire::GO_PAGE);
            return page(&items, false);
        }
        file(&store, &owner, req)
    }
}
