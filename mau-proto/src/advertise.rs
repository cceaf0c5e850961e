//! What a node advertises: its direct address, and whether it needs relays.
//!
//! Sans-IO: the node feeds what it knows (configuration, the port mapping,
//! the public IP its peers agree on, the reachability verdict, the peers
//! that offer to relay) and gets back the address to put in its
//! certificate and the relays to hold reservations on.

use core::net::{IpAddr, SocketAddr};

use crate::reachability::Reach;
use crate::routing_table::Contact;
use crate::subnet::HostIp;
use crate::wire::PeerAddress;

/// The direct address to advertise: the configured one, else the mapped
/// one, else the local one, its IP replaced by the public IP peers agree
/// on when the local one says nothing to them (unspecified, or private
/// while the voted IP is public).
pub fn direct_address(
    configured: Option<&PeerAddress>,
    mapped: Option<SocketAddr>,
    public_ip: Option<IpAddr>,
    local: SocketAddr,
) -> PeerAddress {
    if let Some(a) = configured {
        return a.clone();
    }
    if let Some(m) = mapped {
        return PeerAddress::from(m);
    }
    let local_ip = local.ip();
    match public_ip {
        Some(ip)
            if local_ip.is_unspecified()
                || (crate::subnet::is_public(ip) && !crate::subnet::is_public(local_ip)) =>
        {
            PeerAddress::from(SocketAddr::new(ip, local.port()))
        }
        _ => PeerAddress::from(local),
    }
}

/// Parameters of [`RelayChoice`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RelayChoiceConfig {
    /// Relays offered to the reservation machine at most (it holds a few
    /// of them and fails over between them).
    pub max_candidates: usize,
}

impl Default for RelayChoiceConfig {
    fn default() -> Self {
        RelayChoiceConfig { max_candidates: 8 }
    }
}

/// Whether an unreachable node needs relays, and which.
///
/// It needs them once the reachability verdict says its direct address is
/// unreachable (a port mapping that works makes the direct address the
/// mapped one, which the verdict then finds reachable); it drops them when
/// the verdict says the direct address is reachable. An unknown verdict,
/// or one about another address (the direct one just changed, the next
/// check will tell), changes nothing: no flapping between checks.
///
/// Candidates are the peers that said they relay for others; those chosen
/// stay first (a reservation is not moved for nothing), new ones follow in
/// the order given.
#[derive(Clone, Debug)]
pub struct RelayChoice {
    config: RelayChoiceConfig,
    needed: bool,
    chosen: Vec<Contact<PeerAddress>>,
}

impl RelayChoice {
    /// Nothing needed yet.
    pub fn new(config: RelayChoiceConfig) -> Self {
        RelayChoice {
            config,
            needed: false,
            chosen: Vec::new(),
        }
    }

    /// True while relays are needed.
    pub fn needed(&self) -> bool {
        self.needed
    }

    /// The relays chosen now (empty when none are needed).
    pub fn chosen(&self) -> &[Contact<PeerAddress>] {
        &self.chosen
    }

