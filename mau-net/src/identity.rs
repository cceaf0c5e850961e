//! The node's TLS certificates, reissued when its address changes.
//!
//! A peer learns our address from our certificate (its first DNS name, the
//! Go convention), so the certificate must name the address we can be
//! reached at *now*: a port mapping gained or lost, a public IP the peers'
//! votes agree on, a relay reservation obtained or lost all change it. The
//! certificate is derived from the PGP key, so reissuing it is cheap (one
//! Ed25519 signature) and proves the same fingerprint.
//!
//! Two certificates are kept:
//!
//! * the **advertised** one names the relayed address while we hold a
//!   reservation, else the direct one;
//! * the **direct** one always names the direct address (configured,
//!   mapped, or the public IP the votes agree on, with our port).
//!
//! A Go peer stores the first name of a caller's certificate without
//! checking it and hands it out to others; it cannot dial a relayed
//! address. So a peer is shown the advertised certificate only once it is
//! known to understand relays (it said so in `Mau-Features`, or it is
//! itself relayed); any other peer sees the direct one, which Go can use
//! whenever the node is in fact reachable. Dial-backs present the direct
//! one too: they test whether the direct address is reachable.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::lock::lock;
use mau_identity::{IdentityError, TlsIdentity};
use mau_proto::PeerAddress;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tracing::info;

/// Builds a certificate naming an address (`None`: no address).
pub type IdentityBuilder =
    Box<dyn Fn(Option<&str>) -> Result<TlsIdentity, IdentityError> + Send + Sync>;

struct Current {
    direct: Option<PeerAddress>,
    relayed: Option<PeerAddress>,
    advertised: TlsIdentity,
    direct_identity: TlsIdentity,
}

/// The node's certificates (see the module documentation).
pub struct Identities {
    build: Option<IdentityBuilder>,
    current: Mutex<Current>,
    /// Bumped on every reissue: connections made with an older certificate
    /// are not pooled again.
    generation: AtomicU64,
}

impl std::fmt::Debug for Identities {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let c = lock(&self.current);
        f.debug_struct("Identities")
            .field("direct", &c.direct)
            .field("relayed", &c.relayed)
            .finish_non_exhaustive()
    }
}

impl Identities {
    /// One certificate for good (it is never reissued).
    pub fn fixed(identity: TlsIdentity) -> Self {
        let direct = identity.address().and_then(|a| PeerAddress::parse(a).ok());
        Identities {
            build: None,
            current: Mutex::new(Current {
                direct,
                relayed: None,
                advertised: identity.clone(),
                direct_identity: identity,
            }),
            generation: AtomicU64::new(0),
        }
    }

    /// Certificates naming `direct`, reissued with `build` when the address
    /// changes.
    pub fn reissuing(build: IdentityBuilder, direct: PeerAddress) -> Result<Self, IdentityError> {
        let identity = build(Some(direct.as_str()))?;
        Ok(Identities {
            build: Some(build),
            current: Mutex::new(Current {
                direct: Some(direct),
                relayed: None,
                advertised: identity.clone(),
                direct_identity: identity,
            }),
            generation: AtomicU64::new(0),
        })
    }

    /// The certificate to show a peer: the advertised one if it understands
    /// relayed addresses, else the direct one.
    pub fn presented(&self, relay_aware: bool) -> TlsIdentity {
        let c = lock(&self.current);
        if relay_aware {
            c.advertised.clone()
        } else {
            c.direct_identity.clone()
        }
    }

    /// True if the certificates follow the address (not [`Self::fixed`]).
    pub fn reissues(&self) -> bool {
        self.build.is_some()
    }

    /// True if the two certificates differ (we advertise a relayed address).
    pub fn differ(&self) -> bool {
        lock(&self.current).relayed.is_some()
    }

    /// The address we advertise to peers that understand relays.
    pub fn advertised(&self) -> Option<PeerAddress> {
        let c = lock(&self.current);
        c.relayed.clone().or_else(|| c.direct.clone())
    }

    /// The direct address (never a relayed one).
    pub fn direct(&self) -> Option<PeerAddress> {
        lock(&self.current).direct.clone()
    }

    /// The reissue count: it changes whenever a certificate does.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Names `direct` from now on. True if the certificates were reissued.
    pub fn set_direct(&self, direct: PeerAddress) -> bool {
        self.reissue(Some(direct), None)
    }

    /// Advertises `relayed` (or, with `None`, the direct address again) to
    /// peers that understand relays. True if reissued.
    pub fn set_relayed(&self, relayed: Option<PeerAddress>) -> bool {
        self.reissue(None, Some(relayed))
    }

