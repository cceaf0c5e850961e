//! Operator metrics: a registry of counters, gauges and histograms the node
//! updates, rendered as Prometheus text (0.0.4) or OpenMetrics 1.0 text, and
//! served over plain HTTP on a listener of its own (never the peer port:
//! the peer port speaks mutual TLS to peers only).
//!
//! Opt-in: nothing is counted unless the embedder creates a [`Metrics`] and
//! puts it in `NodeConfig::metrics`. Updates are atomics or a short mutex on
//! a small map; label values are `&'static str`, so a peer cannot create
//! series (no unbounded cardinality).
//!
//! Names follow the Prometheus conventions: a `mau_` prefix, base units in
//! the name (`_seconds`, `_bytes`), `_total` on counters.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use futures_lite::io::{AsyncReadExt, AsyncWriteExt};
use mau_proto::{LookupKind, Request, RpcFailure};

use crate::lock::lock;
use crate::runtime::{timeout, Runtime};

/// Upper bounds of the lookup latency buckets, in seconds.
const LATENCY_BOUNDS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
/// Upper bounds of the lookup hop-count buckets.
const HOP_BOUNDS: &[f64] = &[0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0, 15.0];

/// A histogram with fixed bucket bounds.
struct Histogram {
    bounds: &'static [f64],
    inner: Mutex<HistogramData>,
}

#[derive(Default)]
struct HistogramData {
    /// Per bucket (not cumulative); one more for +Inf.
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Self {
        Histogram {
            bounds,
            inner: Mutex::new(HistogramData {
                counts: vec![0; bounds.len() + 1],
                ..HistogramData::default()
            }),
        }
    }

    fn observe(&self, v: f64) {
        let i = self
            .bounds
            .iter()
            .position(|b| v <= *b)
            .unwrap_or(self.bounds.len());
        let mut d = lock(&self.inner);
        d.counts[i] += 1;
        d.sum += v;
        d.count += 1;
    }
}

/// Counters keyed by a fixed set of label values.
type Labeled = Mutex<BTreeMap<(&'static str, &'static str), u64>>;

fn bump(map: &Labeled, key: (&'static str, &'static str), by: u64) {
    *lock(map).entry(key).or_insert(0) += by;
}

/// The `kind` label of a lookup.
pub fn lookup_kind(kind: LookupKind) -> &'static str {
    match kind {
        LookupKind::FindPeer => "find_peer",
        LookupKind::Join => "join",
        LookupKind::Refresh => "refresh",
    }
}

/// The `kind` label of an RPC.
pub fn rpc_kind(request: &Request) -> &'static str {
    match request {
        Request::Ping => "ping",
        Request::FindPeer(_) => "find_peer",
    }
}

/// The `outcome` label of an RPC we sent, from the answer the core is given.
pub fn rpc_outcome<T>(answer: &Result<T, RpcFailure>) -> &'static str {
    match answer {
        Ok(_) => "ok",
        Err(RpcFailure::Timeout) => "timeout",
        Err(RpcFailure::Unreachable) => "unreachable",
        Err(RpcFailure::BadResponse) => "bad_response",
        Err(RpcFailure::NotSent) => "not_sent",
    }
}

/// What a scrape reads from the routing table at that moment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TableGauges {
    /// Peers in the table.
    pub peers: usize,
    /// Per bucket: its index `i` (peers at distance `[2^i, 2^(i+1))`), peers
    /// in it, newcomers waiting for a slot.
    pub buckets: Vec<(u8, usize, usize)>,
}

/// The registry. Share it as `Arc<Metrics>`; every method takes `&self`.
pub struct Metrics {
    started: Instant,
    lookups_started: AtomicU64,
    /// (kind, result) → finished lookups.
    lookups: Labeled,
    lookup_seconds: Histogram,
    lookup_hops: Histogram,
    /// (kind, outcome) → RPCs we sent.
    rpcs_sent: Labeled,
    /// (kind, outcome) → RPCs we answered.
    rpcs_received: Labeled,
    /// (reason, "") → requests or connections refused by a limit.
    rejections: Labeled,
    /// (direction, "") → content bytes.
    content_bytes: Labeled,
    /// (direction, outcome) → content files.
    content_files: Labeled,
    /// (result, "") → friend syncs reported by `mau sync`.
    syncs: Labeled,
    /// (event, "") → relay and hole-punch events.
    relay: Labeled,
    /// Bytes relayed (both directions).
    relay_bytes: AtomicU64,
    /// Reservations held and streams relayed now (a relay).
    relay_load: Mutex<(u64, u64)>,
    mdns_running: AtomicBool,
    upnp_mapped: AtomicBool,
    /// The reachability verdict: one of [`REACH_STATES`].
    reachability: Mutex<&'static str>,
}