    /// Feeds the verdict, the direct address it should be about and the
    /// relay candidates; returns the relays to hold when they change.
    pub fn update(
        &mut self,
        verdict: &Reach<PeerAddress>,
        direct: &PeerAddress,
        candidates: &[Contact<PeerAddress>],
    ) -> Option<Vec<Contact<PeerAddress>>> {
        let about_direct = |a: &PeerAddress| {
            a == direct
                || (a.port() == direct.port()
                    && direct.host_ip().is_some_and(|ip| ip.is_unspecified()))
        };
        match verdict {
            Reach::Unreachable(a) if about_direct(a) => self.needed = true,
            Reach::Reachable(a) if about_direct(a) => self.needed = false,
            _ => {}
        }
        let next: Vec<Contact<PeerAddress>> = if self.needed {
            let live = |c: &Contact<PeerAddress>| {
                candidates.iter().any(|d| d.fingerprint == c.fingerprint)
            };
            let mut next: Vec<_> = self.chosen.iter().filter(|c| live(c)).cloned().collect();
            for c in candidates {
                if next.len() >= self.config.max_candidates {
                    break;
                }
                if !next.iter().any(|d| d.fingerprint == c.fingerprint) {
                    next.push(c.clone());
                }
            }
            next
        } else {
            Vec::new()
        };
        (next != self.chosen).then(|| {
            self.chosen = next.clone();
            next
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Fingerprint;

    fn addr(s: &str) -> PeerAddress {
        PeerAddress::parse(s).expect("address")
    }

    fn relay(n: u8) -> Contact<PeerAddress> {
        let fp = Fingerprint::parse(&format!("{n:02x}").repeat(20)).expect("fingerprint");
        Contact::new(fp, addr(&format!("11.19.0.{n}:7000")))
    }

    #[test]
    fn the_direct_address_prefers_configured_then_mapped_then_voted() {
        let local: SocketAddr = "0.0.0.0:7000".parse().expect("addr");
        let public: IpAddr = "81.2.69.142".parse().expect("ip");
        let conf = addr("me.example.org:7000");
        let mapped: SocketAddr = "81.2.69.142:40000".parse().expect("addr");
        assert_eq!(
            direct_address(Some(&conf), Some(mapped), Some(public), local),
            conf
        );
        assert_eq!(
            direct_address(None, Some(mapped), Some(public), local),
            PeerAddress::from(mapped)
        );
        assert_eq!(
            direct_address(None, None, Some(public), local),
            addr("81.2.69.142:7000")
        );
        assert_eq!(
            direct_address(None, None, None, local),
            addr("0.0.0.0:7000")
        );
        // A private listener takes a public voted IP, not a private one; a
        // public listener keeps its own IP.
        let lan: SocketAddr = "192.168.1.5:7000".parse().expect("addr");
        assert_eq!(
            direct_address(None, None, Some(public), lan),
            addr("81.2.69.142:7000")
        );
        let private: IpAddr = "192.168.1.1".parse().expect("ip");
        assert_eq!(
            direct_address(None, None, Some(private), lan),
            addr("192.168.1.5:7000")
        );
        let own: SocketAddr = "11.19.0.12:7000".parse().expect("addr");
        assert_eq!(
            direct_address(None, None, Some(public), own),
            addr("11.19.0.12:7000")
        );
    }

    #[test]
    fn relays_are_held_while_unreachable_and_dropped_once_reachable() {
        let direct = addr("81.2.69.142:7000");
        let mut c = RelayChoice::new(RelayChoiceConfig { max_candidates: 2 });
        let cands = [relay(1), relay(2), relay(3)];
        assert_eq!(c.update(&Reach::Unknown, &direct, &cands), None);
        // No candidates: needed, but nothing to hold.
        assert_eq!(
            c.update(&Reach::Unreachable(direct.clone()), &direct, &[]),
            None
        );
        assert!(c.needed());
        assert_eq!(
            c.update(&Reach::Unreachable(direct.clone()), &direct, &cands),
            Some(vec![relay(1), relay(2)])
        );
        // Unknown again, or a verdict about another address: kept.
        assert_eq!(c.update(&Reach::Unknown, &direct, &cands), None);
        let old = addr("81.2.69.142:9999");
        assert_eq!(c.update(&Reach::Reachable(old), &direct, &cands), None);
        // A candidate gone: the next one takes its place, the kept one stays first.
        assert_eq!(
            c.update(&Reach::Unknown, &direct, &[relay(3), relay(2)]),
            Some(vec![relay(2), relay(3)])
        );
        assert_eq!(
            c.update(&Reach::Reachable(direct.clone()), &direct, &cands),
            Some(vec![])
        );
        assert!(!c.needed());
        assert!(c.chosen().is_empty());
    }

    #[test]
    fn an_unspecified_direct_address_matches_a_verdict_on_its_port() {
        let direct = addr("0.0.0.0:7000");
        let mut c = RelayChoice::new(RelayChoiceConfig::default());
        let seen = Reach::Unreachable(addr("11.19.0.100:7000"));
        assert_eq!(c.update(&seen, &direct, &[relay(1)]), Some(vec![relay(1)]));
        let other_port = Reach::Reachable(addr("11.19.0.100:7001"));
        assert_eq!(c.update(&other_port, &direct, &[relay(1)]), None);
    }
}
