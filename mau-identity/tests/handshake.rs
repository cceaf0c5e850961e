//! In-memory mutual-TLS handshakes: successes for v4/v6 in both directions,
//! and one test per reason a side refuses its peer.

mod common;

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use common::{account, connect, handshake};
use mau_identity::{
    client_config, derive_fingerprint, peer_identity, server_config, CertTemplate, Fingerprint,
    IdentityError, KeyVersion, MauVerifier, TlsIdentity, VerifyError, FINGERPRINT_URI_PREFIX,
};
use rustls::pki_types::CertificateDer;
use rustls::{ClientConnection, ServerConnection};

const CREATED: u32 = 1_700_000_000;

fn seed(n: u8) -> [u8; 32] {
    [n; 32]
}

fn ident(n: u8, version: KeyVersion, address: Option<&str>) -> TlsIdentity {
    TlsIdentity::from_ed25519_seed(&seed(n), CREATED, version, address).expect("identity")
}

fn public(n: u8) -> [u8; 32] {
    use ring::signature::KeyPair;
    let kp = ring::signature::Ed25519KeyPair::from_seed_unchecked(&seed(n)).expect("seed");
    kp.public_key().as_ref().try_into().expect("32 bytes")
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

/// Runs a handshake and expects both sides to agree on who the other is.
fn expect_success(client: &TlsIdentity, server: &TlsIdentity) {
    let (c, s, ce, se) = connect(
        client_config(client, server.fingerprint()).expect("client config"),
        server_config(server).expect("server config"),
    );
    assert!(ce.is_none() && se.is_none(), "client {ce:?} server {se:?}");
    assert!(!c.is_handshaking() && !s.is_handshaking());
    let seen_by_client = peer_identity(&c).expect("server identity");
    assert_eq!(seen_by_client.fingerprint, server.fingerprint());
    assert_eq!(seen_by_client.address.as_deref(), server.address());
    let seen_by_server = peer_identity(&s).expect("client identity");
    assert_eq!(seen_by_server.fingerprint, client.fingerprint());
    assert_eq!(seen_by_server.address.as_deref(), client.address());
}

/// The reason `err` carries, which must be a Mau verification failure.
fn reason(err: Option<rustls::Error>) -> VerifyError {
    let err = err.expect("the handshake should have failed");
    VerifyError::from_tls_error(&err).unwrap_or_else(|| panic!("not a verify error: {err:?}"))
}

#[test]
fn v4_accounts_handshake() {
    let a = TlsIdentity::from_account(account(KeyVersion::V4, 0), Some("192.0.2.1:7000"))
        .expect("identity");
    let b = TlsIdentity::from_account(account(KeyVersion::V4, 1), None).expect("identity");
    assert_eq!(a.fingerprint(), account(KeyVersion::V4, 0).fingerprint());
    expect_success(&a, &b);
    expect_success(&b, &a);
}

#[test]
fn v6_accounts_handshake() {
    let a = TlsIdentity::from_account(account(KeyVersion::V6, 0), Some("[2001:db8::1]:7000"))
        .expect("identity");
    let b = TlsIdentity::from_account(account(KeyVersion::V6, 1), None).expect("identity");
    assert_eq!(a.fingerprint().version(), 6);
    expect_success(&a, &b);
    expect_success(&b, &a);
}

#[test]
fn mixed_v4_v6_handshake_both_directions() {
    let a = TlsIdentity::from_account(account(KeyVersion::V4, 0), Some("a.example:1"))
        .expect("identity");
    let b = TlsIdentity::from_account(account(KeyVersion::V6, 0), Some("b.example:2"))
        .expect("identity");
    expect_success(&a, &b);
    expect_success(&b, &a);
}

#[test]
fn seed_identities_handshake() {
    expect_success(
        &ident(1, KeyVersion::V4, Some("10.0.0.1:80")),
        &ident(2, KeyVersion::V6, None),
    );
}

#[test]
fn certificate_layout() {
    let v4 = ident(1, KeyVersion::V4, Some("host:1"));
    let cert = v4.certificate().as_ref();
    let contains = |needle: &[u8]| cert.windows(needle.len()).any(|w| w == needle);
    assert!(contains(b"host:1"));
    assert!(contains(v4.fingerprint().to_string().as_bytes()));
    let v6 = ident(1, KeyVersion::V6, None);
    let uri = format!("{FINGERPRINT_URI_PREFIX}{}", v6.fingerprint());
    assert!(v6
        .certificate()
        .as_ref()
        .windows(uri.len())
        .any(|w| w == uri.as_bytes()));
    // The standard rustls/webpki parser accepts our certificates.
    for c in [v4.certificate(), v6.certificate()] {
        assert!(rustls::server::ParsedCertificate::try_from(c).is_ok());
    }
}

#[test]
fn peer_identity_before_handshake_fails() {
    let a = ident(1, KeyVersion::V4, None);
    let c = ClientConnection::new(
        client_config(&a, a.fingerprint()).expect("config"),
        mau_identity::server_name(),
    )
    .expect("client");
    assert!(matches!(
        peer_identity(&c),
        Err(IdentityError::HandshakeIncomplete)
    ));
}

#[test]
fn server_refuses_missing_client_certificate() {
    let server = ident(2, KeyVersion::V4, None);
    let client_cfg = rustls::ClientConfig::builder_with_provider(mau_identity::provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("tls13")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(MauVerifier::pinned(server.fingerprint())))
        .with_no_client_auth();
    let (_, _, _, se) = connect(
        Arc::new(client_cfg),
        server_config(&server).expect("config"),
    );
    assert_eq!(reason(se), VerifyError::NoClientCertificate);
}

#[test]
fn client_refuses_wrong_peer() {
    let client = ident(1, KeyVersion::V4, None);
    let server = ident(2, KeyVersion::V4, None);
    let other = ident(3, KeyVersion::V4, None).fingerprint();
    let (_, _, ce, _) = connect(
        client_config(&client, other).expect("config"),
        server_config(&server).expect("config"),
    );
    assert_eq!(
        reason(ce),
        VerifyError::WrongFingerprint {
            expected: other,
            found: server.fingerprint()
        }
    );
}

/// A certificate for the key of seed `attacker` that names `victim`.
fn forged(attacker: u8, victim: Fingerprint) -> TlsIdentity {
    let real = ident(attacker, KeyVersion::V4, None);
    let mut t = CertTemplate::ed25519(&public(attacker), u64::from(CREATED));
    match victim {
        Fingerprint::V4(_) => t.dns_names.push(victim.to_string()),
        Fingerprint::V6(_) => t.uris.push(format!("{FINGERPRINT_URI_PREFIX}{victim}")),
    }
    real.dangerous_with_certificate(t.sign_ed25519(&seed(attacker)))
}

#[test]
fn client_refuses_server_claiming_another_fingerprint() {
    let client = ident(1, KeyVersion::V4, None);
    let victim = ident(2, KeyVersion::V4, None).fingerprint();
    let attacker = forged(9, victim);
    let (_, _, ce, _) = connect(
        client_config(&client, victim).expect("config"),
        server_config(&attacker).expect("config"),
    );
    assert_eq!(
        reason(ce),
        VerifyError::ForgedFingerprint {
            claimed: victim,
            actual: derive_fingerprint(KeyVersion::V4, &public(9), CREATED),
        }
    );
}

#[test]
fn server_refuses_client_claiming_another_fingerprint() {
    let server = ident(2, KeyVersion::V4, None);
    for victim in [
        ident(1, KeyVersion::V4, None).fingerprint(),
        ident(1, KeyVersion::V6, None).fingerprint(),
    ] {
        let attacker = forged(9, victim);
        let (_, _, _, se) = connect(
            client_config(&attacker, server.fingerprint()).expect("config"),
            server_config(&server).expect("config"),
        );
        assert!(
            matches!(reason(se), VerifyError::ForgedFingerprint { claimed, .. } if claimed == victim)
        );
    }
}

/// An ECDSA P-256 certificate that names a (v4) fingerprint.
fn ecdsa_certificate() -> CertificateDer<'static> {
    use ring::rand::SystemRandom;
    use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_ASN1_SIGNING};
    let rng = SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng).expect("gen");
    let kp = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.as_ref(), &rng)
        .expect("key");
    let point = kp.public_key().as_ref();
    // SEQUENCE { SEQUENCE { id-ecPublicKey, prime256v1 }, BIT STRING point }
    let mut spki = vec![0x30, 0x59, 0x30, 0x13, 0x06, 0x07];
    spki.extend_from_slice(&[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01]);
    spki.extend_from_slice(&[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07]);
    spki.extend_from_slice(&[0x03, 0x42, 0x00]);
    spki.extend_from_slice(point);
    let mut t = CertTemplate::ed25519(&[0; 32], u64::from(CREATED));
    t.spki = spki;
    // ecdsa-with-SHA256
    t.signature_algorithm = vec![
        0x30, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02,
    ];
    t.dns_names.push("00".repeat(20));
    t.sign_with(|tbs| kp.sign(&rng, tbs).expect("sign").as_ref().to_vec())
}

