//! Port mapping on the home gateway: the sockets and the UPnP client around
//! the sans-IO mapper of `mau_proto::portmap`, which decides everything
//! (protocol order and fallback, retransmissions, renewals, reboots,
//! deletion).
//!
//! A [`PortMapper`] owns one mapping: the listening port on IPv4 (PCP,
//! NAT-PMP, UPnP), or an IPv6 pinhole (PCP). It talks PCP and NAT-PMP over
//! one UDP socket connected to the default gateway's port 5351 (found in
//! `/proc/net/route`, so Linux only; elsewhere only UPnP is tried), and
//! UPnP through [`crate::upnp`]. The node runs it until the first outcome
//! (a mapping, or every protocol failed) before it picks the address it
//! advertises, then as one of its tasks until shutdown, when the mapping
//! is deleted. What it holds is published in a [`PortMapStatus`].

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use mau_proto::portmap::{natpmp, Action, Event, Mapper, MapperConfig, Protocol, UpnpOp};
use mau_proto::Time;
use tracing::{debug, info, warn};

use crate::lock::lock;
use crate::metrics::Metrics;
use crate::runtime::Runtime;
use crate::upnp;

/// A mapping the gateway holds for this node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ActiveMapping {
    /// Through which protocol.
    pub protocol: Protocol,
    /// Our address and port on the gateway's network.
    pub internal: SocketAddr,
    /// Where peers reach us (for an IPv6 pinhole, our own address).
    pub external: SocketAddr,
    /// The lease granted.
    pub lifetime: Duration,
    /// When the lease ends unless renewed (it is renewed at half).
    pub expires: SystemTime,
}

/// The mappings a node holds, updated as they are made, renewed, changed
/// or lost (and the `mau_upnp_mapped` gauge with the IPv4 one).
#[derive(Debug, Default)]
pub struct PortMapStatus {
    ipv4: Mutex<Option<ActiveMapping>>,
    ipv6: Mutex<Option<ActiveMapping>>,
    metrics: Option<Arc<Metrics>>,
}

impl PortMapStatus {
    /// An empty status that also keeps `metrics` up to date.
    pub fn new(metrics: Option<Arc<Metrics>>) -> Self {
        PortMapStatus {
            metrics,
            ..Default::default()
        }
    }

    /// The IPv4 port mapping.
    pub fn ipv4(&self) -> Option<ActiveMapping> {
        *lock(&self.ipv4)
    }

    /// The IPv6 pinhole.
    pub fn ipv6(&self) -> Option<ActiveMapping> {
        *lock(&self.ipv6)
    }

    fn slot(&self, v6: bool) -> &Mutex<Option<ActiveMapping>> {
        if v6 {
            &self.ipv6
        } else {
            &self.ipv4
        }
    }
}

/// How long shutdown waits for the gateway to delete a UPnP mapping.
const UPNP_REMOVE_TIMEOUT: Duration = Duration::from_secs(5);

/// Runs one [`Mapper`]: its datagrams, its UPnP operations, its timers.
pub struct PortMapper<R: Runtime> {
    rt: R,
    mapper: Mapper,
    /// Connected to the gateway's port 5351; `None` without a gateway.
    socket: Option<R::UdpSocket>,
    /// What UPnP maps (its own SSDP search finds its gateway and our
    /// address towards it).
    listen: SocketAddr,
    upnp: Option<Arc<upnp::PortMapping>>,
    status: Arc<PortMapStatus>,
    v6: bool,
    started: Instant,
    /// When the held mapping was last renewed (to log renewals).
    renewed_at: Option<Time>,
}

enum Woke {
    Datagram(usize),
    SocketError(std::io::Error),
    Timer,
    Stop,
}

