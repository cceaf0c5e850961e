//! X.509 certificates derived from a PGP key, and the check that binds the
//! fingerprint named in a certificate to the certificate's own key.
//!
//! # Where the fingerprint lives
//!
//! * **v4** (20 bytes, 40 hex digits): a DNS SAN holding the lowercase hex
//!   fingerprint, exactly as the Go implementation writes it. Read in either
//!   case, as Go reads it (`hex.DecodeString`) and as DNS names compare; the
//!   binding below holds whatever the case.
//! * **v6** (32 bytes, 64 hex digits): too long for a DNS label (63 bytes at
//!   most), so it goes into a URI SAN `mau:fingerprint:<64 lowercase hex>`
//!   ([`FINGERPRINT_URI_PREFIX`]). It is never used as a TLS server name.
//!
//! The verifier learns the key version from the claim itself: a DNS SAN of
//! exactly 40 hex digits claims a v4 fingerprint, a `mau:fingerprint:` URI SAN
//! claims whatever its hex decodes to (64 digits: v6; 40 digits: v4). Every
//! claim in a certificate must name the same fingerprint.
//!
//! # The binding
//!
//! The fingerprint is recomputed from the certificate's Ed25519 public key
//! with NotBefore as the key's creation time ([`derive_fingerprint`]) and
//! must equal the claim; otherwise the certificate is refused as forged
//! ([`VerifyError::ForgedFingerprint`]). A certificate can therefore only
//! name the fingerprint of the key that signs the TLS handshake.

use mau_proto::Fingerprint;
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{alg_id, CertificateDer};

use crate::der::{self, Reader};
use crate::error::VerifyError;
use crate::KeyVersion;

/// Prefix of the URI SAN that carries a fingerprint (used for v6 keys).
pub const FINGERPRINT_URI_PREFIX: &str = "mau:fingerprint:";

/// Seconds from NotBefore to NotAfter are "100 calendar years", as in Go.
pub const VALIDITY_YEARS: i64 = 100;

/// How far in the future a certificate's NotBefore may lie and still be
/// accepted, in seconds. NotBefore is the PGP key's creation time, so a peer
/// whose key was just made on a machine whose clock runs slightly ahead
/// would otherwise be refused for a while.
pub const NOT_BEFORE_SKEW_SECS: u64 = 300;

/// DER AlgorithmIdentifier of Ed25519 (RFC 8410, parameters absent).
const ED25519_ALG_ID: &[u8] = &[0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70];

const OID_SAN: &[u8] = &[0x55, 0x1d, 0x11];
const OID_KEY_USAGE: &[u8] = &[0x55, 0x1d, 0x0f];
const OID_EXT_KEY_USAGE: &[u8] = &[0x55, 0x1d, 0x25];
const OID_BASIC_CONSTRAINTS: &[u8] = &[0x55, 0x1d, 0x13];
const OID_SERVER_AUTH: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x01];
const OID_CLIENT_AUTH: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x02];

/// OID 1.3.6.1.4.1.11591.15.1 (Ed25519 in legacy OpenPGP EdDSA keys).
const PGP_ED25519_OID: &[u8] = &[0x2b, 0x06, 0x01, 0x04, 0x01, 0xda, 0x47, 0x0f, 0x01];

