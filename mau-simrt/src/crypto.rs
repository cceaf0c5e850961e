//! TLS whose randomness follows the seed: a rustls crypto provider for the
//! simulation, so that handshakes (and so every byte on the simulated wire)
//! replay.
//!
//! rustls draws its randoms from the provider's `secure_random` and its
//! ephemeral keys from the key-exchange groups; ring's own X25519 group
//! takes its secret from the OS. This provider keeps ring for everything
//! else (ciphers, hashes, Ed25519 signatures, which are deterministic) and
//! replaces those two: both read the running simulation's TLS generator
//! (seeded from the run's seed, put on its thread by
//! [`crate::Sim::block_on`] while it runs), and X25519 is ring's own
//! arithmetic on a secret drawn from it. Outside a simulation (no generator
//! on the thread) both read the OS, so a process that installed the
//! provider keeps real randomness for anything else.

use std::cell::RefCell;
use std::sync::{Arc, OnceLock};

use ring::agreement;
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
        X25519Exchange::from_secret(&secret)
    }

    fn name(&self) -> NamedGroup {
        NamedGroup::X25519
    }
}

struct X25519Exchange {
    key: agreement::EphemeralPrivateKey,
    public: [u8; 32],
}

impl X25519Exchange {
    /// The exchange whose private key is `secret` (clamped, RFC 7748).
    fn from_secret(secret: &[u8; 32]) -> Result<Box<dyn ActiveKeyExchange>, rustls::Error> {
        // ring's X25519 (its assembly ladder; `x25519-dalek`'s portable
        // one, used before for the same keys and secrets, cost 3% more of
        // a run's CPU) takes its secret from a `SecureRandom`, a sealed
        // trait; its fixed-bytes source hands it ours. That source sits in
        // ring's internal test module (0.17), which rustls pins.
        #[allow(deprecated)]
        let source = ring::test::rand::FixedSliceRandom { bytes: secret };
        let key = agreement::EphemeralPrivateKey::generate(&agreement::X25519, &source)
            .map_err(|_| rustls::Error::FailedToGetRandomBytes)?;
        let public = key
            .compute_public_key()
            .map_err(|_| rustls::Error::General("X25519 public key".into()))?;
        let public: [u8; 32] = public
            .as_ref()
            .try_into()
            .map_err(|_| rustls::Error::General("X25519 public key".into()))?;
        Ok(Box::new(X25519Exchange { key, public }))
    }
}

impl ActiveKeyExchange for X25519Exchange {
    fn complete(self: Box<Self>, peer: &[u8]) -> Result<SharedSecret, rustls::Error> {
        // ring refuses a share of the wrong length and a low-order point
        // (an all-zero result).
        let peer = agreement::UnparsedPublicKey::new(&agreement::X25519, peer);
        agreement::agree_ephemeral(self.key, &peer, |s| SharedSecret::from(s))
            .map_err(|_| PeerMisbehaved::InvalidKeyShare.into())
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

    fn hex(s: &str) -> [u8; 32] {
        let b: Vec<u8> = (0..64)
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect();
        b.try_into().unwrap()
    }

    /// RFC 7748, section 6.1: the same keys and secret as any X25519 (as
    /// `x25519-dalek`, used before, gave), so the wire is unchanged.
    #[test]
    fn x25519_matches_rfc_7748() {
        let alice = X25519Exchange::from_secret(&hex(
            "77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a",
        ))
        .unwrap();
        let bob = X25519Exchange::from_secret(&hex(
            "5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb",
        ))
        .unwrap();
        let (pa, pb) = (alice.pub_key().to_vec(), bob.pub_key().to_vec());
        assert_eq!(
            pa,
            hex("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a")
        );
        assert_eq!(
            pb,
            hex("de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f")
        );
        let shared = hex("4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742");
        assert_eq!(alice.complete(&pb).unwrap().secret_bytes(), shared);
        assert_eq!(bob.complete(&pa).unwrap().secret_bytes(), shared);
    }
}
