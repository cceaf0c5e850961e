//! The certificate parser never panics on hostile input and only accepts
//! what verifies.

use mau_identity::{KeyVersion, MauVerifier, TlsIdentity};
use proptest::prelude::*;
use rustls::pki_types::CertificateDer;

fn valid() -> Vec<u8> {
    TlsIdentity::from_ed25519_seed(&[7; 32], 1_700_000_000, KeyVersion::V4, Some("h:1"))
        .expect("identity")
        .certificate()
        .as_ref()
        .to_vec()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let _ = MauVerifier::any_peer().verify_certificate(&CertificateDer::from(bytes), 1_800_000_000);
    }

    #[test]
    fn mutated_certificates_are_refused_or_unchanged(pos in any::<prop::sample::Index>(), xor in 1u8..=255) {
        let good = valid();
        let mut bad = good.clone();
        let i = pos.index(bad.len());
        bad[i] ^= xor;
        let v = MauVerifier::any_peer();
        let ok = v.verify_certificate(&CertificateDer::from(good), 1_800_000_000).expect("valid");
        // Any single-byte change either breaks the certificate or, at most,
        // leaves the same authenticated fingerprint (e.g. unsigned outer bytes
        // cannot change: the whole TBS is signed).
        if let Ok(id) = v.verify_certificate(&CertificateDer::from(bad), 1_800_000_000) {
            prop_assert_eq!(id.fingerprint, ok.fingerprint);
        }
    }
}