/// The `state` label values of `mau_reachability`.
const REACH_STATES: [&str; 3] = ["unknown", "reachable", "unreachable"];

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    /// An empty registry; uptime counts from now.
    pub fn new() -> Self {
        Metrics {
            started: Instant::now(),
            lookups_started: AtomicU64::new(0),
            lookups: Labeled::default(),
            lookup_seconds: Histogram::new(LATENCY_BOUNDS),
            lookup_hops: Histogram::new(HOP_BOUNDS),
            rpcs_sent: Labeled::default(),
            rpcs_received: Labeled::default(),
            rejections: Labeled::default(),
            content_bytes: Labeled::default(),
            content_files: Labeled::default(),
            syncs: Labeled::default(),
            relay: Labeled::default(),
            relay_bytes: AtomicU64::new(0),
            relay_load: Mutex::new((0, 0)),
            mdns_running: AtomicBool::new(false),
            upnp_mapped: AtomicBool::new(false),
            reachability: Mutex::new("unknown"),
        }
    }

    /// A lookup started.
    pub fn lookup_started(&self) {
        self.lookups_started.fetch_add(1, Ordering::Relaxed);
    }

    /// A lookup finished: `kind` ([`lookup_kind`]), whether
    /// it found its target, how long it took and over how many hops.
    pub fn lookup_finished(&self, kind: &'static str, found: bool, took: Duration, hops: u32) {
        let result = if found { "found" } else { "not_found" };
        bump(&self.lookups, (kind, result), 1);
        self.lookup_seconds.observe(took.as_secs_f64());
        self.lookup_hops.observe(f64::from(hops));
    }

    /// An RPC we sent ended: `kind` ([`rpc_kind`]), `outcome`
    /// ([`rpc_outcome`]: `ok`, `timeout`, `unreachable`, `bad_response`,
    /// `not_sent`).
    pub fn rpc_sent(&self, kind: &'static str, outcome: &'static str) {
        bump(&self.rpcs_sent, (kind, outcome), 1);
    }

    /// An RPC we answered: `kind` ([`rpc_kind`], or `unknown`), `outcome`
    /// (`ok`, `bad_request`).
    pub fn rpc_received(&self, kind: &'static str, outcome: &'static str) {
        bump(&self.rpcs_received, (kind, outcome), 1);
    }

    /// A limit refused a connection or request: `reason` names the limit
    /// (`per_ip_connections`, `connections`, `handshake_timeout`,
    /// `header_timeout`, `send_timeout`, `rate`, `rate_slowed`,
    /// `in_flight`).
    pub fn rejected(&self, reason: &'static str) {
        bump(&self.rejections, (reason, ""), 1);
    }

    /// Content files moved: `direction` `served` (to a friend: `ok` or
    /// `failed`, cut short) or `fetched` (by sync: `ok`, `unchanged`,
    /// `failed`), and their bytes.
    pub fn content(&self, direction: &'static str, outcome: &'static str, bytes: u64) {
        bump(&self.content_files, (direction, outcome), 1);
        bump(&self.content_bytes, (direction, ""), bytes);
    }

    /// One friend synced (by `mau sync`, which reports to the running
    /// server): files fetched, up to date and failed, bytes received, and
    /// whether everything arrived.
    pub fn synced(&self, counts: &SyncCounts) {
        let by = |n: u64, outcome| {
            if n > 0 {
                bump(&self.content_files, ("fetched", outcome), n);
            }
        };
        by(counts.downloaded, "ok");
        by(counts.unchanged, "unchanged");
        by(counts.failed, "failed");
        bump(&self.content_bytes, ("fetched", ""), counts.bytes);
        let result = if counts.complete {
            "complete"
        } else {
            "incomplete"
        };
        bump(&self.syncs, (result, ""), 1);
    }

    /// A relay or hole-punch event: on a relay `reservation_granted`,
    /// `stream_opened`, `stream_closed`, `stream_cut_bytes`,
    /// `stream_cut_duration` (refusals count in [`Self::rejected`] with a
    /// `relay_*` reason); on a relayed node `reservation_held`,
    /// `reservation_lost`, `punch_direct`, `punch_relayed`.
    pub fn relay_event(&self, event: &'static str) {
        bump(&self.relay, (event, ""), 1);
    }

    /// Bytes a relay carried.
    pub fn relayed_bytes(&self, bytes: u64) {
        self.relay_bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    /// A relay's reservations held and streams relayed now.
    pub fn set_relay_load(&self, reservations: usize, streams: usize) {
        *lock(&self.relay_load) = (reservations as u64, streams as u64);
    }

    /// How many times `event` ([`Self::relay_event`]) happened.
    pub fn relay_events(&self, event: &str) -> u64 {
        let map = lock(&self.relay);
        map.iter()
            .filter(|((e, _), _)| *e == event)
            .map(|(_, n)| *n)
            .sum()
    }

    /// How many times a limit named `reason` refused ([`Self::rejected`]).
    pub fn rejections(&self, reason: &str) -> u64 {
        let map = lock(&self.rejections);
        map.iter()
            .filter(|((r, _), _)| *r == reason)
            .map(|(_, n)| *n)
            .sum()
    }

    /// Whether mDNS advertises and browses.
    pub fn set_mdns(&self, running: bool) {
        self.mdns_running.store(running, Ordering::Relaxed);
    }

    /// Whether a port mapping (PCP, NAT-PMP or UPnP IGD) is held.
    pub fn set_upnp(&self, mapped: bool) {
        self.upnp_mapped.store(mapped, Ordering::Relaxed);
    }

    /// The reachability verdict: `unknown`, `reachable` or `unreachable`
    /// (anything else is shown as `unknown`).
    pub fn set_reachability(&self, state: &'static str) {
        let state = REACH_STATES
            .iter()
            .find(|s| **s == state)
            .copied()
            .unwrap_or("unknown");
        *lock(&self.reachability) = state;
    }

    /// The text exposition: OpenMetrics 1.0 when `openmetrics`, else
    /// Prometheus text 0.0.4 (what `promtool check metrics` reads).
    pub fn render(&self, table: &TableGauges, openmetrics: bool) -> String {
        let mut r = Renderer {
            out: String::new(),
            openmetrics,
        };
        r.family(
            "mau_uptime_seconds",
            "gauge",
            "Seconds since the node started.",
            "seconds",
        );
        r.sample(
            "mau_uptime_seconds",
            &[],
            self.started.elapsed().as_secs_f64(),
        );
        r.family(
            "mau_routing_table_peers",
            "gauge",
            "Peers in the routing table.",
            "",
        );
        r.sample("mau_routing_table_peers", &[], table.peers as f64);
        r.family(
            "mau_routing_table_bucket_peers",
            "gauge",
            "Peers per k-bucket (bucket i holds peers at XOR distance [2^i, 2^(i+1))).",
            "",
        );
        for (i, peers, _) in &table.buckets {
            let i = i.to_string();
            r.sample(
                "mau_routing_table_bucket_peers",
                &[("bucket", &i)],
                *peers as f64,
            );
        }
        r.family(
            "mau_routing_table_bucket_waiting",
            "gauge",
            "Newcomers waiting for a slot per k-bucket.",
            "",
        );
        for (i, _, waiting) in &table.buckets {
            let i = i.to_string();
            r.sample(
                "mau_routing_table_bucket_waiting",
                &[("bucket", &i)],
                *waiting as f64,
            );
        }
        r.counter(
            "mau_lookups_started",
            "Lookups started.",
            self.lookups_started.load(Ordering::Relaxed),
        );
        r.labeled_counter(
            "mau_lookups",
            "Lookups finished, by kind and result.",
            ("kind", "result"),
            &self.lookups,
        );
        r.histogram(
            "mau_lookup_duration_seconds",
            "How long lookups took.",
            "seconds",
            &self.lookup_seconds,
        );
        r.histogram(
            "mau_lookup_hops",
            "Answers on the path to a lookup's result.",
            "",
            &self.lookup_hops,
        );
        r.labeled_counter(
            "mau_rpcs_sent",
            "Kademlia RPCs sent, by kind and outcome.",
            ("kind", "outcome"),
            &self.rpcs_sent,
        );
        r.labeled_counter(
            "mau_rpcs_received",
            "Kademlia RPCs answered, by kind and outcome.",
            ("kind", "outcome"),
            &self.rpcs_received,
        );
        r.labeled_counter(
            "mau_rejections",
            "Connections and requests refused by a limit, by limit.",
            ("reason", ""),
            &self.rejections,
        );
        r.labeled_counter(
            "mau_content_files",
            "Content files served to friends or fetched from them, by outcome.",
            ("direction", "outcome"),
            &self.content_files,
        );
        r.labeled_counter(
            "mau_content_bytes",
            "Content bytes served to friends or fetched from them.",
            ("direction", ""),
            &self.content_bytes,
        );
        r.labeled_counter(
            "mau_syncs",
            "Friend syncs reported by mau sync, by result (complete: every file arrived).",
            ("result", ""),
            &self.syncs,
        );
        r.labeled_counter(
            "mau_relay_events",
            "Relay and hole-punch events (refusals are in mau_rejections with relay_* reasons).",
            ("event", ""),
            &self.relay,
        );
        r.counter(
            "mau_relayed_bytes",
            "Bytes this node relayed between two peers.",
            self.relay_bytes.load(Ordering::Relaxed),
        );
        let (reservations, streams) = *lock(&self.relay_load);
        r.family(
            "mau_relay_reservations",
            "gauge",
            "Reservations this relay holds.",
            "",
        );
        r.sample("mau_relay_reservations", &[], reservations as f64);
        r.family(
            "mau_relay_streams",
            "gauge",
            "Streams this relay carries now.",
            "",
        );
        r.sample("mau_relay_streams", &[], streams as f64);
        r.family(
            "mau_mdns_running",
            "gauge",
            "1 while mDNS advertises and browses.",
            "",
        );
        let on = |b: &AtomicBool| if b.load(Ordering::Relaxed) { 1.0 } else { 0.0 };
        r.sample("mau_mdns_running", &[], on(&self.mdns_running));
        r.family(
            "mau_upnp_mapped",
            "gauge",
            "1 while a port mapping (PCP, NAT-PMP or UPnP IGD) is held.",
            "",
        );
        r.sample("mau_upnp_mapped", &[], on(&self.upnp_mapped));
        r.family(
            "mau_reachability",
            "gauge",
            "1 for the reachability verdict from peers' dial-backs (state: unknown, reachable, unreachable).",
            "",
        );
        let now = *lock(&self.reachability);
        for state in REACH_STATES {
            let v = if state == now { 1.0 } else { 0.0 };
            r.sample("mau_reachability", &[("state", state)], v);
        }
        if openmetrics {
            r.out.push_str("# EOF\n");
        }
        r.out
    }
}