/// The OpenPGP fingerprint of an Ed25519 primary key with the given public
/// key and creation time (seconds since the Unix epoch).
///
/// * v4 (legacy EdDSA, algorithm 22): SHA-1 over `0x99, len16, [4, created32,
///   22, 9, OID 2b06010401da470f01, bits16=263, 0x40 || pubkey]`.
/// * v6 (RFC 9580 Ed25519, algorithm 27): SHA-256 over `0x9b, len32, [6,
///   created32, 27, 32 as u32, pubkey]`.
pub fn derive_fingerprint(version: KeyVersion, public_key: &[u8; 32], created: u32) -> Fingerprint {
    use ring::digest;
    match version {
        KeyVersion::V4 => {
            let mut body = Vec::with_capacity(51);
            body.push(4);
            body.extend_from_slice(&created.to_be_bytes());
            body.push(22);
            body.push(PGP_ED25519_OID.len() as u8);
            body.extend_from_slice(PGP_ED25519_OID);
            body.extend_from_slice(&263u16.to_be_bytes());
            body.push(0x40);
            body.extend_from_slice(public_key);
            let mut ctx = digest::Context::new(&digest::SHA1_FOR_LEGACY_USE_ONLY);
            ctx.update(&[0x99]);
            ctx.update(&(body.len() as u16).to_be_bytes());
            ctx.update(&body);
            let mut out = [0u8; 20];
            out.copy_from_slice(ctx.finish().as_ref());
            Fingerprint::V4(out)
        }
        KeyVersion::V6 => {
            let mut body = Vec::with_capacity(42);
            body.push(6);
            body.extend_from_slice(&created.to_be_bytes());
            body.push(27);
            body.extend_from_slice(&32u32.to_be_bytes());
            body.extend_from_slice(public_key);
            let mut ctx = digest::Context::new(&digest::SHA256);
            ctx.update(&[0x9b]);
            ctx.update(&(body.len() as u32).to_be_bytes());
            ctx.update(&body);
            let mut out = [0u8; 32];
            out.copy_from_slice(ctx.finish().as_ref());
            Fingerprint::V6(out)
        }
    }
}

/// Where a certificate names a fingerprint: the SAN entries for it.
pub(crate) fn fingerprint_sans(fpr: &Fingerprint) -> (Vec<String>, Vec<String>) {
    match fpr {
        Fingerprint::V4(_) => (vec![fpr.to_string()], vec![]),
        Fingerprint::V6(_) => (vec![], vec![format!("{FINGERPRINT_URI_PREFIX}{fpr}")]),
    }
}

/// The contents of a certificate before it is signed.
///
/// [`crate::TlsIdentity`] builds Mau certificates from this; it is public so
/// that tests (here and in other crates) can build unusual or hostile
/// certificates: forged names, other key types, odd validity periods.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertTemplate {
    /// DER SubjectPublicKeyInfo.
    pub spki: Vec<u8>,
    /// DER AlgorithmIdentifier of the signature (in the TBS and outside it).
    pub signature_algorithm: Vec<u8>,
    /// NotBefore, seconds since the Unix epoch.
    pub not_before: u64,
    /// NotAfter, seconds since the Unix epoch.
    pub not_after: u64,
    /// DNS SANs, in order.
    pub dns_names: Vec<String>,
    /// URI SANs, in order (after the DNS SANs).
    pub uris: Vec<String>,
}

impl CertTemplate {
    /// A Mau certificate template for an Ed25519 key: NotAfter is NotBefore
    /// plus 100 calendar years; no SANs yet.
    pub fn ed25519(public_key: &[u8; 32], not_before: u64) -> Self {
        let spki = der::tlv_of(
            der::SEQUENCE,
            &[
                ED25519_ALG_ID,
                &der::tlv_of(der::BIT_STRING, &[&[0], public_key]),
            ],
        );
        CertTemplate {
            spki,
            signature_algorithm: ED25519_ALG_ID.to_vec(),
            not_before,
            not_after: der::add_years(not_before, VALIDITY_YEARS),
            dns_names: Vec::new(),
            uris: Vec::new(),
        }
    }

