//! The simulated network: hosts (one IP each), TCP-like listeners and
//! reliable byte streams, links with latency, bandwidth and loss, and
//! partitions.
//!
//! What is modelled, and how:
//! - a connect sends a SYN after which the listener's backlog gets the
//!   server end one latency later, and the client its end one more latency
//!   later (the SYN-ACK); with nothing listening the connect is refused
//!   after a round trip;
//! - a SYN across a partition, or lost (probability `loss` of the link), is
//!   resent after 1 s, 2 s, 4 s ... (the caller's connect timeout decides
//!   when to give up), so a connect can succeed once a partition heals;
//! - streams are reliable and ordered: each write arrives whole after the
//!   link's transmission time (bytes / bandwidth, queued behind earlier
//!   writes on the same directed link) plus its latency; loss is modelled
//!   only as a failed connect (above) and, with the same probability per
//!   connection, a reset at a random moment in its first seconds;
//! - a partition resets every connection across it when it begins;
//! - a crashed process's connections are reset; dropping a stream sends a
//!   FIN, and writing to a stream whose peer dropped its end fails with
//!   `ConnectionReset` (as the RST a real peer sends would);
//! - there is no flow control (writes never wait) and no backlog limit.

use std::collections::{BTreeMap, VecDeque};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use futures_io::{AsyncRead, AsyncWrite};

use crate::sim::{Shared, State};
use crate::trace::Event;

/// A link's properties (each direction alike).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LinkConfig {
    /// One-way latency.
    pub latency: Duration,
    /// Bytes per second.
    pub bandwidth: u64,
    /// Probability that a SYN is lost, and that a connection is reset.
    pub loss: f64,
}