struct Renderer {
    out: String,
    openmetrics: bool,
}

fn number(v: f64) -> String {
    if v.is_infinite() {
        "+Inf".into()
    } else {
        format!("{v}")
    }
}

impl Renderer {
    /// `# HELP`/`# TYPE` (and `# UNIT`) of a family. In 0.0.4 a counter's
    /// family carries the `_total` suffix; in OpenMetrics it does not.
    fn family(&mut self, name: &str, kind: &str, help: &str, unit: &str) {
        let name = if kind == "counter" && !self.openmetrics {
            format!("{name}_total")
        } else {
            name.to_string()
        };
        let _ = writeln!(self.out, "# HELP {name} {help}");
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
        if self.openmetrics && !unit.is_empty() {
            let _ = writeln!(self.out, "# UNIT {name} {unit}");
        }
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], v: f64) {
        self.out.push_str(name);
        if !labels.is_empty() {
            let parts: Vec<String> = labels
                .iter()
                .map(|(k, val)| format!("{k}=\"{val}\""))
                .collect();
            let _ = write!(self.out, "{{{}}}", parts.join(","));
        }
        let _ = writeln!(self.out, " {}", number(v));
    }

    fn counter(&mut self, name: &str, help: &str, v: u64) {
        self.family(name, "counter", help, "");
        self.sample(&format!("{name}_total"), &[], v as f64);
    }

    fn labeled_counter(&mut self, name: &str, help: &str, keys: (&str, &str), map: &Labeled) {
        self.family(name, "counter", help, "");
        let total = format!("{name}_total");
        for ((a, b), v) in lock(map).iter() {
            if keys.1.is_empty() {
                self.sample(&total, &[(keys.0, a)], *v as f64);
            } else {
                self.sample(&total, &[(keys.0, a), (keys.1, b)], *v as f64);
            }
        }
    }

    fn histogram(&mut self, name: &str, help: &str, unit: &str, h: &Histogram) {
        self.family(name, "histogram", help, unit);
        let d = lock(&h.inner);
        let bucket = format!("{name}_bucket");
        let mut cumulative = 0;
        for (i, c) in d.counts.iter().enumerate() {
            cumulative += c;
            let le = number(h.bounds.get(i).copied().unwrap_or(f64::INFINITY));
            self.sample(&bucket, &[("le", &le)], cumulative as f64);
        }
        self.sample(&format!("{name}_sum"), &[], d.sum);
        self.sample(&format!("{name}_count"), &[], d.count as f64);
    }
}