impl<R: Runtime> PortMapper<R> {
    /// A mapper for `listen`'s port through `protocols`, on IPv4 (`v6`
    /// false) or as an IPv6 pinhole; `None` when that family has nothing
    /// to map (an IPv6 pinhole needs a default IPv6 gateway and a global
    /// address, and PCP among the protocols).
    pub async fn new(
        rt: &R,
        protocols: &[Protocol],
        listen: SocketAddr,
        lifetime: Duration,
        v6: bool,
        status: Arc<PortMapStatus>,
    ) -> Option<Self> {
        let gateway = default_gateway(v6);
        let bind_ip = match (listen.ip(), v6) {
            (ip, _) if !ip.is_unspecified() => ip,
            (_, false) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            (_, true) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        };
        let socket = match gateway {
            Some(gw) if gw.is_ipv6() == bind_ip.is_ipv6() => {
                let peer = SocketAddr::new(gw, natpmp::SERVER_PORT);
                match rt.connect_udp(SocketAddr::new(bind_ip, 0), peer).await {
                    Ok(s) => Some(s),
                    Err(e) => {
                        debug!(gateway = %gw, error = %e, "port mapping: no socket to the gateway");
                        None
                    }
                }
            }
            _ => None,
        };
        let internal_ip = match &socket {
            Some(s) if listen.ip().is_unspecified() => R::udp_local_addr(s).ok()?.ip(),
            _ => bind_ip,
        };
        if v6
            && (socket.is_none()
                || !is_global_v6(internal_ip)
                || !protocols.contains(&Protocol::Pcp))
        {
            return None;
        }
        let internal = SocketAddr::new(internal_ip, listen.port());
        let mut config = MapperConfig::new(internal, lifetime);
        config.protocols = protocols.to_vec();
        let seed = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
            ^ u64::from(listen.port()) << 48
            ^ u64::from(v6);
        debug!(%internal, gateway = ?gateway, ?protocols, "port mapping: starting");
        let mut mapper = Mapper::new(config, seed);
        mapper.start(Time::ZERO);
        Some(PortMapper {
            rt: rt.clone(),
            mapper,
            socket,
            listen,
            upnp: None,
            status,
            v6,
            started: Instant::now(),
            renewed_at: None,
        })
    }

    fn now(&self) -> Time {
        Time::from_duration(self.started.elapsed())
    }

    /// Runs until the first outcome: a mapping, or every protocol failed.
    /// Bounded by the mapper's probes (about 35 s when nothing answers).
    pub async fn until_settled(&mut self) {
        loop {
            self.carry_out().await;
            if self.mapper.mapping().is_some() || self.mapper.is_waiting() {
                return;
            }
            self.turn(None::<Pin<&mut std::future::Pending<()>>>).await;
        }
    }

    /// Keeps the mapping (renewals, reboots, new rounds) until `stop`, then
    /// deletes it and returns.
    pub async fn run<S: Future<Output = ()>>(mut self, stop: S) {
        let mut stop = std::pin::pin!(stop);
        loop {
            if self.turn(Some(stop.as_mut())).await {
                break;
            }
        }
        let now = self.now();
        self.mapper.shutdown(now);
        while !self.mapper.is_stopped() {
            self.turn(None::<Pin<&mut std::future::Pending<()>>>).await;
        }
        self.carry_out().await;
        self.clear();
    }

    /// Forgets the mapping without a warning (it was removed, or shutdown
    /// began without one).
    fn clear(&self) {
        *lock(self.status.slot(self.v6)) = None;
        if let (false, Some(m)) = (self.v6, &self.status.metrics) {
            m.set_upnp(false);
        }
    }

    /// Carries out what the mapper asks, then waits for one event (a
    /// datagram, a timer, `stop`) and feeds it. True when `stop` fired.
    async fn turn<S: Future<Output = ()>>(&mut self, stop: Option<Pin<&mut S>>) -> bool {
        self.carry_out().await;
        if self.mapper.is_stopped() {
            return false;
        }
        let mut buf = [0u8; 1100];
        let wait = self.mapper.poll_timeout().map(|t| t.since(self.now()));
        let woke = {
            let rt = &self.rt;
            let socket = &self.socket;
            let recv = async {
                match socket {
                    Some(s) => match R::recv_udp(s, &mut buf).await {
                        Ok(n) => Woke::Datagram(n),
                        Err(e) => Woke::SocketError(e),
                    },
                    None => std::future::pending().await,
                }
            };
            let timer = async {
                match wait {
                    Some(d) => rt.sleep(d).await,
                    None => std::future::pending().await,
                }
                Woke::Timer
            };
            let stopped = async {
                match stop {
                    Some(s) => s.await,
                    None => std::future::pending().await,
                }
                Woke::Stop
            };
            futures_lite::future::or(stopped, futures_lite::future::or(recv, timer)).await
        };
        let now = self.now();
        match woke {
            Woke::Stop => return true,
            Woke::Timer => self.mapper.handle_timeout(now),
            Woke::Datagram(n) => self.mapper.handle(now, Event::Datagram(&buf[..n])),
            Woke::SocketError(e) => {
                debug!(error = %e, "port mapping: gateway port 5351");
                self.mapper.handle(now, Event::Unreachable);
                if e.kind() != std::io::ErrorKind::ConnectionRefused {
                    // Not an ICMP answer: the socket is no use any more.
                    self.socket = None;
                }
            }
        }
        false
    }

