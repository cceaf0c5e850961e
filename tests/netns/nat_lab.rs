//! The NAT lab: a "public" segment and home networks behind NAT routers, in
//! network namespaces (issue 19).
//!
//! ```text
//!   public segment (bridge in its own namespace): 11.19.0.0/24, 2001:db8:19::/64
//!     public host i  11.19.0.(10+i)          (bootstrap node, relay, probes)
//!     router j WAN   11.19.0.(100+j)  ── NAT (nftables masquerade) ──┐
//!                                                                    │
//!   home j: 192.168.(j+1).0/24, 2001:db8:19:(j+1)::/64               │
//!     router j LAN   192.168.(j+1).1  ───────────────────────────────┘
//!     home host i    192.168.(j+1).(10+i)  (default route via the router)
//! ```
//!
//! The public prefix is not a documentation range on purpose: miniupnpd
//! refuses to map on a reserved or private external address (TEST-NET
//! included). It exists only inside these namespaces.
//!
//! Each router NATs IPv4 with nftables masquerade, either keeping ports
//! ([`NatKind::EndpointIndependent`]: one external port per internal socket
//! whatever the destination) or picking a random port per connection
//! ([`NatKind::Symmetric`]). IPv6 is routed, not translated, through a
//! stateful firewall: replies and traffic from the home pass, unsolicited
//! inbound traffic is dropped unless a pinhole (miniupnpd's chain) lets it.
//! A router may run miniupnpd (UPnP IGD, NAT-PMP and PCP on its LAN side).
//!
//! Everything lives in namespaces of one [`Lab`], so it is all removed when
//! the [`NatLab`] is dropped, also when a test panics. Names are unique per
//! lab (process id and a counter), so tests may run in parallel.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::ops::{Deref, DerefMut};
use std::path::PathBuf;
use std::process::Output;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use super::{require, Lab};

/// The first three octets of the public IPv4 /24.
pub const PUBLIC_V4: [u8; 3] = [11, 19, 0];

/// The public IPv6 /64 (first four segments); home `j` gets the /64 whose
/// fourth segment is `j + 1`.
pub const PUBLIC_V6: [u16; 4] = [0x2001, 0xdb8, 0x19, 0];

/// The port miniupnpd serves its UPnP description and SOAP on.
pub const MINIUPNPD_HTTP_PORT: u16 = 5555;

/// The NAT-PMP and PCP server port (RFC 6886, RFC 6887).
pub const PCP_PORT: u16 = 5351;

/// How a router maps its home's outgoing IPv4 connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NatKind {
    /// `masquerade persistent`: the source port is kept, so one internal
    /// socket has one external port towards every destination (the NAT
    /// that hole punching can cross).
    EndpointIndependent,
    /// `masquerade random,fully-random`: every new connection (each
    /// destination) gets a random external port.
    Symmetric,
}

impl NatKind {
    fn masquerade(self) -> &'static str {
        match self {
            NatKind::EndpointIndependent => "masquerade persistent",
            NatKind::Symmetric => "masquerade random,fully-random",
        }
    }
}

/// A namespace with one interface (`eth0`) in the lab.
#[derive(Clone, Debug)]
pub struct Host {
    /// Its namespace: run commands with [`Lab::sh`], [`Lab::spawn`], ...
    pub ns: String,
    /// Its IPv4 address.
    pub ip: Ipv4Addr,
    /// Its IPv6 address (global within the lab).
    pub ip6: Ipv6Addr,
}

impl Host {
    /// `ip:port`.
    pub fn addr(&self, port: u16) -> SocketAddr {
        SocketAddr::from((self.ip, port))
    }
}

/// A home network: a NAT router and the hosts behind it.
#[derive(Debug)]
pub struct Home {
    /// How the router translates.
    pub kind: NatKind,
    /// The router's namespace (`wan0` towards the public segment, `lan0`
    /// towards the home).
    pub router: String,
    /// The router's public address (the home's external address).
    pub wan_ip: Ipv4Addr,
    /// The router's public IPv6 address.
    pub wan_ip6: Ipv6Addr,
    /// The router's address on the home LAN (the hosts' gateway).
    pub gateway: Ipv4Addr,
    /// The router's IPv6 address on the home LAN.
    pub gateway6: Ipv6Addr,
    /// The hosts behind it.
    pub hosts: Vec<Host>,
    /// miniupnpd's process index in the lab, when the router runs it.
    pub miniupnpd: Option<usize>,
    conf: Option<PathBuf>,
    log: Option<PathBuf>,
}

