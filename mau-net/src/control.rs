//! The local control channel: a Unix socket in the data directory, owner-only,
//! that the network cannot reach. `mau peers list` and friends talk to a
//! running server through it: one JSON line in, one JSON line out.

use std::path::Path;
use std::sync::Arc;

use futures_lite::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use mau_proto::{Fingerprint, LookupOutcome, PeerAddress, PeerRecord};
use serde::{Deserialize, Serialize};
use tracing::debug;

use crate::core::Core;
use crate::error::NetError;
use crate::mdns::LanPeers;
use crate::runtime::{timeout, Runtime};

/// Longest request line accepted.
pub const MAX_LINE: u64 = 64 * 1024;

/// A request on the control channel.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum ControlRequest {
    /// The routing table (peers and buckets).
    Table,
    /// A DHT lookup.
    Lookup {
        /// Who to look for.
        fingerprint: Fingerprint,
    },
    /// The peers seen on the LAN (mDNS).
    LanPeers,
    /// Public address, reachability and port mapping.
    Reachability {
        /// Ask peers to dial back first (else: the last verdict).
        #[serde(default)]
        check: bool,
    },
    /// Ask the embedder to stop the node (see `NodeConfig::stop_requests`).
    Stop,
    /// `mau sync` synced a friend: counted in the metrics.
    Synced {
        /// What moved.
        counts: crate::metrics::SyncCounts,
    },
}

/// The answer on the control channel.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ControlResponse {
    /// The routing table.
    Table(TableSnapshot),
    /// A lookup's result.
    Lookup(LookupReport),
    /// The peers seen on the LAN.
    LanPeers {
        /// Whether mDNS runs on this server.
        mdns: bool,
        /// The peers, most recently seen first.
        peers: Vec<crate::mdns::LanPeer>,
    },
    /// Public address, reachability and port mapping.
    Reachability(crate::reach::ReachStatus),
    /// A stop request was passed on: the node is stopping.
    Stopping,
    /// Done (a report was counted, or there are no metrics to count it in).
    Done,
    /// The request failed.
    Error {
        /// Why.
        message: String,
    },
}

/// One peer of the routing table.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerInfo {
    /// Its fingerprint.
    pub fingerprint: Fingerprint,
    /// Its address.
    pub address: PeerAddress,
    /// Its bucket: `i` holds peers at XOR distance `[2^i, 2^(i+1))`.
    pub bucket: u8,
    /// Seconds since it was last heard from.
    pub last_seen_secs: u64,
    /// Failed requests in a row.
    pub failures: u8,
}

/// One k-bucket.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BucketInfo {
    /// `i`: peers at XOR distance `[2^i, 2^(i+1))`.
    pub index: u8,
    /// Bits shared with our id (the Go implementation's bucket number).
    pub common_prefix_len: usize,
    /// Peers in it.
    pub peers: usize,
    /// Newcomers waiting for a slot.
    pub replacements: usize,
    /// Seconds since the last lookup in its range.
    pub last_lookup_secs: u64,
}

/// The routing table as the control channel reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableSnapshot {
    /// Our fingerprint.
    pub fingerprint: Fingerprint,
    /// Our advertised address.
    pub address: PeerAddress,
    /// Every peer, farthest bucket first.
    pub peers: Vec<PeerInfo>,
    /// Every bucket created so far, farthest first.
    pub buckets: Vec<BucketInfo>,
}

/// A finished lookup.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LookupReport {
    /// What was looked up.
    pub target: Fingerprint,
    /// The target, if it answered.
    pub found: Option<PeerRecord>,
    /// Answers on the path to it.
    pub hops: u32,
    /// Requests sent.
    pub requests: u32,
    /// Requests that failed.
    pub failures: u32,
    /// The closest peers that answered.
    pub closest: Vec<PeerRecord>,
}

