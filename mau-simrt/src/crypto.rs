//! TLS whose randomness follows the seed: a rustls crypto provider for the
//! simulation, so that handshakes (and so every byte on the simulated wire)
//! replay.
//!
//! rustls draws its randoms from the provider's `secure_random` and its
//! ephemeral keys from the key-exchange groups; ring's own X25519 takes
//! them from the OS (its random-source trait is sealed). This provider
//! keeps ring for everything else (ciphers, hashes, Ed25519 signatures,
//! which are deterministic) and replaces those two: both read the running
//! simulation's TLS generator (seeded from the run's seed, put on its
//! thread by [`crate::Sim::block_on`] while it runs), and X25519 is
//! `x25519-dalek` on a secret drawn from it. Outside a simulation (no
//! generator on the thread) both read the OS, so a process that installed
//! the provider keeps real randomness for anything else.

use std::cell::RefCell;
use std::sync::{Arc, OnceLock};

use rustls::crypto::{
    ActiveKeyExchange, CryptoProvider, GetRandomFailed, SecureRandom, SharedSecret,
    SupportedKxGroup,
};
use rustls::{NamedGroup, PeerMisbehaved};

thread_local! {
    /// The generator of the simulation running on this thread, if any.
    static SEEDED: RefCell<Option<fastrand::Rng>> = const { RefCell::new(None) };
}

/// Makes `rng` this thread's TLS randomness; returns the one it replaces
/// (give it back to [`leave`]).
pub(crate) fn enter(rng: fastrand::Rng) -> Option<fastrand::Rng> {
    SEEDED.with(|s| s.replace(Some(rng)))
}

/// Restores `outer` as this thread's TLS randomness; returns the one
/// [`enter`] installed, advanced by what was drawn.
pub(crate) fn leave(outer: Option<fastrand::Rng>) -> Option<fastrand::Rng> {
    SEEDED.with(|s| s.replace(outer))
}

/// rustls's ring provider, whose parts this one reuses.
fn ring() -> &'static CryptoProvider {
    static RING: OnceLock<CryptoProvider> = OnceLock::new();
    RING.get_or_init(rustls::crypto::ring::default_provider)
}

/// Fills `buf` from the simulation's generator, else from the OS.
fn fill(buf: &mut [u8]) -> Result<(), GetRandomFailed> {
    let seeded = SEEDED.with(|s| s.borrow_mut().as_mut().map(|rng| rng.fill(buf)).is_some());
    if seeded {
        Ok(())
    } else {
        ring().secure_random.fill(buf)
    }
}

#[derive(Debug)]
struct SeededRandom;

impl SecureRandom for SeededRandom {
    fn fill(&self, buf: &mut [u8]) -> Result<(), GetRandomFailed> {
        fill(buf)
    }
}

/// X25519 with the secret drawn by [`fill`].
#[derive(Debug)]
struct SeededX25519;

impl SupportedKxGroup for SeededX25519 {
    fn start(&self) -> Result<Box<dyn ActiveKeyExchange>, rustls::Error> {
        let mut secret = [0u8; 32];
        fill(&mut secret).map_err(|_| rustls::Error::FailedToGetRandomBytes)?;
        let secret = x25519_dalek::StaticSecret::from(secret);
        let public = x25519_dalek::PublicKey::from(&secret).to_bytes();
        Ok(Box::new(X25519Exchange { secret, public }))
    }

    fn name(&self) -> NamedGroup {
        NamedGroup::X25519
    }
}

struct X25519Exchange {
    secret: x25519_dalek::StaticSecret,
    public: [u8; 32],
}

impl ActiveKeyExchange for X25519Exchange {
    fn complete(self: Box<Self>, peer: &[u8]) -> Result<SharedSecret, rustls::Error> {
        let peer: [u8; 32] = peer
            .try_into()
            .map_err(|_| rustls::Error::from(PeerMisbehaved::InvalidKeyShare))?;
        let shared = self
            .secret
            .diffie_hellman(&x25519_dalek::PublicKey::from(peer));
        // An all-zero result means a low-order point (as ring refuses it).
        if !shared.was_contributory() {
            return Err(PeerMisbehaved::InvalidKeyShare.into());
        }
        Ok(SharedSecret::from(&shared.as_bytes()[..]))
    }

    fn pub_key(&self) -> &[u8] {
        &self.public
    }

    fn group(&self) -> NamedGroup {
        NamedGroup::X25519
    }
}

/// The simulation's provider: ring's, with seeded randoms and X25519.
pub fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| {
            Arc::new(CryptoProvider {
                kx_groups: vec![&SeededX25519],
                secure_random: &SeededRandom,
                ..rustls::crypto::ring::default_provider()
            })
        })
        .clone()
}

/// Installs [`provider`] for every TLS configuration mau-identity builds
/// from now on; `false` if another was installed first (handshakes then
/// draw from the OS and do not replay).
pub fn install() -> bool {
    let p = provider();
    Arc::ptr_eq(&mau_identity::install_provider(p.clone()), &p)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn draw() -> [u8; 32] {
        let mut b = [0u8; 32];
        fill(&mut b).expect("random bytes");
        b
    }

    #[test]
    fn randomness_follows_the_entered_generator_and_the_os_outside() {
        let outer = enter(fastrand::Rng::with_seed(5));
        let a = draw();
        leave(outer);
        let outer = enter(fastrand::Rng::with_seed(5));
        let b = draw();
        let c = draw();
        leave(outer);
        assert_eq!(a, b, "same seed, same bytes");
        assert_ne!(b, c, "the generator advances");
        assert_ne!(draw(), draw(), "outside a simulation: the OS");
    }

    #[test]
    fn seeded_x25519_agrees_and_refuses_bad_shares() {
        let (a, b) = (SeededX25519.start().unwrap(), SeededX25519.start().unwrap());
        let (pa, pb) = (a.pub_key().to_vec(), b.pub_key().to_vec());
        let (sa, sb) = (a.complete(&pb).unwrap(), b.complete(&pa).unwrap());
        assert_eq!(sa.secret_bytes(), sb.secret_bytes());
        let c = SeededX25519.start().unwrap();
        assert!(c.complete(&[0u8; 32]).is_err(), "low-order point");
        let d = SeededX25519.start().unwrap();
        assert!(d.complete(&[1u8; 31]).is_err(), "wrong length");
    }
}