/// What one friend's sync moved, as `mau sync` reports it to the server.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SyncCounts {
    /// Files downloaded and installed.
    pub downloaded: u64,
    /// Files already up to date.
    pub unchanged: u64,
    /// Files that failed.
    pub failed: u64,
    /// Bytes received.
    pub bytes: u64,
    /// Whether everything arrived.
    pub complete: bool,
}

impl From<&crate::sync::SyncReport> for SyncCounts {
    fn from(r: &crate::sync::SyncReport) -> Self {
        SyncCounts {
            downloaded: r.downloaded as u64,
            unchanged: r.unchanged as u64,
            failed: r.failures as u64,
            bytes: r.bytes,
            complete: r.complete,
        }
    }
}

/// Counts a content file served to a friend as its body streams out:
/// `ok` with its bytes once the last one is sent, `failed` with the bytes
/// sent if the answer is dropped before (the friend hung up).
pub(crate) fn count_served(
    reply: crate::router::Reply,
    metrics: std::sync::Arc<Metrics>,
) -> crate::router::Reply {
    use http_body_util::BodyExt;
    reply.map(|body| {
        ServedBody {
            inner: body,
            metrics,
            bytes: 0,
            done: false,
        }
        .boxed()
    })
}

/// A served file's body that counts what went out.
struct ServedBody {
    inner: crate::router::Body,
    metrics: std::sync::Arc<Metrics>,
    bytes: u64,
    done: bool,
}