    /// Sends, runs and logs what the mapper asks until it asks nothing.
    async fn carry_out(&mut self) {
        while let Some(action) = self.mapper.poll_action() {
            match action {
                Action::Send(bytes) => {
                    let sent = match &self.socket {
                        Some(s) => R::send_udp(s, &bytes).await.is_ok(),
                        None => false,
                    };
                    if !sent {
                        let now = self.now();
                        self.mapper.handle(now, Event::Unreachable);
                    }
                }
                Action::Upnp(op) => {
                    let outcome = self.upnp_op(op).await;
                    let now = self.now();
                    self.mapper.handle(now, Event::Upnp(outcome));
                }
                Action::Changed(mapping) => self.publish(mapping),
                Action::Unavailable { protocol, reason } => {
                    info!(%reason, "{protocol}: no port mapping");
                }
                Action::GaveUp { retry_in } => warn!(
                    retry_in_secs = retry_in.as_secs(),
                    ipv6 = self.v6,
                    "no port mapping from the gateway (PCP, NAT-PMP, UPnP as configured); running on the local address"
                ),
                Action::GatewayRestarted => {
                    info!("port mapping: the gateway lost its mappings (rebooted?); mapped again")
                }
                Action::Removed {
                    protocol,
                    confirmed,
                } => {
                    self.clear();
                    if confirmed {
                        info!("{protocol}: mapping removed");
                    } else {
                        warn!("{protocol}: the gateway did not confirm the removal; the mapping ends with its lease");
                    }
                }
            }
        }
        if let Some(m) = self.mapper.mapping().copied() {
            if self.renewed_at.is_some_and(|t| t != m.renewed_at) {
                debug!(external = %m.external, lifetime_secs = m.lifetime.as_secs(),
                       "{}: lease renewed", m.protocol);
                self.publish(Some(m));
            }
            self.renewed_at = Some(m.renewed_at);
        } else {
            self.renewed_at = None;
        }
    }

    fn publish(&mut self, mapping: Option<mau_proto::portmap::Mapping>) {
        let now = self.now();
        let active = mapping.map(|m| ActiveMapping {
            protocol: m.protocol,
            internal: self.mapper_internal(),
            external: m.external,
            lifetime: m.lifetime,
            expires: SystemTime::now() + m.expires.since(now),
        });
        let mut slot = lock(self.status.slot(self.v6));
        match (&*slot, &active) {
            (_, Some(a)) if slot.is_none_or(|old| old.external != a.external) => info!(
                internal = %a.internal, external = %a.external, lifetime_secs = a.lifetime.as_secs(),
                "{}: {}", a.protocol, if self.v6 { "IPv6 pinhole opened" } else { "port mapped" }
            ),
            (Some(old), None) => warn!(external = %old.external, "{}: mapping lost", old.protocol),
            _ => {}
        }
        *slot = active;
        if let (false, Some(m)) = (self.v6, &self.status.metrics) {
            m.set_upnp(active.is_some());
        }
    }

    fn mapper_internal(&self) -> SocketAddr {
        self.upnp.as_ref().map_or_else(
            || {
                let port = self.listen.port();
                self.socket
                    .as_ref()
                    .and_then(|s| R::udp_local_addr(s).ok())
                    .map_or(self.listen, |a| SocketAddr::new(a.ip(), port))
            },
            |m| m.internal,
        )
    }

