//! Mau identities.
//!
//! * [`Account`]: an OpenPGP key (Ed25519 primary, v4 by default or v6),
//!   stored passphrase-protected as `<root>/.mau/account.pgp`, with friends'
//!   public keys as `<root>/.mau/<fingerprint>.pgp` (the Go implementation's
//!   layout). Writes are atomic and owner-only.
//! * [`StateDir`]: where mau-rs keeps its own state (`<root>/.mau-rs/`, out
//!   of the Go peer's way) and the migration out of `.mau/`.
//! * [`TlsIdentity`]: a self-signed X.509 certificate whose key *is* the PGP
//!   primary key, for mutual TLS 1.3 between peers.
//! * [`MauVerifier`], [`server_config`], [`client_config`], [`peer_identity`]:
//!   rustls plumbing that binds the fingerprint named in a certificate to the
//!   certificate's key (see [`cert`] for where the fingerprint lives and how
//!   the binding works). A peer cannot claim someone else's fingerprint.
//!
//! The crate reads and writes files but has no async runtime and no sockets.

#![warn(missing_docs)]
#![forbid(unsafe_code)]

mod account;
#[cfg(test)]
mod account_tests;
pub mod cert;
pub mod content;
mod der;
mod error;
mod fsutil;
mod pem;
pub mod state_dir;
mod tls;

pub use account::{Account, Friend, KeyVersion};
pub use cert::{
    derive_fingerprint, CertTemplate, PeerIdentity, FINGERPRINT_URI_PREFIX, NOT_BEFORE_SKEW_SECS,
};
pub use content::ContentError;
pub use error::{IdentityError, VerifyError};
pub use fsutil::{
    create_private_dir, ensure_mau_dir, sync_dir, write_atomic, ACCOUNT_FILE, MAU_DIR,
};
pub use mau_proto::Fingerprint;
pub use state_dir::{StateDir, STATE_DIR};
pub use tls::{
    client_config, install_provider, peer_identity, provider, server_config, server_name,
    MauVerifier, TlsIdentity, DUMMY_SERVER_NAME,
};

/// The OpenPGP implementation used here (sequoia), re-exported so callers can
/// name its types (e.g. [`Friend::cert`]).
pub use sequoia_openpgp as openpgp;