/// A public segment and home networks; derefs to its [`Lab`].
pub struct NatLab {
    /// The namespaces and processes (removed on drop).
    pub lab: Lab,
    /// The hosts on the public segment (bootstrap node, relay, ...).
    pub public: Vec<Host>,
    /// The home networks, in the order they were asked for.
    pub homes: Vec<Home>,
}

impl Deref for NatLab {
    type Target = Lab;
    fn deref(&self) -> &Lab {
        &self.lab
    }
}

impl DerefMut for NatLab {
    fn deref_mut(&mut self) -> &mut Lab {
        &mut self.lab
    }
}

/// What a home network should have.
#[derive(Clone, Copy, Debug)]
struct HomeSpec {
    kind: NatKind,
    miniupnpd: bool,
    hosts: usize,
}

/// Describes a [`NatLab`]; [`NatLabBuilder::build`] makes it.
#[derive(Debug)]
pub struct NatLabBuilder {
    tag: String,
    public_hosts: usize,
    homes: Vec<HomeSpec>,
}

impl NatLab {
    /// A lab named after `tag` (short, unique per test).
    pub fn builder(tag: &str) -> NatLabBuilder {
        NatLabBuilder {
            tag: tag.to_string(),
            public_hosts: 0,
            homes: Vec::new(),
        }
    }

    /// The external address of home `j`'s router.
    pub fn wan_ip(&self, j: usize) -> Ipv4Addr {
        self.homes[j].wan_ip
    }

    /// The rules miniupnpd holds on home `j`'s router (its DNAT chain and
    /// its forward chain, which also holds IPv6 pinholes), as `nft` lists them.
    pub fn miniupnpd_rules(&self, j: usize) -> String {
        let router = &self.homes[j].router;
        let mut text = String::new();
        for chain in ["prerouting_miniupnpd", "miniupnpd"] {
            let out = self.try_sh(router, &["nft", "list", "chain", "inet", "filter", chain]);
            text.push_str(&String::from_utf8_lossy(&out.stdout));
        }
        text
    }

    /// miniupnpd's log on home `j`'s router.
    pub fn miniupnpd_log(&self, j: usize) -> String {
        self.homes[j]
            .log
            .as_ref()
            .and_then(|p| std::fs::read_to_string(p).ok())
            .unwrap_or_default()
    }

    /// Stops miniupnpd on home `j` (SIGKILL: it keeps no state) and starts
    /// it again, as a router reboot would; its NAT-PMP/PCP epoch restarts.
    /// Its rules are flushed first, as a rebooted router has none.
    pub fn restart_miniupnpd(&mut self, j: usize) {
        let i = self.homes[j]
            .miniupnpd
            .expect("this router runs no miniupnpd");
        let child = self.lab.child(i);
        let _ = child.kill();
        let _ = child.wait();
        let router = self.homes[j].router.clone();
        for chain in ["prerouting_miniupnpd", "postrouting_miniupnpd", "miniupnpd"] {
            self.sh(&router, &["nft", "flush", "chain", "inet", "filter", chain]);
        }
        let i = start_miniupnpd(&mut self.lab, &self.homes[j]);
        self.homes[j].miniupnpd = Some(i);
    }

    /// Runs `args` in `host`'s namespace, returning its output whatever
    /// the exit status.
    pub fn run_on(&self, host: &Host, args: &[&str]) -> Output {
        self.try_sh(&host.ns, args)
    }
}

static LABS: AtomicUsize = AtomicUsize::new(0);

fn v6(segment4: u16, last: u16) -> Ipv6Addr {
    let [a, b, c, _] = PUBLIC_V6;
    Ipv6Addr::new(a, b, c, segment4, 0, 0, 0, last)
}

impl NatLabBuilder {
    /// `n` hosts on the public segment.
    pub fn public_hosts(mut self, n: usize) -> Self {
        self.public_hosts = n;
        self
    }

    /// A home network behind a `kind` router with `hosts` hosts.
    pub fn home(mut self, kind: NatKind, hosts: usize) -> Self {
        self.homes.push(HomeSpec {
            kind,
            miniupnpd: false,
            hosts,
        });
        self
    }

    /// A home network whose `kind` router also runs miniupnpd (UPnP IGD,
    /// NAT-PMP and PCP).
    pub fn home_with_miniupnpd(mut self, kind: NatKind, hosts: usize) -> Self {
        self.homes.push(HomeSpec {
            kind,
            miniupnpd: true,
            hosts,
        });
        self
    }