/// The IP as a number, for the trace.
pub(crate) fn ip_bits(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u32::from(v4).into(),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

/// One direction of a connection: what is in flight toward one side.
#[derive(Default)]
struct Pipe {
    /// Writes, when each arrives, and how much of it was read.
    segs: VecDeque<(Duration, Vec<u8>, usize)>,
    /// When the FIN arrives (after every write).
    fin_at: Option<Duration>,
    /// Arrival of the last write (later writes never overtake it).
    last: Duration,
    /// The task waiting to read.
    reader: Option<Waker>,
    /// The arrival a wake-up is already set for, and whom it wakes.
    armed: Option<(Duration, Waker)>,
}

struct Conn {
    /// The host of side 0 (the client) and of side 1 (the server).
    hosts: [IpAddr; 2],
    /// `pipes[i]` flows toward side `i`.
    pipes: [Pipe; 2],
    /// Whether each side still holds its end.
    open: [bool; 2],
    /// Whether each side shut its writing half.
    shut: [bool; 2],
    reset: bool,
}

struct Listener {
    backlog: VecDeque<(SimStream, SocketAddr)>,
    acceptor: Option<Waker>,
}

/// The network's state (inside the simulation's lock).
pub(crate) struct Net {
    seed: u64,
    /// Latencies of links without an override are drawn in this range.
    pub latency: (Duration, Duration),
    /// Bandwidth of links without an override.
    pub bandwidth: u64,
    /// Loss of links without an override.
    pub loss: f64,
    hosts: BTreeMap<IpAddr, u16>,
    host_links: BTreeMap<IpAddr, LinkConfig>,
    listeners: BTreeMap<SocketAddr, Listener>,
    conns: BTreeMap<u64, Conn>,
    /// The most connections open at once (either end not yet dropped).
    pub(crate) peak_open: usize,
    next_conn: u64,
    busy: BTreeMap<(IpAddr, IpAddr), Duration>,
    /// Partition groups: hosts in different groups cannot reach each other
    /// (a host in no group reaches every host in no group).
    groups: BTreeMap<IpAddr, u32>,
}

/// A stable 64-bit mix (SplitMix64's finalizer).
pub(crate) fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

impl Net {
    /// For each host, the connections whose end on it is still held (one
    /// pass over the connections, however many hosts are asked about).
    pub(crate) fn open_by_host(&self) -> BTreeMap<IpAddr, usize> {
        let mut open = BTreeMap::new();
        for c in self.conns.values() {
            for s in 0..2 {
                // A connection from a host to itself counts once.
                let counted = s == 1 && c.hosts[0] == c.hosts[1] && c.open[0];
                if c.open[s] && !counted {
                    *open.entry(c.hosts[s]).or_insert(0) += 1;
                }
            }
        }
        open
    }

    pub(crate) fn new(seed: u64) -> Net {
        Net {
            seed,
            latency: (Duration::from_millis(5), Duration::from_millis(60)),
            bandwidth: 12_500_000,
            loss: 0.0,
            hosts: BTreeMap::new(),
            host_links: BTreeMap::new(),
            listeners: BTreeMap::new(),
            conns: BTreeMap::new(),
            peak_open: 0,
            next_conn: 0,
            busy: BTreeMap::new(),
            groups: BTreeMap::new(),
        }
    }

    /// The link from `a` to `b`: drawn from the seed and the pair (the same
    /// both ways), worsened by either host's override.
    pub(crate) fn link(&self, a: IpAddr, b: IpAddr) -> LinkConfig {
        let (lo, hi) = (a.min(b), a.max(b));
        let h = mix(self.seed ^ mix(ip_bits(lo) as u64 ^ mix(ip_bits(hi) as u64)));
        let span = self.latency.1.saturating_sub(self.latency.0).as_micros() as u64;
        let mut link = LinkConfig {
            latency: self.latency.0 + Duration::from_micros(h % (span + 1)),
            bandwidth: self.bandwidth,
            loss: self.loss,
        };
        for o in [a, b].iter().filter_map(|h| self.host_links.get(h)) {
            link.latency = link.latency.max(o.latency);
            link.bandwidth = link.bandwidth.min(o.bandwidth);
            link.loss = link.loss.max(o.loss);
        }
        link
    }

    pub(crate) fn partitioned(&self, a: IpAddr, b: IpAddr) -> bool {
        self.groups.get(&a) != self.groups.get(&b)
    }

    pub(crate) fn add_host(&mut self, ip: IpAddr) {
        self.hosts.entry(ip).or_insert(49152);
    }

    fn ephemeral_port(&mut self, host: IpAddr) -> u16 {
        let next = self.hosts.entry(host).or_insert(49152);
        let port = *next;
        *next = if *next == u16::MAX { 49152 } else { *next + 1 };
        port
    }

    fn reset_where(&mut self, ids: &mut Vec<u64>, cut: impl Fn(u64, &Conn) -> bool) -> Vec<Waker> {
        let mut wakers = Vec::new();
        for (id, c) in self.conns.iter_mut() {
            if c.reset || !cut(*id, c) {
                continue;
            }
            c.reset = true;
            ids.push(*id);
            for p in c.pipes.iter_mut() {
                p.segs.clear();
                wakers.extend(p.reader.take());
            }
        }
        wakers
    }
}

/// Resets every connection of `host`; returns the readers to wake.
pub(crate) fn reset_host(st: &mut State, host: IpAddr) -> Vec<Waker> {
    let mut ids = Vec::new();
    let wakers = st.net.reset_where(&mut ids, |_, c| c.hosts.contains(&host));
    trace_resets(st, &ids);
    wakers
}

fn trace_resets(st: &mut State, ids: &[u64]) {
    let now = st.now;
    for &conn in ids {
        st.trace.record(now, Event::Reset { conn });
    }
}

/// Overrides the links of `host` (each link takes the worse of its two ends).
pub(crate) fn set_host_link(st: &mut State, host: IpAddr, link: Option<LinkConfig>) {
    match link {
        Some(l) => st.net.host_links.insert(host, l),
        None => st.net.host_links.remove(&host),
    };
}

/// Splits the hosts into `groups` (hosts in none form one more group);
/// resets the connections across the cut. An empty list heals.
pub(crate) fn partition(st: &mut State, groups: &[Vec<IpAddr>]) -> Vec<Waker> {
    st.net.groups.clear();
    for (i, g) in groups.iter().enumerate() {
        for &h in g {
            st.net.groups.insert(h, i as u32);
        }
    }
    let now = st.now;
    st.trace.record(
        now,
        Event::Partition {
            groups: groups.len() as u64,
        },
    );
    let groups = st.net.groups.clone();
    let mut ids = Vec::new();
    let wakers = st.net.reset_where(&mut ids, |_, c| {
        groups.get(&c.hosts[0]) != groups.get(&c.hosts[1])
    });
    trace_resets(st, &ids);
    wakers
}

/// Resets one connection (a loss); returns the readers to wake.
fn reset_conn(st: &mut State, conn: u64) -> Vec<Waker> {
    let mut ids = Vec::new();
    let wakers = st.net.reset_where(&mut ids, |id, _| id == conn);
    trace_resets(st, &ids);
    wakers
}

/// A bound listener.
pub struct SimListener {
    shared: Arc<Shared>,
    addr: SocketAddr,
}

impl SimListener {
    /// The address it is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for SimListener {
    fn drop(&mut self) {
        let gone = self.shared.state().net.listeners.remove(&self.addr);
        drop(gone);
    }
}

/// Binds a listener on `host` (an unspecified IP means the host's).
pub(crate) fn bind(
    shared: &Arc<Shared>,
    host: IpAddr,
    addr: SocketAddr,
) -> io::Result<SimListener> {
    let ip = if addr.ip().is_unspecified() {
        host
    } else {
        addr.ip()
    };
    if ip != host {
        return Err(io::Error::new(
            io::ErrorKind::AddrNotAvailable,
            format!("{ip} is not this host's address ({host})"),
        ));
    }
    let mut st = shared.state();
    let port = if addr.port() == 0 {
        st.net.ephemeral_port(host)
    } else {
        addr.port()
    };
    let addr = SocketAddr::new(ip, port);
    if st.net.listeners.contains_key(&addr) {
        return Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            format!("{addr} in use"),
        ));
    }
    st.net.listeners.insert(
        addr,
        Listener {
            backlog: VecDeque::new(),
            acceptor: None,
        },
    );
    Ok(SimListener {
        shared: shared.clone(),
        addr,
    })
}

