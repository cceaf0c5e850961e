//! Mutual TLS with PGP-derived certificates: the identity, the verifier and
//! ready-made rustls configurations (TLS 1.3 only, Ed25519 only, ring).

use std::sync::{Arc, OnceLock};

use mau_proto::Fingerprint;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::sign::{CertifiedKey, SingleCertAndKey};
use rustls::{CommonState, DigitallySignedStruct, DistinguishedName, SignatureScheme};

use crate::cert::{self, CertTemplate, PeerIdentity};
use crate::error::{IdentityError, VerifyError};
use crate::{Account, KeyVersion};

/// The server name a client puts in its ClientHello. Mau peers are
/// identified by fingerprint, not by name, so this is a fixed dummy (in the
/// reserved `.invalid` TLD) and the verifier ignores it.
pub const DUMMY_SERVER_NAME: &str = "mau.invalid";

/// The dummy [`ServerName`] to use with [`rustls::ClientConnection::new`].
pub fn server_name() -> ServerName<'static> {
    ServerName::DnsName(
        rustls::pki_types::DnsName::try_from(DUMMY_SERVER_NAME)
            .expect("constant is a valid DNS name")
            .to_owned(),
    )
}

/// A provider installed with [`install_provider`], if any.
static INSTALLED: OnceLock<Arc<CryptoProvider>> = OnceLock::new();

/// The crypto provider: the one [`install_provider`] installed, else
/// rustls's ring provider, shared.
pub fn provider() -> Arc<CryptoProvider> {
    static RING: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    INSTALLED
        .get()
        .unwrap_or_else(|| RING.get_or_init(|| Arc::new(rustls::crypto::ring::default_provider())))
        .clone()
}

/// Makes `provider` the one every configuration built from now on uses, for
/// the rest of the process; only the first call installs. Returns the
/// provider in place afterwards (compare with [`Arc::ptr_eq`]).
///
/// For a simulation whose TLS randomness follows its seed (`mau-simrt`);
/// the provider must offer TLS 1.3 and Ed25519 signatures.
pub fn install_provider(provider: Arc<CryptoProvider>) -> Arc<CryptoProvider> {
    INSTALLED.get_or_init(|| provider).clone()
}

/// A TLS certificate and key derived from an Ed25519 PGP primary key.
#[derive(Clone)]
pub struct TlsIdentity {
    fingerprint: Fingerprint,
    address: Option<String>,
    cert: CertificateDer<'static>,
    key: Arc<CertifiedKey>,
}

impl std::fmt::Debug for TlsIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsIdentity")
            .field("fingerprint", &self.fingerprint)
            .field("address", &self.address)
            .finish_non_exhaustive()
    }
}

impl TlsIdentity {
    /// Derives the TLS identity of an account. `address` is the `host:port`
    /// this peer advertises (the first DNS SAN, as in the Go implementation).
    pub fn from_account(account: &Account, address: Option<&str>) -> Result<Self, IdentityError> {
        Self::from_ed25519_seed(
            account.ed25519_seed(),
            account.creation_unix(),
            account.version(),
            address,
        )
    }

    /// Derives a TLS identity straight from an Ed25519 seed and a PGP creation
    /// time, without an OpenPGP key (handy for tests and simulations).
    pub fn from_ed25519_seed(
        seed: &[u8; 32],
        created: u32,
        version: KeyVersion,
        address: Option<&str>,
    ) -> Result<Self, IdentityError> {
        if let Some(a) = address {
            if a.is_empty() || !a.is_ascii() || a.bytes().any(|b| b.is_ascii_control() || b == b' ')
            {
                return Err(IdentityError::InvalidOption(format!(
                    "address {a:?} is not a printable ASCII host:port"
                )));
            }
            if a.len() == 40 && a.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(IdentityError::InvalidOption(format!(
                    "address {a:?} would read as a fingerprint"
                )));
            }
        }
        let public = cert::ed25519_public(seed)
            .ok_or_else(|| IdentityError::InvalidOption("bad Ed25519 seed".into()))?;
        let fingerprint = cert::derive_fingerprint(version, &public, created);
        let mut template = CertTemplate::ed25519(&public, u64::from(created));
        let (dns, uris) = cert::fingerprint_sans(&fingerprint);
        template.dns_names.extend(address.map(str::to_string));
        template.dns_names.extend(dns);
        template.uris = uris;
        let cert_der = template.sign_ed25519(seed);
        let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(cert::ed25519_pkcs8(seed)));
        let signing = provider().key_provider.load_private_key(key_der)?;
        let key = Arc::new(CertifiedKey::new(vec![cert_der.clone()], signing));
        Ok(TlsIdentity {
            fingerprint,
            address: address.map(str::to_string),
            cert: cert_der,
            key,
        })
    }

    /// Replaces the certificate while keeping the signing key and the
    /// reported fingerprint and address. For tests that present hostile or
    /// broken certificates (forged names, other key types, expired ones);
    /// never needed otherwise.
    pub fn dangerous_with_certificate(&self, cert: CertificateDer<'static>) -> TlsIdentity {
        TlsIdentity {
            fingerprint: self.fingerprint,
            address: self.address.clone(),
            cert: cert.clone(),
            key: Arc::new(CertifiedKey::new(vec![cert], self.key.key.clone())),
        }
    }

    /// The fingerprint this identity presents (and proves).
    pub fn fingerprint(&self) -> Fingerprint {
        self.fingerprint
    }

    /// The advertised address, if any.
    pub fn address(&self) -> Option<&str> {
        self.address.as_deref()
    }

    /// The DER certificate.
    pub fn certificate(&self) -> &CertificateDer<'static> {
        &self.cert
    }

    /// The certificate and rustls signing key.
    pub fn certified_key(&self) -> Arc<CertifiedKey> {
        self.key.clone()
    }
}