    /// The DER TBSCertificate: v3, serial 1, empty issuer and subject,
    /// KeyUsage digitalSignature|keyEncipherment (critical), ExtKeyUsage
    /// serverAuth+clientAuth, BasicConstraints cA=false (critical), SANs
    /// (critical, as the subject is empty). Same extensions, order and
    /// criticality as Go's `x509.CreateCertificate` with Mau's template.
    pub fn tbs_der(&self) -> Vec<u8> {
        let version = der::tlv(0xa0, &der::tlv(der::INTEGER, &[2]));
        let serial = der::tlv(der::INTEGER, &[1]);
        let empty_name = der::tlv(der::SEQUENCE, &[]);
        let validity = der::tlv_of(
            der::SEQUENCE,
            &[
                &der::encode_time(self.not_before),
                &der::encode_time(self.not_after),
            ],
        );
        let critical = der::tlv(der::BOOLEAN, &[0xff]);
        let ext = |oid: &[u8], crit: bool, value: &[u8]| -> Vec<u8> {
            let oid = der::tlv(der::OID, oid);
            let value = der::tlv(der::OCTET_STRING, value);
            if crit {
                der::tlv_of(der::SEQUENCE, &[&oid, &critical, &value])
            } else {
                der::tlv_of(der::SEQUENCE, &[&oid, &value])
            }
        };
        let mut exts = Vec::new();
        // digitalSignature (bit 0) | keyEncipherment (bit 2): 0xa0, 5 unused bits.
        exts.push(ext(
            OID_KEY_USAGE,
            true,
            &der::tlv(der::BIT_STRING, &[5, 0xa0]),
        ));
        exts.push(ext(
            OID_EXT_KEY_USAGE,
            false,
            &der::tlv_of(
                der::SEQUENCE,
                &[
                    &der::tlv(der::OID, OID_SERVER_AUTH),
                    &der::tlv(der::OID, OID_CLIENT_AUTH),
                ],
            ),
        ));
        exts.push(ext(
            OID_BASIC_CONSTRAINTS,
            true,
            &der::tlv(der::SEQUENCE, &[]),
        ));
        if !self.dns_names.is_empty() || !self.uris.is_empty() {
            let mut names = Vec::new();
            for n in &self.dns_names {
                names.extend(der::tlv(0x82, n.as_bytes()));
            }
            for u in &self.uris {
                names.extend(der::tlv(0x86, u.as_bytes()));
            }
            exts.push(ext(OID_SAN, true, &der::tlv(der::SEQUENCE, &names)));
        }
        let exts = der::tlv(0xa3, &der::tlv(der::SEQUENCE, &exts.concat()));
        der::tlv_of(
            der::SEQUENCE,
            &[
                &version,
                &serial,
                &self.signature_algorithm,
                &empty_name,
                &validity,
                &empty_name,
                &self.spki,
                &exts,
            ],
        )
    }

    /// Signs the TBS with `sign` (which returns the raw signature bytes) and
    /// returns the DER certificate.
    pub fn sign_with(&self, sign: impl FnOnce(&[u8]) -> Vec<u8>) -> CertificateDer<'static> {
        let tbs = self.tbs_der();
        let sig = sign(&tbs);
        let sig = der::tlv_of(der::BIT_STRING, &[&[0], &sig]);
        CertificateDer::from(der::tlv_of(
            der::SEQUENCE,
            &[&tbs, &self.signature_algorithm, &sig],
        ))
    }

    /// Signs with the Ed25519 key whose 32-byte secret seed is given.
    pub fn sign_ed25519(&self, seed: &[u8; 32]) -> CertificateDer<'static> {
        let kp = ring::signature::Ed25519KeyPair::from_seed_unchecked(seed);
        match kp {
            Ok(kp) => self.sign_with(|tbs| kp.sign(tbs).as_ref().to_vec()),
            // from_seed_unchecked cannot fail for a 32-byte seed.
            Err(_) => self.sign_with(|_| vec![0; 64]),
        }
    }
}

/// The Ed25519 public key of a 32-byte secret seed.
pub(crate) fn ed25519_public(seed: &[u8; 32]) -> Option<[u8; 32]> {
    use ring::signature::KeyPair;
    let kp = ring::signature::Ed25519KeyPair::from_seed_unchecked(seed).ok()?;
    let mut out = [0u8; 32];
    out.copy_from_slice(kp.public_key().as_ref());
    Some(out)
}

/// An unencrypted PKCS#8 v1 document for an Ed25519 seed (RFC 8410).
pub(crate) fn ed25519_pkcs8(seed: &[u8; 32]) -> Vec<u8> {
    let mut out = vec![
        0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04,
        0x20,
    ];
    out.extend_from_slice(seed);
    out
}