    fn reissue(&self, direct: Option<PeerAddress>, relayed: Option<Option<PeerAddress>>) -> bool {
        let Some(build) = &self.build else {
            return false;
        };
        let mut c = lock(&self.current);
        let new_direct = direct.or_else(|| c.direct.clone());
        let new_relayed = relayed.unwrap_or_else(|| c.relayed.clone());
        if new_direct == c.direct && new_relayed == c.relayed {
            return false;
        }
        let make = |a: &Option<PeerAddress>| build(a.as_ref().map(PeerAddress::as_str));
        let direct_identity = match make(&new_direct) {
            Ok(i) => i,
            Err(e) => {
                tracing::warn!(error = %e, "certificate not reissued");
                return false;
            }
        };
        let advertised = match &new_relayed {
            Some(_) => match make(&new_relayed) {
                Ok(i) => i,
                Err(e) => {
                    tracing::warn!(error = %e, "certificate not reissued");
                    return false;
                }
            },
            None => direct_identity.clone(),
        };
        info!(
            direct = ?new_direct.as_ref().map(PeerAddress::as_str),
            relayed = ?new_relayed.as_ref().map(PeerAddress::as_str),
            "certificate reissued for a new address"
        );
        *c = Current {
            direct: new_direct,
            relayed: new_relayed,
            advertised,
            direct_identity,
        };
        self.generation.fetch_add(1, Ordering::AcqRel);
        true
    }
}

/// The server side: every handshake gets the advertised certificate of the
/// moment (a mau-rs client ignores the server's address; a Go client reads
/// only its fingerprint).
#[derive(Debug)]
pub(crate) struct ServerCert(pub Arc<Identities>);

impl ResolvesServerCert for ServerCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.presented(true).certified_key())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mau_identity::{KeyVersion, MauVerifier};

    fn build() -> IdentityBuilder {
        Box::new(|a| TlsIdentity::from_ed25519_seed(&[7; 32], 1_700_000_000, KeyVersion::V4, a))
    }

    fn named(id: &TlsIdentity) -> Option<String> {
        let v = MauVerifier::any_peer();
        v.verify_certificate(id.certificate(), 1_800_000_000)
            .expect("valid")
            .address
    }

    fn addr(s: &str) -> PeerAddress {
        PeerAddress::parse(s).expect("address")
    }

    #[test]
    fn certificates_follow_the_address() {
        let ids = Identities::reissuing(build(), addr("192.168.1.5:7000")).expect("identity");
        let fp = ids.presented(true).fingerprint();
        assert_eq!(
            named(&ids.presented(false)).as_deref(),
            Some("192.168.1.5:7000")
        );
        assert!(
            !ids.set_direct(addr("192.168.1.5:7000")),
            "same address: kept"
        );
        assert_eq!(ids.generation(), 0);

        assert!(ids.set_direct(addr("81.2.69.142:7000")));
        assert_eq!(ids.generation(), 1);
        for aware in [false, true] {
            let id = ids.presented(aware);
            assert_eq!(named(&id).as_deref(), Some("81.2.69.142:7000"));
            assert_eq!(id.fingerprint(), fp, "same key, same fingerprint");
        }

        let relayed =
            addr("e5fd4a8353cf5c3c97d98eaec05454895107ba2f.11.19.0.10.mau-relay.invalid:7000");
        assert!(ids.set_relayed(Some(relayed.clone())));
        assert!(ids.differ());
        assert_eq!(ids.advertised(), Some(relayed.clone()));
        assert_eq!(
            named(&ids.presented(true)).as_deref(),
            Some(relayed.as_str())
        );
        // Peers not known to understand relays (Go) never see it.
        assert_eq!(
            named(&ids.presented(false)).as_deref(),
            Some("81.2.69.142:7000")
        );

        assert!(ids.set_relayed(None));
        assert!(!ids.differ());
        assert_eq!(
            named(&ids.presented(true)).as_deref(),
            Some("81.2.69.142:7000")
        );
        assert_eq!(ids.generation(), 3);
    }

    #[test]
    fn a_fixed_identity_is_never_reissued() {
        let id = TlsIdentity::from_ed25519_seed(&[7; 32], 1, KeyVersion::V4, Some("10.0.0.1:1"))
            .expect("identity");
        let ids = Identities::fixed(id);
        assert!(!ids.set_direct(addr("10.0.0.2:1")));
        assert_eq!(ids.direct(), Some(addr("10.0.0.1:1")));
    }
}