/// Accepts one connection.
pub(crate) async fn accept(l: &SimListener) -> io::Result<(SimStream, SocketAddr)> {
    futures_lite::future::poll_fn(|cx| {
        let mut st = l.shared.state();
        let Some(entry) = st.net.listeners.get_mut(&l.addr) else {
            return Poll::Ready(Err(io::ErrorKind::NotConnected.into()));
        };
        match entry.backlog.pop_front() {
            Some(c) => Poll::Ready(Ok(c)),
            None => {
                entry.acceptor = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    })
    .await
}

/// Connects from `src` to `dst` (see the module docs for the timing).
pub(crate) async fn connect(
    shared: &Arc<Shared>,
    src: IpAddr,
    dst: SocketAddr,
) -> io::Result<SimStream> {
    let mut rto = Duration::from_secs(1);
    let latency = loop {
        let (lost, link) = {
            let mut st = shared.state();
            let link = st.net.link(src, dst.ip());
            let lost =
                st.net.partitioned(src, dst.ip()) || (link.loss > 0.0 && st.rng.f64() < link.loss);
            if lost {
                let now = st.now;
                st.trace.record(
                    now,
                    Event::SynLost {
                        from: ip_bits(src),
                        to: ip_bits(dst.ip()),
                    },
                );
            }
            (lost, link)
        };
        if !lost {
            break link.latency;
        }
        crate::time::Sleep::new(shared.clone(), rto).await;
        rto = (rto * 2).min(Duration::from_secs(60));
    };
    crate::time::Sleep::new(shared.clone(), latency).await;
    let opened = {
        let mut st = shared.state();
        let now = st.now;
        if st.net.listeners.contains_key(&dst) {
            Some(open(shared, &mut st, src, dst))
        } else {
            st.trace.record(
                now,
                Event::Refused {
                    from: ip_bits(src),
                    to: ip_bits(dst.ip()),
                },
            );
            None
        }
    };
    let Some((client, acceptor, reset_after)) = opened else {
        crate::time::Sleep::new(shared.clone(), latency).await;
        return Err(io::Error::new(
            io::ErrorKind::ConnectionRefused,
            format!("{dst}: connection refused"),
        ));
    };
    if let Some(w) = acceptor {
        w.wake();
    }
    if let Some(after) = reset_after {
        let (s, conn) = (shared.clone(), client.conn);
        shared.spawn(None, async move {
            crate::time::Sleep::new(s.clone(), after).await;
            let wakers = reset_conn(&mut s.state(), conn);
            wakers.into_iter().for_each(Waker::wake);
        });
    }
    crate::time::Sleep::new(shared.clone(), latency).await;
    Ok(client)
}

/// Opens a connection from `src` to the listener at `dst` (which exists):
/// the server end goes to its backlog. Returns the client end, the acceptor
/// to wake and, if the link loses this connection, when to reset it.
fn open(
    shared: &Arc<Shared>,
    st: &mut State,
    src: IpAddr,
    dst: SocketAddr,
) -> (SimStream, Option<Waker>, Option<Duration>) {
    let now = st.now;
    {
        let id = st.net.next_conn;
        st.net.next_conn += 1;
        let local = SocketAddr::new(src, st.net.ephemeral_port(src));
        st.net.conns.insert(
            id,
            Conn {
                hosts: [src, dst.ip()],
                pipes: [Pipe::default(), Pipe::default()],
                open: [true, true],
                shut: [false, false],
                reset: false,
            },
        );
        st.net.peak_open = st.net.peak_open.max(st.net.conns.len());
        st.trace.record(
            now,
            Event::Connect {
                conn: id,
                from: ip_bits(src),
                to: ip_bits(dst.ip()),
            },
        );
        let link = st.net.link(src, dst.ip());
        let reset_after = (link.loss > 0.0 && st.rng.f64() < link.loss)
            .then(|| Duration::from_micros(st.rng.u64(..5_000_000)));
        let stream = |side| SimStream {
            shared: shared.clone(),
            conn: id,
            side,
        };
        let entry = st.net.listeners.get_mut(&dst).expect("checked above");
        entry.backlog.push_back((stream(1), local));
        (stream(0), entry.acceptor.take(), reset_after)
    }
}

/// One end of a simulated TCP connection.
pub struct SimStream {
    shared: Arc<Shared>,
    conn: u64,
    side: usize,
}

fn reset_error() -> io::Error {
    io::Error::new(
        io::ErrorKind::ConnectionReset,
        "connection reset (simulated)",
    )
}

impl AsyncRead for SimStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let mut st = self.shared.state();
        let now = st.now;
        let Some(c) = st.net.conns.get_mut(&self.conn) else {
            return Poll::Ready(Err(reset_error()));
        };
        if c.reset {
            return Poll::Ready(Err(reset_error()));
        }
        let p = &mut c.pipes[self.side];
        let next = match p.segs.front_mut() {
            Some((at, data, read)) if *at <= now => {
                let n = buf.len().min(data.len() - *read);
                buf[..n].copy_from_slice(&data[*read..*read + n]);
                *read += n;
                if *read == data.len() {
                    p.segs.pop_front();
                }
                return Poll::Ready(Ok(n));
            }
            Some((at, ..)) => Some(*at),
            None => match p.fin_at {
                Some(fin) if fin <= now => return Poll::Ready(Ok(0)),
                fin => fin,
            },
        };
        p.reader = Some(cx.waker().clone());
        if let Some(at) = next {
            let set = p
                .armed
                .as_ref()
                .is_some_and(|(t, w)| *t == at && w.will_wake(cx.waker()));
            if !set {
                p.armed = Some((at, cx.waker().clone()));
                self.shared.wake_at(&mut st, at, cx.waker().clone());
            }
        }
        Poll::Pending
    }
}