    async fn upnp_op(&mut self, op: UpnpOp) -> Result<(SocketAddr, Duration), String> {
        match op {
            UpnpOp::Map { lifetime, .. } => {
                let m = Arc::new(
                    upnp::map(&self.rt, self.listen, lifetime)
                        .await
                        .map_err(|e| e.to_string())?,
                );
                let held = (m.external, m.lease);
                self.upnp = Some(m);
                Ok(held)
            }
            UpnpOp::Renew { .. } => {
                let m = self.upnp.clone().ok_or("no UPnP mapping held")?;
                m.renew(&self.rt).await.map_err(|e| e.to_string())?;
                Ok((m.external, m.lease))
            }
            UpnpOp::Remove { .. } => {
                let m = self.upnp.take().ok_or("no UPnP mapping held")?;
                m.remove(&self.rt, UPNP_REMOVE_TIMEOUT)
                    .await
                    .map_err(|e| e.to_string())?;
                Ok((m.external, Duration::ZERO))
            }
        }
    }
}

/// Routable IPv6 (not link-local, loopback or unique-local would do for a
/// pinhole nobody outside can reach).
fn is_global_v6(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V6(v6) => {
            let first = v6.segments()[0];
            !v6.is_loopback() && !v6.is_unspecified() && (first & 0xe000) == 0x2000
        }
        IpAddr::V4(_) => false,
    }
}

/// The default gateway of the family, from the kernel's routing table.
fn default_gateway(v6: bool) -> Option<IpAddr> {
    let (path, parse): (&str, fn(&str) -> Option<IpAddr>) = if v6 {
        ("/proc/net/ipv6_route", parse_ipv6_route)
    } else {
        ("/proc/net/route", parse_route)
    };
    parse(&std::fs::read_to_string(path).ok()?)
}

/// The gateway of the IPv4 default route in `/proc/net/route` (lowest
/// metric); addresses are hexadecimal in the kernel's byte order.
fn parse_route(text: &str) -> Option<IpAddr> {
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let (dest, gw, metric) = (f.get(1)?, f.get(2)?, f.get(6)?);
            let gw = u32::from_str_radix(gw, 16).ok()?;
            (*dest == "00000000" && gw != 0).then_some((
                metric.parse::<u32>().ok()?,
                Ipv4Addr::from(gw.to_ne_bytes()),
            ))
        })
        .min()
        .map(|(_, ip)| IpAddr::V4(ip))
}

/// The next hop of the IPv6 default route in `/proc/net/ipv6_route`
/// (lowest metric); only a global one is of use (a link-local next hop
/// would need its interface, and PCP then answers from that scope).
fn parse_ipv6_route(text: &str) -> Option<IpAddr> {
    let hex = |s: &str| -> Option<Ipv6Addr> {
        (s.len() == 32).then_some(())?;
        u128::from_str_radix(s, 16).ok().map(Ipv6Addr::from)
    };
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let (dest, plen, hop, metric) = (f.first()?, f.get(1)?, f.get(4)?, f.get(5)?);
            let hop = hex(hop)?;
            let default = hex(dest)? == Ipv6Addr::UNSPECIFIED && *plen == "00";
            (default && is_global_v6(IpAddr::V6(hop)))
                .then_some((u32::from_str_radix(metric, 16).ok()?, hop))
        })
        .min()
        .map(|(_, ip)| IpAddr::V6(ip))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_default_gateways() {
        let v4 =
            "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
                  eth0\t0001A8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n\
                  eth0\t00000000\t0101A8C0\t0003\t0\t0\t100\t00000000\t0\t0\t0\n\
                  wlan0\t00000000\t0102A8C0\t0003\t0\t0\t600\t00000000\t0\t0\t0\n";
        if cfg!(target_endian = "little") {
            assert_eq!(parse_route(v4), Some("192.168.1.1".parse().unwrap()));
        }
        assert_eq!(parse_route("Iface\n"), None);
        let v6 = "20010db8001900010000000000000000 40 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000001 00000000 00000001 eth0\n\
                  00000000000000000000000000000000 00 00000000000000000000000000000000 00 20010db8001900010000000000000001 00000400 00000001 00000000 00000003 eth0\n\
                  00000000000000000000000000000000 00 00000000000000000000000000000000 00 fe800000000000000000000000000001 00000100 00000001 00000000 00000003 eth1\n";
        assert_eq!(
            parse_ipv6_route(v6),
            Some("2001:db8:19:1::1".parse().unwrap())
        );
    }
}
