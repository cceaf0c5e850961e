//! Typed errors: [`IdentityError`] for accounts, files and configuration,
//! [`VerifyError`] for why a peer's certificate was refused.

use std::path::PathBuf;
use std::sync::Arc;

use mau_proto::Fingerprint;

/// Why a peer's TLS certificate (or the lack of one) was refused.
///
/// The verifier reports these to rustls wrapped in
/// `rustls::Error::InvalidCertificate(CertificateError::Other(..))`;
/// [`VerifyError::from_tls_error`] recovers them from a failed connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// The client sent no certificate, but the server requires one.
    #[error("the peer presented no client certificate")]
    NoClientCertificate,
    /// The certificate is not valid DER / X.509 in the shape Mau uses.
    #[error("malformed certificate: {0}")]
    Malformed(String),
    /// The certificate's key is not Ed25519 (or its algorithms disagree).
    #[error("unsupported certificate key or signature algorithm (only Ed25519 is accepted)")]
    NotEd25519,
    /// The certificate names no fingerprint (neither a 40-hex DNS SAN nor a
    /// `mau:fingerprint:` URI SAN).
    #[error("the certificate names no fingerprint")]
    NoFingerprint,
    /// The certificate names different fingerprints in different places.
    #[error("the certificate names conflicting fingerprints {first} and {second}")]
    ConflictingFingerprints {
        /// The first claim.
        first: Fingerprint,
        /// A later claim that differs from it.
        second: Fingerprint,
    },
    /// The fingerprint named in the certificate is not the one computed from
    /// its public key and NotBefore: the name is forged.
    #[error(
        "forged certificate: it claims fingerprint {claimed} but its key has fingerprint {actual}"
    )]
    ForgedFingerprint {
        /// What the certificate's name says.
        claimed: Fingerprint,
        /// What its key really is.
        actual: Fingerprint,
    },
    /// The certificate is genuine but belongs to another peer than the one
    /// the client pinned.
    #[error("wrong peer: expected fingerprint {expected}, got {found}")]
    WrongFingerprint {
        /// The pinned fingerprint.
        expected: Fingerprint,
        /// The authenticated fingerprint of the peer.
        found: Fingerprint,
    },
    /// The certificate's NotAfter is in the past.
    #[error("certificate expired at unix time {not_after} (now {now})")]
    Expired {
        /// NotAfter, seconds since the Unix epoch.
        not_after: u64,
        /// The handshake time.
        now: u64,
    },
    /// The certificate's NotBefore is in the future (by more than
    /// [`crate::NOT_BEFORE_SKEW_SECS`]).
    #[error("certificate not valid before unix time {not_before} (now {now})")]
    NotYetValid {
        /// NotBefore, seconds since the Unix epoch.
        not_before: u64,
        /// The handshake time.
        now: u64,
    },
    /// The certificate's self-signature does not verify.
    #[error("bad certificate self-signature")]
    BadSignature,
}

impl VerifyError {
    /// Extracts the reason a TLS connection failed because of Mau's
    /// verification, if that is why it failed.
    ///
    /// Maps rustls's own `NoCertificatesPresented` (a client that sent no
    /// certificate to a server that requires one) to
    /// [`VerifyError::NoClientCertificate`].
    pub fn from_tls_error(err: &rustls::Error) -> Option<VerifyError> {
        match err {
            rustls::Error::NoCertificatesPresented => Some(VerifyError::NoClientCertificate),
            rustls::Error::InvalidCertificate(rustls::CertificateError::Other(other)) => {
                other.0.downcast_ref::<VerifyError>().cloned()
            }
            _ => None,
        }
    }

    /// Wraps this reason in the rustls error the verifier returns.
    pub(crate) fn into_tls_error(self) -> rustls::Error {
        if self == VerifyError::NoClientCertificate {
            return rustls::Error::NoCertificatesPresented;
        }
        rustls::Error::InvalidCertificate(rustls::CertificateError::Other(rustls::OtherError(
            Arc::new(self),
        )))
    }
}

/// Everything that can go wrong with accounts, friends and TLS identities.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// There is no account file where one was expected.
    #[error("no account at {0}")]
    AccountNotFound(PathBuf),
    /// `create` would overwrite an existing account.
    #[error("an account already exists at {0}")]
    AccountExists(PathBuf),
    /// The passphrase does not decrypt the account.
    #[error("wrong passphrase for {0}")]
    WrongPassphrase(PathBuf),
    /// An empty passphrase was given where one is required.
    #[error("a passphrase is required")]
    PassphraseRequired,
    /// A key file (or key bytes) could not be parsed as an OpenPGP key.
    #[error("corrupt or malformed key{}: {reason}", path_suffix(.path))]
    CorruptKey {
        /// The file, when the key came from one.
        path: Option<PathBuf>,
        /// What the parser said.
        reason: String,
    },
    /// The key is well-formed but of a kind Mau cannot use (e.g. the account's
    /// primary key is not Ed25519, or the key has no secret part).
    #[error("unsupported key {fingerprint}: {reason}")]
    UnsupportedKey {
        /// The key's fingerprint as sequoia prints it.
        fingerprint: String,
        /// Why it is unsupported.
        reason: String,
    },
    /// The key has expired.
    #[error("key {0} has expired")]
    KeyExpired(String),
    /// The key has been revoked.
    #[error("key {0} has been revoked")]
    KeyRevoked(String),
    /// The key is not valid under the standard policy (bad or missing
    /// self-signatures, weak algorithms).
    #[error("key {fingerprint} is not valid: {reason}")]
    InvalidKey {
        /// The key's fingerprint as sequoia prints it.
        fingerprint: String,
        /// What the policy check said.
        reason: String,
    },
    /// A friend operation named a fingerprint that is not a friend.
    #[error("{0} is not a friend")]
    FriendNotFound(Fingerprint),
    /// The account was made in memory and has no directory for friends.
    #[error("this account has no directory (made in memory)")]
    NoDirectory,
    /// A file system operation failed.
    #[error("I/O error on {path}: {source}")]
    Io {
        /// The file or directory concerned.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// An OpenPGP operation failed unexpectedly.
    #[error("OpenPGP error: {0}")]
    OpenPgp(String),
    /// A certificate option was invalid (e.g. an address that cannot be a SAN).
    #[error("invalid certificate option: {0}")]
    InvalidOption(String),
    /// rustls refused a configuration.
    #[error("TLS configuration error: {0}")]
    Tls(#[from] rustls::Error),
    /// The TLS handshake has not completed, so there is no peer identity yet.
    #[error("the TLS handshake has not completed")]
    HandshakeIncomplete,
    /// A peer's certificate failed verification.
    #[error(transparent)]
    Verify(#[from] VerifyError),
}

fn path_suffix(path: &Option<PathBuf>) -> String {
    match path {
        Some(p) => format!(" in {}", p.display()),
        None => String::new(),
    }
}

impl IdentityError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        IdentityError::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn pgp(e: impl std::fmt::Display) -> Self {
        IdentityError::OpenPgp(e.to_string())
    }
}