impl From<LookupOutcome<PeerAddress>> for LookupReport {
    fn from(o: LookupOutcome<PeerAddress>) -> Self {
        LookupReport {
            target: o.target,
            found: o.found.map(PeerRecord::from),
            hops: o.hops,
            requests: o.requests,
            failures: o.failures,
            closest: o.closest.into_iter().map(PeerRecord::from).collect(),
        }
    }
}

/// What the control service needs of a running node.
pub(crate) struct ControlContext<R: Runtime> {
    pub core: Arc<Core<R>>,
    pub advertised: PeerAddress,
    pub reach: Arc<crate::reach::Reach>,
    /// For dial-back requests.
    pub client: Arc<crate::client::Client<R>>,
    pub lan_peers: Arc<LanPeers>,
    pub mdns: bool,
    /// Where a `stop` request is passed on (`NodeConfig::stop_requests`).
    pub stop_requests: Option<async_channel::Sender<()>>,
}

pub(crate) fn snapshot<R: Runtime>(core: &Core<R>, advertised: &PeerAddress) -> TableSnapshot {
    core.read(|node, now| table_snapshot(node, now, advertised))
}

fn table_snapshot(
    node: &mau_proto::Node<PeerAddress>,
    now: mau_proto::Time,
    advertised: &PeerAddress,
) -> TableSnapshot {
    let table = node.table();
    let local = table.local().key();
    let peers = table
        .entries()
        .map(|e| PeerInfo {
            fingerprint: e.fingerprint,
            address: e.address.clone(),
            bucket: local
                .distance(&e.fingerprint.key())
                .bucket()
                .map_or(0, |b| b.0),
            last_seen_secs: now.since(e.last_seen()).as_secs(),
            failures: e.failures,
        })
        .collect();
    let buckets = table
        .buckets()
        .map(|(i, b)| BucketInfo {
            index: i.0,
            common_prefix_len: i.common_prefix_len(),
            peers: b.entries().len(),
            replacements: b.replacements().len(),
            last_lookup_secs: now.since(b.last_lookup()).as_secs(),
        })
        .collect();
    TableSnapshot {
        fingerprint: table.local(),
        address: advertised.clone(),
        peers,
        buckets,
    }
}

/// Binds the control socket (owner-only), replacing a stale one.
pub(crate) fn bind<R: Runtime>(rt: &R, path: &Path) -> Result<R::UnixListener, NetError> {
    let name = format!("control socket {}", path.display());
    if path.exists() {
        std::fs::remove_file(path).map_err(|e| NetError::Io(name.clone(), e))?;
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| NetError::Io(name.clone(), e))?;
    }
    let listener = rt
        .bind_unix(path)
        .map_err(|e| NetError::Io(name.clone(), e))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| NetError::Io(name, e))?;
    }
    Ok(listener)
}

/// Binds the control socket at `path` and serves it as one of the node's
/// tasks; the socket file is removed when the node stops.
pub(crate) fn start<R: Runtime>(ctx: ControlContext<R>, path: &Path) -> Result<(), NetError> {
    let listener = bind(&ctx.core.rt, path)?;
    let core = ctx.core.clone();
    let path = path.to_path_buf();
    core.spawn(async move {
        serve(Arc::new(ctx), listener).await;
        let _ = std::fs::remove_file(&path);
    });
    Ok(())
}

/// Serves control requests until shutdown.
async fn serve<R: Runtime>(shared: Arc<ControlContext<R>>, listener: R::UnixListener) {
    loop {
        let next =
            futures_lite::future::or(async { Some(R::accept_unix(&listener).await) }, async {
                shared.core.shutdown.wait().await;
                None
            })
            .await;
        match next {
            None => break,
            Some(Ok(stream)) => {
                let s = shared.clone();
                shared.core.rt.spawn(async move {
                    if let Err(e) = answer(&s, stream).await {
                        debug!(error = %e, "control connection failed");
                    }
                });
            }
            Some(Err(e)) => {
                debug!(error = %e, "control accept failed");
                shared
                    .core
                    .rt
                    .sleep(std::time::Duration::from_millis(100))
                    .await;
            }
        }
    }
}

