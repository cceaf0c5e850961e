//! Sybil limits: how many peers of one IP subnet the routing table admits.
//!
//! One machine or one provider can create fingerprints for free, but not IP
//! addresses. Capping the peers per IPv4 /24 or IPv6 /64, in each bucket and in
//! the whole table (as discv5 does), keeps such an attacker from filling our
//! buckets and eclipsing us. Addresses that are not public (loopback, private,
//! link-local, ...) are exempt by default, so devnets and LANs work unchanged;
//! [`SubnetLimits::scope`] can count them too.

use core::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::wire::PeerAddress;

/// The subnet an address belongs to for the limits: its IPv4 /24 or IPv6 /64.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Subnet {
    /// The first three octets of an IPv4 address.
    V4([u8; 3]),
    /// The first eight bytes of an IPv6 address.
    V6([u8; 8]),
}

impl Subnet {
    /// The /24 or /64 of `ip`; an IPv4-mapped IPv6 address counts as IPv4.
    pub fn of(ip: IpAddr) -> Subnet {
        match ip {
            IpAddr::V4(v4) => Subnet::from_v4(v4),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Subnet::from_v4(v4),
                None => {
                    let o = v6.octets();
                    Subnet::V6([o[0], o[1], o[2], o[3], o[4], o[5], o[6], o[7]])
                }
            },
        }
    }

    fn from_v4(v4: Ipv4Addr) -> Subnet {
        let o = v4.octets();
        Subnet::V4([o[0], o[1], o[2]])
    }
}

/// True for an address reachable across the internet: not loopback, private,
/// shared (CGNAT), link-local, unique-local, unspecified, "this network",
/// documentation, broadcast or multicast.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => is_public_v4(v4),
            None => is_public_v6(v6),
        },
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let o = ip.octets();
    let this_network = o[0] == 0;
    let shared = o[0] == 100 && (o[1] & 0xc0) == 64; // 100.64.0.0/10
    !(this_network
        || shared
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_broadcast()
        || ip.is_documentation()
        || ip.is_multicast())
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let documentation = ip.segments()[0] == 0x2001 && ip.segments()[1] == 0x0db8;
    !(ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_unique_local()
        || ip.is_unicast_link_local()
        || ip.is_multicast()
        || documentation)
}

/// An address type that may name an IP address. Addresses without one (a DNS
/// name on the wire) are not subject to the limits: the core cannot resolve.
pub trait HostIp {
    /// The IP address this address points at, if it is written as one.
    fn host_ip(&self) -> Option<IpAddr>;
}

impl HostIp for PeerAddress {
    fn host_ip(&self) -> Option<IpAddr> {
        self.host().parse().ok()
    }
}

impl HostIp for IpAddr {
    fn host_ip(&self) -> Option<IpAddr> {
        Some(*self)
    }
}

impl HostIp for SocketAddr {
    fn host_ip(&self) -> Option<IpAddr> {
        Some(self.ip())
    }
}

/// A `u32` is an IPv4 address in host order (`Ipv4Addr::from(u32)`), the way
/// the simulator and the fuzzer name their nodes.
impl HostIp for u32 {
    fn host_ip(&self) -> Option<IpAddr> {
        Some(IpAddr::V4(Ipv4Addr::from(*self)))
    }
}

/// Which addresses the limits count.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LimitScope {
    /// Only public addresses ([`is_public`]): LANs, loopback devnets and
    /// private test networks are not limited.
    #[default]
    PublicOnly,
    /// Every IP address but loopback: a devnet of many nodes on one machine
    /// is not one host, while LAN and other private sources are counted
    /// (the adapters' per-IP connection cap: one hostile machine on a shared
    /// LAN is still one host).
    AllButLoopback,
    /// Every IP address (to test the limits on a private network).
    All,
}

impl LimitScope {
    /// True if limits in this scope count `ip`.
    pub fn counts(self, ip: IpAddr) -> bool {
        match self {
            LimitScope::All => true,
            LimitScope::AllButLoopback => !ip.to_canonical().is_loopback(),
            LimitScope::PublicOnly => is_public(ip),
        }
    }
}

/// Peers of one subnet allowed in the routing table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SubnetLimits {
    /// Per bucket (discv5: 2).
    pub per_bucket: usize,
    /// In the whole table (discv5: 10).
    pub per_table: usize,
    /// Which addresses count.
    pub scope: LimitScope,
}

impl Default for SubnetLimits {
    fn default() -> Self {
        SubnetLimits {
            per_bucket: 2,
            per_table: 10,
            scope: LimitScope::PublicOnly,
        }
    }
}

impl SubnetLimits {
    /// The subnet `address` counts against, or `None` if it is exempt.
    pub fn subnet_of<A: HostIp>(&self, address: &A) -> Option<Subnet> {
        let ip = address.host_ip()?;
        self.scope.counts(ip).then(|| Subnet::of(ip))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("test address")
    }

    #[test]
    fn subnets_are_slash_24_and_slash_64() {
        assert_eq!(Subnet::of(ip("1.2.3.4")), Subnet::of(ip("1.2.3.200")));
        assert_ne!(Subnet::of(ip("1.2.3.4")), Subnet::of(ip("1.2.4.4")));
        assert_eq!(
            Subnet::of(ip("2001:1:2:3::1")),
            Subnet::of(ip("2001:1:2:3:ff::9"))
        );
        assert_ne!(
            Subnet::of(ip("2001:1:2:3::1")),
            Subnet::of(ip("2001:1:2:4::1"))
        );
        assert_eq!(Subnet::of(ip("::ffff:1.2.3.4")), Subnet::of(ip("1.2.3.9")));
    }

    #[test]
    fn only_public_addresses_count_by_default() {
        let l = SubnetLimits::default();
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "192.168.1.1",
            "172.16.0.1",
            "169.254.1.1",
            "100.64.0.1",
            "0.0.1.2",
            "::1",
            "fd00::1",
            "fe80::1",
            "2001:db8::1",
            "::ffff:10.0.0.1",
        ] {
            assert_eq!(l.subnet_of(&ip(private)), None, "{private}");
        }
        for public in ["1.2.3.4", "8.8.8.8", "2a00:1450::1", "::ffff:1.2.3.4"] {
            assert!(l.subnet_of(&ip(public)).is_some(), "{public}");
        }
        let all = SubnetLimits {
            scope: LimitScope::All,
            ..l
        };
        assert!(all.subnet_of(&ip("127.0.0.1")).is_some());
        let lan = SubnetLimits {
            scope: LimitScope::AllButLoopback,
            ..l
        };
        for loopback in ["127.0.0.1", "127.9.9.9", "::1", "::ffff:127.0.0.1"] {
            assert!(lan.subnet_of(&ip(loopback)).is_none(), "{loopback}");
        }
        for counted in [
            "10.1.2.3",
            "192.168.1.9",
            "100.64.0.1",
            "fe80::1",
            "8.8.8.8",
        ] {
            assert!(lan.subnet_of(&ip(counted)).is_some(), "{counted}");
        }
    }

    #[test]
    fn peer_addresses_name_their_ip_or_none() {
        let p = |s| PeerAddress::parse(s).expect("valid");
        assert_eq!(p("1.2.3.4:80").host_ip(), Some(ip("1.2.3.4")));
        assert_eq!(p("[2a00::1]:80").host_ip(), Some(ip("2a00::1")));
        assert_eq!(p("example.org:80").host_ip(), None);
        assert_eq!(0x0102_0304u32.host_ip(), Some(ip("1.2.3.4")));
    }
}