#[test]
fn both_sides_refuse_non_ed25519_keys() {
    let cert = ecdsa_certificate();
    assert!(rustls::server::ParsedCertificate::try_from(&cert).is_ok());
    let server = ident(2, KeyVersion::V4, None);
    let client = ident(1, KeyVersion::V4, None);
    let bad_client = client.dangerous_with_certificate(cert.clone());
    let (_, _, _, se) = connect(
        client_config(&bad_client, server.fingerprint()).expect("config"),
        server_config(&server).expect("config"),
    );
    assert_eq!(reason(se), VerifyError::NotEd25519);
    let bad_server = server.dangerous_with_certificate(cert);
    let (_, _, ce, _) = connect(
        client_config(&client, server.fingerprint()).expect("config"),
        server_config(&bad_server).expect("config"),
    );
    assert_eq!(reason(ce), VerifyError::NotEd25519);
}

/// A well-bound certificate for seed `n` valid from `not_before` to `not_after`.
fn with_validity(n: u8, not_before: u64, not_after: u64) -> TlsIdentity {
    let fpr = derive_fingerprint(KeyVersion::V4, &public(n), not_before as u32);
    let mut t = CertTemplate::ed25519(&public(n), not_before);
    t.not_after = not_after;
    t.dns_names.push(fpr.to_string());
    ident(n, KeyVersion::V4, None).dangerous_with_certificate(t.sign_ed25519(&seed(n)))
}