impl SimStream {
    /// Sends `fin` (close) or `data` toward the peer; returns the reader to
    /// wake and when.
    fn send(&self, st: &mut State, data: Option<&[u8]>) -> io::Result<()> {
        let now = st.now;
        let s = self.side;
        let Some(c) = st.net.conns.get(&self.conn) else {
            return Err(reset_error());
        };
        if c.reset || (data.is_some() && !c.open[1 - s]) {
            return Err(reset_error());
        }
        if c.shut[s] {
            return match data {
                Some(_) => Err(io::ErrorKind::BrokenPipe.into()),
                None => Ok(()),
            };
        }
        let (src, dst) = (c.hosts[s], c.hosts[1 - s]);
        let link = st.net.link(src, dst);
        let bytes = data.map_or(0, |d| d.len() as u64);
        let busy = st.net.busy.entry((src, dst)).or_default();
        let start = (*busy).max(now);
        let tx = Duration::from_nanos(bytes.saturating_mul(1_000_000_000) / link.bandwidth.max(1));
        *busy = start + tx;
        let c = st.net.conns.get_mut(&self.conn).expect("checked above");
        let p = &mut c.pipes[1 - s];
        let at = (start + tx + link.latency).max(p.last);
        p.last = at;
        match data {
            Some(d) => p.segs.push_back((at, d.to_vec(), 0)),
            None => {
                p.fin_at = Some(at);
                c.shut[s] = true;
            }
        }
        let reader = c.pipes[1 - s].reader.take();
        if let Some(w) = reader {
            self.shared.wake_at(st, at, w);
        }
        if bytes > 0 {
            st.trace.record(
                now,
                Event::Write {
                    conn: self.conn,
                    side: s as u8,
                    bytes,
                    digest: data.map_or(0, crate::trace::digest),
                },
            );
        }
        Ok(())
    }
}

impl AsyncWrite for SimStream {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let mut st = self.shared.state();
        Poll::Ready(self.send(&mut st, Some(buf)).map(|()| buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut st = self.shared.state();
        Poll::Ready(self.send(&mut st, None))
    }
}

impl Drop for SimStream {
    fn drop(&mut self) {
        let mut st = self.shared.state();
        let _ = self.send(&mut st, None);
        let mut gone = None;
        if let Some(c) = st.net.conns.get_mut(&self.conn) {
            c.open[self.side] = false;
            c.pipes[self.side] = Pipe::default();
            if !c.open[1 - self.side] {
                gone = st.net.conns.remove(&self.conn);
            }
        }
        drop(st);
        drop(gone);
    }
}