async fn answer<R: Runtime>(
    shared: &ControlContext<R>,
    stream: R::UnixStream,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    (&mut reader).take(MAX_LINE).read_line(&mut line).await?;
    let response = match serde_json::from_str::<ControlRequest>(&line) {
        Err(e) => ControlResponse::Error {
            message: format!("bad request: {e}"),
        },
        Ok(ControlRequest::Table) => {
            ControlResponse::Table(snapshot(&shared.core, &shared.advertised))
        }
        Ok(ControlRequest::Synced { counts }) => {
            if let Some(m) = &shared.core.metrics {
                m.synced(&counts);
            }
            ControlResponse::Done
        }
        Ok(ControlRequest::Reachability { check: false }) => {
            ControlResponse::Reachability(shared.reach.status(shared.core.now()))
        }
        Ok(ControlRequest::Reachability { check: true }) => ControlResponse::Reachability(
            crate::reach::check(&shared.core, &shared.client, &shared.reach).await,
        ),
        Ok(ControlRequest::LanPeers) => ControlResponse::LanPeers {
            mdns: shared.mdns,
            peers: shared.lan_peers.list(),
        },
        // Passed on below, once the answer is out: the embedder may exit
        // as soon as it hears of it.
        Ok(ControlRequest::Stop) => match &shared.stop_requests {
            Some(_) => ControlResponse::Stopping,
            None => ControlResponse::Error {
                message: "this node cannot be stopped over the control channel".into(),
            },
        },
        Ok(ControlRequest::Lookup { fingerprint }) => match shared.core.lookup(fingerprint).await {
            Ok(o) => ControlResponse::Lookup(o.into()),
            Err(e) => ControlResponse::Error {
                message: e.to_string(),
            },
        },
    };
    let mut out = serde_json::to_vec(&response).map_err(std::io::Error::other)?;
    out.push(b'\n');
    let mut stream = reader.into_inner();
    stream.write_all(&out).await?;
    stream.flush().await?;
    if response == ControlResponse::Stopping {
        if let Some(tx) = &shared.stop_requests {
            let _ = tx.try_send(());
        }
    }
    Ok(())
}

/// Why a control call failed.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// No server listens on the socket.
    #[error("no running server at {0} ({1}); start one with `mau server start`")]
    NotRunning(String, std::io::Error),
    /// The exchange failed.
    #[error("control channel: {0}")]
    Io(#[from] std::io::Error),
    /// The answer was not understood.
    #[error("control channel: bad answer: {0}")]
    Decode(String),
    /// The server took too long.
    #[error("control channel: no answer in time")]
    Timeout,
}

/// Sends one request to the server at `path` and waits (at most `wait`) for its answer.
pub async fn call<R: Runtime>(
    rt: &R,
    path: &Path,
    request: &ControlRequest,
    wait: std::time::Duration,
) -> Result<ControlResponse, ControlError> {
    let exchange = async {
        let mut stream = rt
            .connect_unix(path)
            .await
            .map_err(|e| ControlError::NotRunning(path.display().to_string(), e))?;
        let mut line =
            serde_json::to_vec(request).map_err(|e| ControlError::Decode(e.to_string()))?;
        line.push(b'\n');
        stream.write_all(&line).await?;
        stream.flush().await?;
        let mut reader = BufReader::new(stream);
        let mut answer = String::new();
        (&mut reader)
            .take(64 * 1024 * 1024)
            .read_line(&mut answer)
            .await?;
        serde_json::from_str(&answer).map_err(|e| ControlError::Decode(e.to_string()))
    };
    timeout(rt, wait, exchange)
        .await
        .map_err(|_| ControlError::Timeout)?
}