#[test]
fn client_refuses_expired_server() {
    let client = ident(1, KeyVersion::V4, None);
    let server = with_validity(2, 1_000_000_000, 1_100_000_000);
    let expected = derive_fingerprint(KeyVersion::V4, &public(2), 1_000_000_000);
    let (_, _, ce, _) = connect(
        client_config(&client, expected).expect("config"),
        server_config(&server).expect("config"),
    );
    assert!(matches!(
        reason(ce),
        VerifyError::Expired {
            not_after: 1_100_000_000,
            ..
        }
    ));
}

#[test]
fn server_refuses_not_yet_valid_client() {
    let server = ident(2, KeyVersion::V4, None);
    let later = now() + 10 * 365 * 86400;
    let client = with_validity(1, later, later + 86400);
    let (_, _, _, se) = connect(
        client_config(&client, server.fingerprint()).expect("config"),
        server_config(&server).expect("config"),
    );
    assert!(matches!(
        reason(se),
        VerifyError::NotYetValid { not_before, .. } if not_before == later
    ));
}

#[test]
fn server_refuses_bad_self_signature() {
    let server = ident(2, KeyVersion::V4, None);
    let client = ident(1, KeyVersion::V4, None);
    let mut der = client.certificate().as_ref().to_vec();
    let last = der.len() - 1;
    der[last] ^= 0x01;
    let bad = client.dangerous_with_certificate(CertificateDer::from(der));
    let (_, _, _, se) = connect(
        client_config(&bad, server.fingerprint()).expect("config"),
        server_config(&server).expect("config"),
    );
    assert_eq!(reason(se), VerifyError::BadSignature);
}

#[test]
fn handshake_signature_must_come_from_the_certificate_key() {
    // A genuine certificate of peer 1 presented with the key of peer 9:
    // the certificate checks pass, the CertificateVerify signature does not.
    let server = ident(2, KeyVersion::V4, None);
    let thief = ident(9, KeyVersion::V4, None)
        .dangerous_with_certificate(ident(1, KeyVersion::V4, None).certificate().clone());
    let (_, _, _, se) = connect(
        client_config(&thief, server.fingerprint()).expect("config"),
        server_config(&server).expect("config"),
    );
    let se = se.expect("must fail");
    assert!(
        matches!(
            se,
            rustls::Error::InvalidCertificate(rustls::CertificateError::BadSignature)
        ),
        "{se:?}"
    );
}