/// The parts of a certificate the verifier looks at.
pub(crate) struct ParsedCert<'a> {
    tbs: &'a [u8],
    tbs_sig_alg: &'a [u8],
    sig_alg: &'a [u8],
    signature: &'a [u8],
    spki_alg: &'a [u8],
    public_key: &'a [u8],
    pub not_before: u64,
    pub not_after: u64,
    pub dns_names: Vec<&'a str>,
    pub uris: Vec<&'a str>,
}

fn bit_string_bytes<'a>(t: &der::Tlv<'a>) -> Result<&'a [u8], String> {
    match t.content.split_first() {
        Some((0, rest)) => Ok(rest),
        _ => Err("bit string with unused bits".into()),
    }
}

/// Parses the certificate fields Mau needs. Structure errors become
/// [`VerifyError::Malformed`].
pub(crate) fn parse(der_bytes: &[u8]) -> Result<ParsedCert<'_>, VerifyError> {
    parse_inner(der_bytes).map_err(VerifyError::Malformed)
}

fn parse_inner(der_bytes: &[u8]) -> Result<ParsedCert<'_>, String> {
    let mut top = Reader::new(der_bytes);
    let cert = top.expect(der::SEQUENCE)?;
    top.finish()?;
    let mut c = Reader::new(cert.content);
    let tbs = c.expect(der::SEQUENCE)?;
    let sig_alg = c.expect(der::SEQUENCE)?;
    let signature = c.expect(der::BIT_STRING)?;
    c.finish()?;

    let mut t = Reader::new(tbs.content);
    if t.peek_tag() == Some(0xa0) {
        let v = t.read()?;
        let mut vr = Reader::new(v.content);
        let n = vr.expect(der::INTEGER)?;
        if n.content != [2] {
            return Err("not an X.509 v3 certificate".into());
        }
    } else {
        return Err("not an X.509 v3 certificate".into());
    }
    let _serial = t.expect(der::INTEGER)?;
    let tbs_sig_alg = t.expect(der::SEQUENCE)?;
    let _issuer = t.expect(der::SEQUENCE)?;
    let validity = t.expect(der::SEQUENCE)?;
    let _subject = t.expect(der::SEQUENCE)?;
    let spki = t.expect(der::SEQUENCE)?;

    let mut v = Reader::new(validity.content);
    let not_before = der::decode_time(&v.read()?)?;
    let not_after = der::decode_time(&v.read()?)?;
    v.finish()?;

    let mut s = Reader::new(spki.content);
    let spki_alg = s.expect(der::SEQUENCE)?;
    let public_key = bit_string_bytes(&s.expect(der::BIT_STRING)?)?;
    s.finish()?;

    let mut dns_names = Vec::new();
    let mut uris = Vec::new();
    // Optional issuerUniqueID [1], subjectUniqueID [2], extensions [3].
    while !t.is_empty() {
        let field = t.read()?;
        if field.tag != 0xa3 {
            continue;
        }
        let mut outer = Reader::new(field.content);
        let exts = outer.expect(der::SEQUENCE)?;
        outer.finish()?;
        let mut er = Reader::new(exts.content);
        while !er.is_empty() {
            let ext = er.expect(der::SEQUENCE)?;
            let mut x = Reader::new(ext.content);
            let oid = x.expect(der::OID)?;
            if x.peek_tag() == Some(der::BOOLEAN) {
                x.read()?;
            }
            let value = x.expect(der::OCTET_STRING)?;
            x.finish()?;
            if oid.content != OID_SAN {
                continue;
            }
            let mut vr = Reader::new(value.content);
            let names = vr.expect(der::SEQUENCE)?;
            vr.finish()?;
            let mut nr = Reader::new(names.content);
            while !nr.is_empty() {
                let name = nr.read()?;
                let text = || {
                    std::str::from_utf8(name.content)
                        .ok()
                        .filter(|s| s.is_ascii())
                        .ok_or_else(|| "SAN is not ASCII".to_string())
                };
                match name.tag {
                    0x82 => dns_names.push(text()?),
                    0x86 => uris.push(text()?),
                    _ => {}
                }
            }
        }
    }
    Ok(ParsedCert {
        tbs: tbs.raw,
        tbs_sig_alg: tbs_sig_alg.raw,
        sig_alg: sig_alg.raw,
        signature: bit_string_bytes(&signature)?,
        spki_alg: spki_alg.raw,
        public_key,
        not_before,
        not_after,
        dns_names,
        uris,
    })
}

