//! Wire compatibility with the Go implementation: certificates made by Go's
//! `x509.CreateCertificate` with Mau's template (fixtures from
//! `tests/data/gen_go_certs.go`, seed `[7; 32]`, created 1 700 000 000).
//! Ed25519 signatures are deterministic, so ours must be byte-identical.

use mau_identity::{Fingerprint, KeyVersion, MauVerifier, TlsIdentity};
use rustls::pki_types::CertificateDer;

const GO_WITH_ADDRESS: &[u8] = include_bytes!("data/go_cert_with_address.der");
const GO_NO_ADDRESS: &[u8] = include_bytes!("data/go_cert_no_address.der");
const FPR: &str = "342c25fd3fe71df8fdca402b8dfc5fce41028cd5";
const CREATED: u32 = 1_700_000_000;

fn ours(address: Option<&str>) -> TlsIdentity {
    TlsIdentity::from_ed25519_seed(&[7; 32], CREATED, KeyVersion::V4, address).expect("identity")
}

#[test]
fn our_certificates_are_byte_identical_to_go() {
    let with = ours(Some("192.0.2.7:4433"));
    assert_eq!(with.fingerprint(), Fingerprint::parse(FPR).expect("hex"));
    assert_eq!(with.certificate().as_ref(), GO_WITH_ADDRESS);
    assert_eq!(ours(None).certificate().as_ref(), GO_NO_ADDRESS);
}

#[test]
fn go_certificates_verify() {
    let v = MauVerifier::pinned(Fingerprint::parse(FPR).expect("hex"));
    let id = v
        .verify_certificate(&CertificateDer::from(GO_WITH_ADDRESS), 1_800_000_000)
        .expect("Go certificate accepted");
    assert_eq!(id.fingerprint.to_string(), FPR);
    assert_eq!(id.address.as_deref(), Some("192.0.2.7:4433"));
    let id = v
        .verify_certificate(&CertificateDer::from(GO_NO_ADDRESS), 1_800_000_000)
        .expect("Go certificate accepted");
    assert_eq!(id.address, None);
}