/// The Mau certificate verifier, for both sides of a connection.
///
/// * As a [`ServerCertVerifier`] (client side) it pins the fingerprint the
///   client expects to reach.
/// * As a [`ClientCertVerifier`] (server side) it requires a client
///   certificate and accepts any peer whose certificate is bound to its key;
///   read who it was with [`peer_identity`].
///
/// Both check: Ed25519 key, the self-signature, that the fingerprint named in
/// the certificate is the one of its key (see [`crate::cert`]), and the
/// validity period at the handshake's time. Handshake signatures are checked
/// with the crypto provider (`verify_tls13_signature`). Refusals carry a
/// [`VerifyError`] (see [`VerifyError::from_tls_error`]).
#[derive(Debug, Clone)]
pub struct MauVerifier {
    expected: Option<Fingerprint>,
    algs: WebPkiSupportedAlgorithms,
}

impl MauVerifier {
    /// A verifier that accepts any well-bound peer (server side).
    pub fn any_peer() -> Self {
        MauVerifier {
            expected: None,
            algs: provider().signature_verification_algorithms,
        }
    }

    /// A verifier that accepts only the peer with this fingerprint (client side).
    pub fn pinned(expected: Fingerprint) -> Self {
        MauVerifier {
            expected: Some(expected),
            algs: provider().signature_verification_algorithms,
        }
    }

    /// Verifies one end-entity certificate as the handshake does, at `now`
    /// (seconds since the Unix epoch).
    pub fn verify_certificate(
        &self,
        cert: &CertificateDer<'_>,
        now: u64,
    ) -> Result<PeerIdentity, VerifyError> {
        let id = cert::verify_certificate(cert.as_ref(), Some(now), Some(&self.algs))?;
        if let Some(expected) = self.expected {
            if expected != id.fingerprint {
                return Err(VerifyError::WrongFingerprint {
                    expected,
                    found: id.fingerprint,
                });
            }
        }
        Ok(id)
    }

    fn check(&self, cert: &CertificateDer<'_>, now: UnixTime) -> Result<(), rustls::Error> {
        match self.verify_certificate(cert, now.as_secs()) {
            Ok(id) => {
                tracing::debug!(fingerprint = %id.fingerprint, "peer certificate verified");
                Ok(())
            }
            Err(e) => {
                tracing::debug!(error = %e, "peer certificate refused");
                Err(e.into_tls_error())
            }
        }
    }

    fn tls13(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algs)
    }
}

impl ServerCertVerifier for MauVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.check(end_entity, now)?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::PeerIncompatible(
            rustls::PeerIncompatible::Tls13RequiredForQuic,
        ))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.tls13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![SignatureScheme::ED25519]
    }
}

impl ClientCertVerifier for MauVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.check(end_entity, now)?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::PeerIncompatible(
            rustls::PeerIncompatible::Tls13RequiredForQuic,
        ))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.tls13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![SignatureScheme::ED25519]
    }
}

/// A server configuration: TLS 1.3 only, presents `identity`, requires and
/// verifies a client certificate with [`MauVerifier::any_peer`]. Session
/// resumption is off, so every connection proves its certificate afresh.
///
/// To change a setting (e.g. `alpn_protocols`), clone the config:
/// `let mut c = (*server_config(&id)?).clone();`.
pub fn server_config(identity: &TlsIdentity) -> Result<Arc<rustls::ServerConfig>, IdentityError> {
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(Arc::new(MauVerifier::any_peer()))
        .with_cert_resolver(Arc::new(SingleCertAndKey::from(identity.certified_key())));
    config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
    Ok(Arc::new(config))
}

/// A client configuration: TLS 1.3 only, presents `identity` as client
/// certificate and accepts only the server whose fingerprint is `expected`.
/// Use it with [`server_name`]. Session resumption is off. Clone it to
/// change settings, as with [`server_config`].
pub fn client_config(
    identity: &TlsIdentity,
    expected: Fingerprint,
) -> Result<Arc<rustls::ClientConfig>, IdentityError> {
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(MauVerifier::pinned(expected)))
        .with_client_cert_resolver(Arc::new(SingleCertAndKey::from(identity.certified_key())));
    config.resumption = rustls::client::Resumption::disabled();
    Ok(Arc::new(config))
}

/// The authenticated identity of the peer of a connection whose handshake
/// has completed (client or server side: pass `&conn`, it derefs to
/// [`CommonState`]).
///
/// Re-reads the end-entity certificate the verifier accepted and recomputes
/// the fingerprint from its key. The signature and time checks are not
/// repeated: rustls exposes peer certificates only once the handshake,
/// with [`MauVerifier`], has accepted them (and resumption, which would skip
/// the verifier, is off in [`server_config`] and [`client_config`]). Use it
/// only on connections made with those configurations (or another that uses
/// [`MauVerifier`]).
pub fn peer_identity(conn: &CommonState) -> Result<PeerIdentity, IdentityError> {
    if conn.is_handshaking() {
        return Err(IdentityError::HandshakeIncomplete);
    }
    let cert = conn
        .peer_certificates()
        .and_then(|c| c.first())
        .ok_or(VerifyError::NoClientCertificate)?;
    Ok(cert::verify_certificate(cert.as_ref(), None, None)?)
}