/// Who the peer is, as proven by its certificate.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PeerIdentity {
    /// The peer's fingerprint, recomputed from its key.
    pub fingerprint: Fingerprint,
    /// The `host:port` the peer advertises as its listening address (the
    /// first DNS SAN when it is not the fingerprint). Self-asserted: verify
    /// it (e.g. with a pinned connection to it) before trusting it.
    pub address: Option<String>,
}

/// A DNS SAN that claims a v4 fingerprint: 40 hex digits, either case.
fn is_v4_fingerprint_name(name: &str) -> bool {
    name.len() == 40 && name.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Checks a certificate: structure, Ed25519 key, self-signature (through the
/// rustls provider's algorithms, when `algs` is given), that the named
/// fingerprint is the key's, and, when `now` is given, the validity period.
pub(crate) fn verify_certificate(
    der_bytes: &[u8],
    now: Option<u64>,
    algs: Option<&WebPkiSupportedAlgorithms>,
) -> Result<PeerIdentity, VerifyError> {
    let c = parse(der_bytes)?;
    if c.spki_alg != ED25519_ALG_ID || c.sig_alg != ED25519_ALG_ID || c.tbs_sig_alg != c.sig_alg {
        return Err(VerifyError::NotEd25519);
    }
    let public_key: [u8; 32] = c
        .public_key
        .try_into()
        .map_err(|_| VerifyError::Malformed("Ed25519 key is not 32 bytes".into()))?;

    if let Some(algs) = algs {
        let alg = algs
            .all
            .iter()
            .find(|a| {
                a.public_key_alg_id() == alg_id::ED25519 && a.signature_alg_id() == alg_id::ED25519
            })
            .ok_or(VerifyError::NotEd25519)?;
        alg.verify_signature(&public_key, c.tbs, c.signature)
            .map_err(|_| VerifyError::BadSignature)?;
    }

    let mut claim: Option<Fingerprint> = None;
    let mut note = |f: Fingerprint| -> Result<(), VerifyError> {
        match claim {
            None => {
                claim = Some(f);
                Ok(())
            }
            Some(first) if first != f => {
                Err(VerifyError::ConflictingFingerprints { first, second: f })
            }
            Some(_) => Ok(()),
        }
    };
    for name in &c.dns_names {
        if is_v4_fingerprint_name(name) {
            if let Ok(f) = Fingerprint::parse(name) {
                note(f)?;
            }
        }
    }
    for uri in &c.uris {
        if let Some(hex) = uri.strip_prefix(FINGERPRINT_URI_PREFIX) {
            let f = Fingerprint::parse(hex)
                .map_err(|e| VerifyError::Malformed(format!("bad fingerprint URI {uri:?}: {e}")))?;
            note(f)?;
        }
    }
    let claimed = claim.ok_or(VerifyError::NoFingerprint)?;
    let version = if claimed.version() == 6 {
        KeyVersion::V6
    } else {
        KeyVersion::V4
    };
    let created = u32::try_from(c.not_before).map_err(|_| {
        VerifyError::Malformed("NotBefore does not fit an OpenPGP creation time".into())
    })?;
    let actual = derive_fingerprint(version, &public_key, created);
    if actual != claimed {
        return Err(VerifyError::ForgedFingerprint { claimed, actual });
    }

    if let Some(now) = now {
        if now.saturating_add(NOT_BEFORE_SKEW_SECS) < c.not_before {
            return Err(VerifyError::NotYetValid {
                not_before: c.not_before,
                now,
            });
        }
        if now > c.not_after {
            return Err(VerifyError::Expired {
                not_after: c.not_after,
                now,
            });
        }
    }

    let address = c
        .dns_names
        .first()
        .filter(|n| !is_v4_fingerprint_name(n))
        .map(|s| s.to_string());
    Ok(PeerIdentity {
        fingerprint: actual,
        address,
    })
}