#[test]
fn verifier_reports_missing_and_conflicting_names() {
    let v = MauVerifier::any_peer();
    let t = CertTemplate::ed25519(&public(1), u64::from(CREATED));
    assert_eq!(
        v.verify_certificate(&t.sign_ed25519(&seed(1)), now()),
        Err(VerifyError::NoFingerprint)
    );
    let mine = derive_fingerprint(KeyVersion::V4, &public(1), CREATED);
    let other = derive_fingerprint(KeyVersion::V4, &public(2), CREATED);
    let mut t2 = t.clone();
    t2.dns_names = vec![mine.to_string(), other.to_string()];
    assert_eq!(
        v.verify_certificate(&t2.sign_ed25519(&seed(1)), now()),
        Err(VerifyError::ConflictingFingerprints {
            first: mine,
            second: other
        })
    );
    let mut t3 = t.clone();
    t3.dns_names = vec![mine.to_string().to_uppercase()];
    assert_eq!(
        v.verify_certificate(&t3.sign_ed25519(&seed(1)), now())
            .map(|p| p.fingerprint),
        Ok(mine),
        "Go parses fingerprints in either case"
    );
    assert!(matches!(
        v.verify_certificate(
            &CertificateDer::from(vec![0x30, 0x03, 0x02, 0x01, 0x01]),
            now()
        ),
        Err(VerifyError::Malformed(_))
    ));
}

/// docs/identity.md: the fingerprint name is written in lower case (what Go
/// writes, `hex.EncodeToString`) and read in either case (as Go's
/// `hex.DecodeString` reads it, and as DNS names compare); the key binding
/// holds either way (an upper-case name is accepted above).
#[test]
fn fingerprint_names_are_written_in_lower_case() {
    for version in [KeyVersion::V4, KeyVersion::V6] {
        let id = ident(3, version, Some("peer.example:7"));
        let hex = id.fingerprint().to_string();
        assert_eq!(hex, hex.to_ascii_lowercase());
        let der: &[u8] = id.certificate().as_ref();
        let has = |s: &str| der.windows(s.len()).any(|w| w == s.as_bytes());
        assert!(has(&hex), "{version:?}: lower-case name missing");
        assert!(
            !has(&hex.to_ascii_uppercase()),
            "{version:?}: upper case written"
        );
        let p = MauVerifier::any_peer()
            .verify_certificate(id.certificate(), now())
            .expect("our own certificate verifies");
        assert_eq!(p.fingerprint, id.fingerprint());
        assert_eq!(p.address.as_deref(), Some("peer.example:7"));
    }
}

#[test]
fn invalid_addresses_are_refused() {
    for bad in ["", "has space:1", "tab\t:1", &"ab".repeat(20)] {
        assert!(matches!(
            TlsIdentity::from_ed25519_seed(&seed(1), CREATED, KeyVersion::V4, Some(bad)),
            Err(IdentityError::InvalidOption(_))
        ));
    }
}

#[test]
fn data_flows_after_handshake() {
    use std::io::{Read, Write};
    let a = ident(1, KeyVersion::V6, None);
    let b = ident(2, KeyVersion::V4, None);
    let (mut c, mut s, ce, se) = connect(
        client_config(&a, b.fingerprint()).expect("config"),
        server_config(&b).expect("config"),
    );
    assert!(ce.is_none() && se.is_none());
    c.writer().write_all(b"ping").expect("write");
    let _ = handshake(&mut c, &mut s);
    let mut buf = [0u8; 4];
    s.reader().read_exact(&mut buf).expect("read");
    assert_eq!(&buf, b"ping");
    let _: &ServerConnection = &s;
}

#[test]
fn small_clock_skew_on_not_before_is_tolerated() {
    let server = ident(2, KeyVersion::V4, None);
    let soon = now() + 60;
    let client = with_validity(1, soon, soon + 86400);
    let (_, s, _, se) = connect(
        client_config(&client, server.fingerprint()).expect("config"),
        server_config(&server).expect("config"),
    );
    assert!(se.is_none(), "{se:?}");
    assert_eq!(
        peer_identity(&s).expect("identity").fingerprint,
        derive_fingerprint(KeyVersion::V4, &public(1), soon as u32)
    );
}