    /// Makes the lab; `None` (after a SKIP message, a failure under
    /// `CI=true`) when not root or a tool is missing. Returns once every
    /// miniupnpd listens.
    pub fn build(self) -> Option<NatLab> {
        let test = self.tag.as_str();
        let mut tools = vec![("nft", "nftables"), ("ss", "iproute2")];
        if self.homes.iter().any(|h| h.miniupnpd) {
            tools.push(("miniupnpd", "miniupnpd miniupnpd-nftables"));
        }
        if !tools.iter().all(|(tool, pkg)| require(test, tool, pkg)) {
            return None;
        }
        let n = LABS.fetch_add(1, Ordering::Relaxed);
        let mut lab = Lab::new(&format!("{test}{n}"))?;
        let hub = lab.add_ns("pub");
        bridge(&lab, &hub, "br0");
        let [p0, p1, p2] = PUBLIC_V4;
        let mut public = Vec::new();
        for i in 0..self.public_hosts {
            let host = Host {
                ns: lab.add_ns(&format!("p{i}")),
                ip: Ipv4Addr::new(p0, p1, p2, 10 + i as u8),
                ip6: v6(0, 0x10 + i as u16),
            };
            plug(&lab, &host.ns, "eth0", &hub, "br0", &format!("p{i}"));
            lab.addr(&host.ns, "eth0", &format!("{}/24", host.ip));
            lab.addr(&host.ns, "eth0", &format!("{}/64", host.ip6));
            public.push(host);
        }
        let mut homes = Vec::new();
        for (j, spec) in self.homes.iter().enumerate() {
            let net = j as u8 + 1;
            let router = lab.add_ns(&format!("r{j}"));
            plug(&lab, &router, "wan0", &hub, "br0", &format!("r{j}"));
            bridge(&lab, &router, "lan0");
            let mut home = Home {
                kind: spec.kind,
                wan_ip: Ipv4Addr::new(p0, p1, p2, 100 + net - 1),
                wan_ip6: v6(0, 0x100 + j as u16),
                gateway: Ipv4Addr::new(192, 168, net, 1),
                gateway6: v6(u16::from(net), 1),
                router,
                hosts: Vec::new(),
                miniupnpd: None,
                conf: None,
                log: None,
            };
            let r = &home.router;
            lab.addr(r, "wan0", &format!("{}/24", home.wan_ip));
            lab.addr(r, "wan0", &format!("{}/64", home.wan_ip6));
            lab.addr(r, "lan0", &format!("{}/24", home.gateway));
            lab.addr(r, "lan0", &format!("{}/64", home.gateway6));
            for key in ["net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1"] {
                lab.sh(r, &["sysctl", "-q", "-w", key]);
            }
            let rules = lab.path(&format!("router{j}.nft"));
            std::fs::write(&rules, router_rules(spec.kind)).expect("nft file");
            lab.sh(r, &["nft", "-f", rules.to_str().expect("utf-8")]);
            for i in 0..spec.hosts {
                let host = Host {
                    ns: lab.add_ns(&format!("h{j}-{i}")),
                    ip: Ipv4Addr::new(192, 168, net, 10 + i as u8),
                    ip6: v6(u16::from(net), 0x10 + i as u16),
                };
                plug(&lab, &host.ns, "eth0", r, "lan0", &format!("h{i}"));
                lab.addr(&host.ns, "eth0", &format!("{}/24", host.ip));
                lab.addr(&host.ns, "eth0", &format!("{}/64", host.ip6));
                let gw = home.gateway.to_string();
                lab.sh(&host.ns, &["ip", "route", "add", "default", "via", &gw]);
                let gw6 = home.gateway6.to_string();
                lab.sh(
                    &host.ns,
                    &["ip", "-6", "route", "add", "default", "via", &gw6],
                );
                home.hosts.push(host);
            }
            homes.push(home);
        }
        // IPv6 is routed: everyone on the public segment (hosts, other
        // routers) reaches home j's /64 through router j.
        for (j, home) in homes.iter().enumerate() {
            let prefix = format!("{}/64", v6(j as u16 + 1, 0));
            let via = home.wan_ip6.to_string();
            let others = homes.iter().enumerate().filter(|(k, _)| *k != j);
            let nss = public
                .iter()
                .map(|h| &h.ns)
                .chain(others.map(|(_, h)| &h.router));
            for ns in nss {
                lab.sh(ns, &["ip", "-6", "route", "add", &prefix, "via", &via]);
            }
        }
        for (j, spec) in self.homes.iter().enumerate() {
            if spec.miniupnpd {
                let conf = lab.path(&format!("miniupnpd{j}.conf"));
                std::fs::write(&conf, miniupnpd_conf(&homes[j])).expect("miniupnpd.conf");
                homes[j].conf = Some(conf);
                homes[j].log = Some(lab.path(&format!("miniupnpd{j}.log")));
                homes[j].miniupnpd = Some(start_miniupnpd(&mut lab, &homes[j]));
            }
        }
        Some(NatLab { lab, public, homes })
    }
}