impl ServedBody {
    fn finish(&mut self, outcome: &'static str) {
        if !self.done {
            self.done = true;
            self.metrics.content("served", outcome, self.bytes);
        }
    }
}

impl http_body::Body for ServedBody {
    type Data = bytes::Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<bytes::Bytes>, std::io::Error>>> {
        use std::task::Poll;
        let polled = std::pin::Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(f))) => {
                if let Some(d) = f.data_ref() {
                    self.bytes += d.len() as u64;
                }
                if self.inner.is_end_stream() {
                    self.finish("ok");
                }
            }
            Poll::Ready(None) => self.finish("ok"),
            Poll::Ready(Some(Err(_))) => self.finish("failed"),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for ServedBody {
    fn drop(&mut self) {
        self.finish("failed");
    }
}

/// Longest request head the metrics listener reads.
const MAX_HEAD: usize = 8 * 1024;
/// How long one scrape may take.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(5);

/// Serves `GET /metrics` on `listener` until the future is dropped, one
/// connection at a time (a scraper is one client; each connection is
/// bounded by a 5 s deadline and an 8 KiB request head). `table` reads the
/// routing table at scrape time. Plain HTTP: bind it to loopback or a
/// management network, never to the peer port.
pub async fn serve<R: Runtime>(
    rt: &R,
    listener: &R::TcpListener,
    metrics: &Metrics,
    table: impl Fn() -> TableGauges,
) {
    loop {
        match R::accept_tcp(listener).await {
            Ok((stream, peer)) => {
                let answered =
                    match timeout(rt, SCRAPE_TIMEOUT, answer(stream, metrics, &table)).await {
                        Ok(r) => r,
                        Err(_) => Err(std::io::ErrorKind::TimedOut.into()),
                    };
                if let Err(e) = answered {
                    tracing::debug!(%peer, error = %e, "metrics scrape failed");
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "metrics: accept failed");
                rt.sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn answer<S: crate::runtime::Stream>(
    mut stream: S,
    metrics: &Metrics,
    table: &impl Fn() -> TableGauges,
) -> std::io::Result<()> {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf).await?;
        if n == 0 || head.len() + n > MAX_HEAD {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
    }
    let head = String::from_utf8_lossy(&head);
    let mut words = head.split_whitespace();
    let (method, path) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    let openmetrics = head.lines().any(|l| {
        l.to_ascii_lowercase().starts_with("accept:") && l.contains("application/openmetrics-text")
    });
    let (status, kind, body) = match (method, path.split('?').next().unwrap_or("")) {
        ("GET", "/metrics") if openmetrics => (
            "200 OK",
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            metrics.render(&table(), true),
        ),
        ("GET", "/metrics") => (
            "200 OK",
            "text/plain; version=0.0.4; charset=utf-8",
            metrics.render(&table(), false),
        ),
        ("GET", _) => (
            "404 Not Found",
            "text/plain; charset=utf-8",
            "only /metrics here\n".into(),
        ),
        _ => (
            "405 Method Not Allowed",
            "text/plain; charset=utf-8",
            "GET only\n".into(),
        ),
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.flush().await?;
    stream.close().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_are_cumulative_and_counters_total() {
        let m = Metrics::new();
        m.lookup_started();
        m.lookup_finished("find_peer", true, Duration::from_millis(20), 2);
        m.lookup_finished("find_peer", false, Duration::from_secs(60), 7);
        m.rejected("rate");
        let table = TableGauges {
            peers: 3,
            buckets: vec![(159, 2, 0), (158, 1, 4)],
        };
        let text = m.render(&table, false);
        assert!(text.contains("# TYPE mau_lookups_total counter"), "{text}");
        assert!(
            text.contains("mau_lookups_total{kind=\"find_peer\",result=\"found\"} 1"),
            "{text}"
        );
        assert!(text.contains("mau_lookup_duration_seconds_bucket{le=\"0.025\"} 1"));
        assert!(text.contains("mau_lookup_duration_seconds_bucket{le=\"30\"} 1"));
        assert!(text.contains("mau_lookup_duration_seconds_bucket{le=\"+Inf\"} 2"));
        assert!(text.contains("mau_lookup_hops_count 2"));
        assert!(text.contains("mau_rejections_total{reason=\"rate\"} 1"));
        assert!(text.contains("mau_routing_table_bucket_waiting{bucket=\"158\"} 4"));
        assert!(!text.contains("# EOF"));
        assert!(
            text.contains("mau_reachability{state=\"unknown\"} 1"),
            "{text}"
        );
        m.set_reachability("reachable");
        m.synced(&SyncCounts {
            downloaded: 2,
            unchanged: 1,
            failed: 0,
            bytes: 300,
            complete: true,
        });
        let text = m.render(&table, false);
        assert!(text.contains("mau_reachability{state=\"reachable\"} 1"));
        assert!(text.contains("mau_reachability{state=\"unknown\"} 0"));
        assert!(text.contains("mau_content_files_total{direction=\"fetched\",outcome=\"ok\"} 2"));
        assert!(
            !text.contains("outcome=\"failed\""),
            "zero counts are not series"
        );
        assert!(text.contains("mau_content_bytes_total{direction=\"fetched\"} 300"));
        assert!(text.contains("mau_syncs_total{result=\"complete\"} 1"));
        let om = m.render(&table, true);
        assert!(om.contains("# TYPE mau_lookups counter"), "{om}");
        assert!(om.contains("# UNIT mau_lookup_duration_seconds seconds"));
        assert!(om.ends_with("# EOF\n"));
    }
}