/// A bridge `name`, up, in `ns`.
fn bridge(lab: &Lab, ns: &str, name: &str) {
    lab.sh(ns, &["ip", "link", "add", name, "type", "bridge"]);
    lab.sh(ns, &["ip", "link", "set", name, "up"]);
}

/// A veth from `ns`/`iface` to a port `port` of bridge `br` in `hub`.
fn plug(lab: &Lab, ns: &str, iface: &str, hub: &str, br: &str, port: &str) {
    lab.veth(ns, iface, hub, port);
    lab.sh(hub, &["ip", "link", "set", port, "master", br]);
}

/// A home router's firewall: stateful forwarding (a home gets out, only
/// replies and what miniupnpd opens get in), IPv4 masquerade of `kind`.
/// Table and chain names are miniupnpd's nftables defaults, so it fills in
/// `miniupnpd` (forward accepts, IPv6 pinholes) and the two NAT chains.
fn router_rules(kind: NatKind) -> String {
    format!(
        "table inet filter {{
    chain forward {{
        type filter hook forward priority 0; policy drop;
        ct state established,related accept
        iifname \"lan0\" accept
        jump miniupnpd
    }}
    chain miniupnpd {{ }}
    chain prerouting {{
        type nat hook prerouting priority -100; policy accept;
        jump prerouting_miniupnpd
    }}
    chain postrouting {{
        type nat hook postrouting priority 100; policy accept;
        jump postrouting_miniupnpd
        oifname \"wan0\" meta nfproto ipv4 {}
    }}
    chain prerouting_miniupnpd {{ }}
    chain postrouting_miniupnpd {{ }}
}}
",
        kind.masquerade()
    )
}

/// miniupnpd for `home`: UPnP IGD, NAT-PMP and PCP (one switch,
/// `enable_natpmp`, in Debian's build), leases from 1 s so tests can watch
/// renewals, daemon uptime as the PCP/NAT-PMP epoch (a restart is a reboot).
fn miniupnpd_conf(home: &Home) -> String {
    let net = home.gateway.octets()[2];
    format!(
        "ext_ifname=wan0\next_ifname6=wan0\nlistening_ip=lan0\nipv6_listening_ip={gw6}\n\
         http_port={http}\nenable_natpmp=yes\nenable_upnp=yes\nsecure_mode=yes\n\
         system_uptime=no\nupnp_table_name=filter\nupnp_nat_table_name=filter\n\
         upnp_forward_chain=miniupnpd\nupnp_nat_chain=prerouting_miniupnpd\n\
         upnp_nat_postrouting_chain=postrouting_miniupnpd\nmin_lifetime=1\nmax_lifetime=86400\n\
         uuid=3d3cec3a-8cf0-11e0-98ee-001a6bd2d0{net:02x}\n\
         allow 1024-65535 192.168.{net}.0/24 1024-65535\ndeny 0-65535 0.0.0.0/0 0-65535\n",
        gw6 = home.gateway6,
        http = MINIUPNPD_HTTP_PORT,
    )
}

/// Starts miniupnpd on `home`'s router; returns once it listens for
/// NAT-PMP/PCP and UPnP.
fn start_miniupnpd(lab: &mut Lab, home: &Home) -> usize {
    let conf = home.conf.as_ref().expect("miniupnpd.conf");
    let log = home.log.as_ref().expect("miniupnpd log");
    let pid = conf.with_extension("pid");
    let i = lab.spawn(
        &home.router,
        &[
            "miniupnpd",
            "-d",
            "-f",
            conf.to_str().expect("utf-8"),
            "-P",
            pid.to_str().expect("utf-8"),
        ],
        &[],
        log,
    );
    let start = Instant::now();
    loop {
        let udp = lab.try_sh(&home.router, &["ss", "-lnu"]);
        let tcp = lab.try_sh(&home.router, &["ss", "-lnt"]);
        let pcp = format!("{}:{PCP_PORT}", home.gateway);
        let http = format!(":{MINIUPNPD_HTTP_PORT}");
        if String::from_utf8_lossy(&udp.stdout).contains(&pcp)
            && String::from_utf8_lossy(&tcp.stdout).contains(&http)
        {
            return i;
        }
        assert!(
            lab.running(i) && start.elapsed() < Duration::from_secs(20),
            "miniupnpd did not come up on {}: {}",
            home.router,
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
