//! OpenPGP accounts and friends, stored as the Go implementation stores them.
//!
//! * `<root>/.mau/account.pgp`: the account's secret key (a transferable
//!   secret key), inside a message symmetrically encrypted with the
//!   passphrase (SKESK + SEIPD, with a literal data packet), which is what
//!   Go's `openpgp.SymmetricallyEncrypt` writes. A transferable secret key
//!   whose secret key material is itself passphrase-protected (as `gpg`
//!   exports it) is also accepted on load.
//! * `<root>/.mau/<fingerprint>.pgp`: a friend's public key, encrypted to the
//!   account's own encryption subkey and signed by the account, as Go writes
//!   it. A plain public key (binary or armored) is accepted on load too.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mau_proto::Fingerprint;
use sequoia_openpgp as openpgp;
use zeroize::Zeroizing;

use openpgp::cert::prelude::*;
use openpgp::crypto::{Password, SessionKey};
use openpgp::packet::{PKESK, SKESK};
use openpgp::parse::stream::{
    DecryptionHelper, DecryptorBuilder, MessageLayer, MessageStructure, VerificationHelper,
};
use openpgp::parse::Parse;
use openpgp::policy::StandardPolicy;
use openpgp::serialize::stream::{Encryptor, LiteralWriter, Message, Signer};
use openpgp::serialize::{Serialize, SerializeInto};
use openpgp::types::{KeyFlags, RevocationStatus, SymmetricAlgorithm};
use openpgp::{Cert, KeyHandle, Profile};

use crate::error::IdentityError;
use crate::fsutil::{self, ACCOUNT_FILE, MAU_DIR};

/// Which OpenPGP key version an account uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum KeyVersion {
    /// v4 key, legacy EdDSA Ed25519 (algorithm 22), 20-byte SHA-1
    /// fingerprint. What the Go implementation makes; the default.
    #[default]
    V4,
    /// v6 key (RFC 9580), Ed25519 (algorithm 27), 32-byte SHA-256 fingerprint.
    V6,
}

/// A Mau account: an OpenPGP key whose Ed25519 primary key is also the TLS key.
#[derive(Clone)]
pub struct Account {
    cert: Cert,
    seed: Seed,
    created: u32,
    fingerprint: Fingerprint,
    version: KeyVersion,
    root: Option<PathBuf>,
}

/// A 32-byte secret that is wiped on drop.
type Seed = Zeroizing<[u8; 32]>;

impl std::fmt::Debug for Account {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Account")
            .field("fingerprint", &self.fingerprint)
            .field("version", &self.version)
            .field("root", &self.root)
            .finish_non_exhaustive()
    }
}

/// A friend: someone whose public key the account holds.
#[derive(Debug, Clone)]
pub struct Friend {
    fingerprint: Fingerprint,
    cert: Cert,
}

impl Friend {
    /// The friend's fingerprint.
    pub fn fingerprint(&self) -> Fingerprint {
        self.fingerprint
    }

    /// The friend's user ids (e.g. `Name <email>`), as stored in the key.
    pub fn user_ids(&self) -> Vec<String> {
        self.cert
            .userids()
            .map(|u| String::from_utf8_lossy(u.userid().value()).into_owned())
            .collect()
    }

    /// The friend's OpenPGP certificate (public key).
    pub fn cert(&self) -> &Cert {
        &self.cert
    }
}

fn policy() -> StandardPolicy<'static> {
    StandardPolicy::new()
}

pub(crate) fn to_mau_fpr(fp: &openpgp::Fingerprint) -> Option<Fingerprint> {
    Fingerprint::from_bytes(fp.as_bytes()).ok()
}

fn account_path(root: &Path) -> PathBuf {
    root.join(MAU_DIR).join(ACCOUNT_FILE)
}

impl Account {
    /// Creates a new account under `root` (`<root>/.mau/account.pgp`), with an
    /// Ed25519 primary key (certification + signing), a Curve25519
    /// encryption subkey and the user id `name <email>`, protected by
    /// `passphrase`. Fails with [`IdentityError::AccountExists`] if there is
    /// one already.
    pub fn create(
        root: impl AsRef<Path>,
        name: &str,
        email: &str,
        passphrase: &str,
        version: KeyVersion,
    ) -> Result<Account, IdentityError> {
        let root = root.as_ref();
        if passphrase.is_empty() {
            return Err(IdentityError::PassphraseRequired);
        }
        let path = account_path(root);
        if path.exists() {
            return Err(IdentityError::AccountExists(path));
        }
        let mut account = Self::generate_in_memory(name, email, version)?;
        account.root = Some(root.to_path_buf());
        match account.write(passphrase, false, |_| Ok(())) {
            Err(IdentityError::Io { source, .. })
                if source.kind() == std::io::ErrorKind::AlreadyExists =>
            {
                return Err(IdentityError::AccountExists(path))
            }
            r => r?,
        }
        tracing::info!(fingerprint = %account.fingerprint, "created account");
        Ok(account)
    }

    /// Generates an account that lives only in memory (no files; friend
    /// operations fail with [`IdentityError::NoDirectory`]). Meant for tests
    /// and simulations.
    pub fn generate_in_memory(
        name: &str,
        email: &str,
        version: KeyVersion,
    ) -> Result<Account, IdentityError> {
        let userid = if email.is_empty() {
            name.to_string()
        } else if name.is_empty() {
            format!("<{email}>")
        } else {
            format!("{name} <{email}>")
        };
        let profile = match version {
            KeyVersion::V4 => Profile::RFC4880,
            KeyVersion::V6 => Profile::RFC9580,
        };
        let (cert, _revocation) = CertBuilder::new()
            .set_cipher_suite(CipherSuite::Cv25519)
            .set_profile(profile)
            .map_err(IdentityError::pgp)?
            .set_primary_key_flags(KeyFlags::empty().set_certification().set_signing())
            .set_validity_period(None)
            .add_userid(userid)
            .add_subkey(
                KeyFlags::empty()
                    .set_transport_encryption()
                    .set_storage_encryption(),
                None,
                None,
            )
            .generate()
            .map_err(IdentityError::pgp)?;
        Self::from_cert(cert, None, None)
    }

    /// Builds an account from a transferable secret key whose primary secret
    /// is unencrypted (or decrypted with `passphrase`).
    fn from_cert(
        cert: Cert,
        passphrase: Option<&str>,
        path: Option<&Path>,
    ) -> Result<Account, IdentityError> {
        let fpr_text = cert.fingerprint().to_hex();
        let unsupported = |reason: &str| IdentityError::UnsupportedKey {
            fingerprint: fpr_text.clone(),
            reason: reason.to_string(),
        };
        let fingerprint =
            to_mau_fpr(&cert.fingerprint()).ok_or_else(|| unsupported("unknown key version"))?;
        let primary = cert.primary_key().key().clone();
        let version = match primary.version() {
            4 => KeyVersion::V4,
            6 => KeyVersion::V6,
            _ => return Err(unsupported("only v4 and v6 keys are supported")),
        };
        use openpgp::crypto::mpi;
        let public: [u8; 32] = match primary.mpis() {
            mpi::PublicKey::EdDSA { curve, q } if *curve == openpgp::types::Curve::Ed25519 => {
                match q.value() {
                    [0x40, rest @ ..] if rest.len() == 32 => {
                        let mut p = [0u8; 32];
                        p.copy_from_slice(rest);
                        p
                    }
                    _ => return Err(unsupported("malformed Ed25519 public key")),
                }
            }
            mpi::PublicKey::Ed25519 { a } => *a,
            _ => return Err(unsupported("the primary key is not Ed25519")),
        };
        let created = primary
            .creation_time()
            .duration_since(UNIX_EPOCH)
            .ok()
            .and_then(|d| u32::try_from(d.as_secs()).ok())
            .ok_or_else(|| unsupported("creation time out of range"))?;
        let secret = primary
            .parts_into_secret()
            .map_err(|_| unsupported("the account key has no secret part"))?;
        let secret = if secret.secret().is_encrypted() {
            let pw = passphrase.ok_or(IdentityError::PassphraseRequired)?;
            secret
                .decrypt_secret(&Password::from(pw))
                .map_err(|_| IdentityError::WrongPassphrase(path.unwrap_or(Path::new("")).into()))?
        } else {
            secret
        };
        let seed = match secret.secret() {
            openpgp::packet::key::SecretKeyMaterial::Unencrypted(u) => u.map(|m| match m {
                mpi::SecretKeyMaterial::EdDSA { scalar } => {
                    let v = scalar.value_padded(32);
                    <[u8; 32]>::try_from(&v[..]).ok()
                }
                mpi::SecretKeyMaterial::Ed25519 { x } => <[u8; 32]>::try_from(&x[..]).ok(),
                _ => None,
            }),
            _ => None,
        }
        .map(Zeroizing::new)
        .ok_or_else(|| unsupported("unusable Ed25519 secret key"))?;
        if crate::cert::ed25519_public(&seed) != Some(public) {
            return Err(IdentityError::CorruptKey {
                path: path.map(Path::to_path_buf),
                reason: "secret and public key do not match".into(),
            });
        }
        if crate::cert::derive_fingerprint(version, &public, created) != fingerprint {
            return Err(unsupported("fingerprint derivation disagrees with the key"));
        }
        Ok(Account {
            cert,
            seed,
            created,
            fingerprint,
            version,
            root: None,
        })
    }

    /// Loads the account under `root`, decrypting it with `passphrase`.
    ///
    /// Errors: [`IdentityError::AccountNotFound`],
    /// [`IdentityError::WrongPassphrase`], [`IdentityError::CorruptKey`],
    /// [`IdentityError::UnsupportedKey`] (e.g. not Ed25519).
    pub fn load(root: impl AsRef<Path>, passphrase: &str) -> Result<Account, IdentityError> {
        let root = root.as_ref();
        let path = account_path(root);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(IdentityError::AccountNotFound(path))
            }
            Err(e) => return Err(IdentityError::io(&path, e)),
        };
        let cert = match Cert::from_bytes(&bytes) {
            // A bare transferable secret key (gpg style).
            Ok(cert) if cert.is_tsk() => {
                let cert = decrypt_all_secrets(cert, passphrase, &path)?;
                let mut a = Self::from_cert(cert, None, Some(&path))?;
                a.root = Some(root.to_path_buf());
                return Ok(a);
            }
            Ok(_) => {
                return Err(IdentityError::CorruptKey {
                    path: Some(path),
                    reason: "the account file holds no secret key".into(),
                })
            }
            Err(_) => decrypt_with_password(&bytes, passphrase, &path)?,
        };
        let mut a = Self::from_cert(cert, None, Some(&path))?;
        a.root = Some(root.to_path_buf());
        tracing::debug!(fingerprint = %a.fingerprint, "loaded account");
        Ok(a)
    }

    /// (Re)writes `<root>/.mau/account.pgp` atomically, encrypted with
    /// `passphrase` (which may differ from the old one).
    pub fn save(&self, passphrase: &str) -> Result<(), IdentityError> {
        self.write(passphrase, true, |_| Ok(()))
    }

    pub(crate) fn write(
        &self,
        passphrase: &str,
        replace: bool,
        before_rename: impl FnOnce(&Path) -> std::io::Result<()>,
    ) -> Result<(), IdentityError> {
        if passphrase.is_empty() {
            return Err(IdentityError::PassphraseRequired);
        }
        let root = self.root.as_ref().ok_or(IdentityError::NoDirectory)?;
        let dir = fsutil::ensure_mau_dir(root)?;
        let bytes = encrypt_with_password(&self.cert, passphrase)?;
        fsutil::write_atomic_hooked(&dir.join(ACCOUNT_FILE), &bytes, replace, before_rename)
    }

    /// The account's fingerprint.
    pub fn fingerprint(&self) -> Fingerprint {
        self.fingerprint
    }

    /// The key version (v4 or v6).
    pub fn version(&self) -> KeyVersion {
        self.version
    }

    /// The primary key's creation time (the TLS certificate's NotBefore).
    pub fn creation_time(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(u64::from(self.created))
    }

    pub(crate) fn creation_unix(&self) -> u32 {
        self.created
    }

    pub(crate) fn ed25519_seed(&self) -> &[u8; 32] {
        &self.seed
    }

    /// The account's user ids.
    pub fn user_ids(&self) -> Vec<String> {
        self.cert
            .userids()
            .map(|u| String::from_utf8_lossy(u.userid().value()).into_owned())
            .collect()
    }

    /// The directory the account lives in (`None` for in-memory accounts).
    pub fn root(&self) -> Option<&Path> {
        self.root.as_deref()
    }

    /// The account's certificate with its secret keys (for signing and
    /// decrypting content).
    pub(crate) fn secret_cert(&self) -> &Cert {
        &self.cert
    }

    /// The account's public key (no secrets), as an OpenPGP certificate.
    pub fn public_cert(&self) -> Cert {
        self.cert.clone().strip_secret_key_material()
    }

    /// The public key, ASCII-armored, for giving to friends.
    pub fn export_public(&self) -> Result<String, IdentityError> {
        let bytes = self.cert.armored().to_vec().map_err(IdentityError::pgp)?;
        String::from_utf8(bytes).map_err(IdentityError::pgp)
    }

    fn mau_dir(&self) -> Result<PathBuf, IdentityError> {
        let root = self.root.as_ref().ok_or(IdentityError::NoDirectory)?;
        Ok(root.join(MAU_DIR))
    }

    /// Adds a friend from an OpenPGP public key (binary or armored). The key
    /// must be well-formed, valid under the standard policy, not expired and
    /// not revoked. Secret parts, if any, are dropped. Stored as
    /// `<root>/.mau/<fingerprint>.pgp` (encrypted to and signed by this
    /// account, as Go stores it); an existing file for the same key is replaced.
    pub fn add_friend(&self, key: &[u8]) -> Result<Friend, IdentityError> {
        let dir = self.mau_dir()?;
        let friend = parse_public_key(key, None)?;
        if friend.fingerprint == self.fingerprint {
            return Err(IdentityError::InvalidOption(
                "cannot befriend the account's own key".into(),
            ));
        }
        let dir = fsutil::ensure_mau_dir(dir.parent().unwrap_or(Path::new(".")))?;
        let bytes = self.encrypt_to_self(&friend.cert)?;
        fsutil::write_atomic(&dir.join(format!("{}.pgp", friend.fingerprint)), &bytes)?;
        tracing::info!(fingerprint = %friend.fingerprint, "added friend");
        Ok(friend)
    }

    /// Adds a friend from a key file (see [`Account::add_friend`]).
    pub fn import_friend_file(&self, path: impl AsRef<Path>) -> Result<Friend, IdentityError> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|e| IdentityError::io(path, e))?;
        self.add_friend(&bytes).map_err(|e| match e {
            IdentityError::CorruptKey { path: None, reason } => IdentityError::CorruptKey {
                path: Some(path.to_path_buf()),
                reason,
            },
            e => e,
        })
    }

    /// The friend with this fingerprint (looked up in `.mau` and, like Go's
    /// sub-keyrings, in its sub-directories).
    pub fn friend(&self, fingerprint: &Fingerprint) -> Result<Friend, IdentityError> {
        let top = self.mau_dir()?.join(format!("{fingerprint}.pgp"));
        if top.is_file() {
            return self.read_friend_file(fingerprint, &top);
        }
        match self
            .friend_files()?
            .into_iter()
            .find(|(f, _)| f == fingerprint)
        {
            Some((_, path)) => self.read_friend_file(fingerprint, &path),
            None => Err(IdentityError::FriendNotFound(*fingerprint)),
        }
    }

    fn read_friend_file(
        &self,
        fingerprint: &Fingerprint,
        path: &Path,
    ) -> Result<Friend, IdentityError> {
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(IdentityError::FriendNotFound(*fingerprint))
            }
            Err(e) => return Err(IdentityError::io(path, e)),
        };
        let friend = self.read_friend(&bytes, path)?;
        if friend.fingerprint != *fingerprint {
            return Err(IdentityError::CorruptKey {
                path: Some(path.to_path_buf()),
                reason: format!("file holds the key of {}", friend.fingerprint),
            });
        }
        Ok(friend)
    }

    fn friend_files(&self) -> Result<Vec<(Fingerprint, PathBuf)>, IdentityError> {
        Self::friend_key_files(self.root.as_ref().ok_or(IdentityError::NoDirectory)?)
    }

    /// Every `<fingerprint>.pgp` in `<root>/.mau` and its sub-directories (Go's
    /// sub-keyrings; hidden directories and temporary files are skipped),
    /// top level first. Reads names only, so it needs no passphrase.
    pub fn friend_key_files(root: &Path) -> Result<Vec<(Fingerprint, PathBuf)>, IdentityError> {
        const MAX_DEPTH: usize = 4;
        let mut out = Vec::new();
        let mut dirs = vec![(root.join(MAU_DIR), 0usize)];
        while let Some((dir, depth)) = dirs.pop() {
            let entries = match std::fs::read_dir(&dir) {
                Ok(e) => e,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(IdentityError::io(&dir, e)),
            };
            let mut subdirs = Vec::new();
            for entry in entries {
                let entry = entry.map_err(|e| IdentityError::io(&dir, e))?;
                let name = entry.file_name();
                let Some(name) = name.to_str() else { continue };
                if name.starts_with('.') {
                    continue;
                }
                let file_type = entry.file_type().map_err(|e| IdentityError::io(&dir, e))?;
                if file_type.is_dir() {
                    if depth < MAX_DEPTH {
                        subdirs.push((entry.path(), depth + 1));
                    }
                    continue;
                }
                let Some(stem) = name.strip_suffix(".pgp") else {
                    continue;
                };
                if !(stem.len() == 40 || stem.len() == 64) {
                    continue;
                }
                if let Ok(fpr) = Fingerprint::parse(stem) {
                    out.push((fpr, entry.path()));
                }
            }
            subdirs.sort();
            dirs.extend(subdirs.into_iter().rev());
        }
        Ok(out)
    }

    /// All friends, sorted by fingerprint, from `.mau` and its
    /// sub-directories (a key found twice is listed once). Fails on the first
    /// unreadable friend file, naming it.
    pub fn friends(&self) -> Result<Vec<Friend>, IdentityError> {
        let mut out: Vec<Friend> = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for (fpr, path) in self.friend_files()? {
            if seen.insert(fpr) {
                out.push(self.read_friend_file(&fpr, &path)?);
            }
        }
        out.sort_by_key(|f| f.fingerprint);
        Ok(out)
    }

    /// Removes a friend's key file(s), in `.mau` and its sub-directories.
    /// [`IdentityError::FriendNotFound`] if there is none.
    pub fn remove_friend(&self, fingerprint: &Fingerprint) -> Result<(), IdentityError> {
        let paths: Vec<PathBuf> = self
            .friend_files()?
            .into_iter()
            .filter(|(f, _)| f == fingerprint)
            .map(|(_, p)| p)
            .collect();
        if paths.is_empty() {
            return Err(IdentityError::FriendNotFound(*fingerprint));
        }
        for path in paths {
            match fsutil::remove_synced(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(IdentityError::io(&path, e)),
            }
        }
        tracing::info!(fingerprint = %fingerprint, "removed friend");
        Ok(())
    }

    /// Serializes `friend` encrypted to this account's encryption subkey(s)
    /// and signed by its primary key.
    fn encrypt_to_self(&self, friend: &Cert) -> Result<Vec<u8>, IdentityError> {
        let p = policy();
        let recipients: Vec<_> = self
            .cert
            .keys()
            .with_policy(&p, None)
            .supported()
            .alive()
            .revoked(false)
            .for_storage_encryption()
            .collect();
        if recipients.is_empty() {
            return Err(IdentityError::UnsupportedKey {
                fingerprint: self.cert.fingerprint().to_hex(),
                reason: "the account has no encryption subkey".into(),
            });
        }
        let signer = self
            .cert
            .primary_key()
            .key()
            .clone()
            .parts_into_secret()
            .and_then(|k| k.into_keypair())
            .map_err(IdentityError::pgp)?;
        let mut plain = Vec::new();
        friend.serialize(&mut plain).map_err(IdentityError::pgp)?;
        let mut sink = Vec::new();
        (|| -> openpgp::Result<()> {
            let message = Message::new(&mut sink);
            let message = Encryptor::for_recipients(message, recipients).build()?;
            let message = Signer::new(message, signer)?.build()?;
            let mut w = LiteralWriter::new(message).build()?;
            w.write_all(&plain)?;
            w.finalize()
        })()
        .map_err(IdentityError::pgp)?;
        Ok(sink)
    }

    /// Reads a friend file: either a plain public key or a message encrypted
    /// to this account (as Go writes it).
    ///
    /// Stored keys are not re-validated (a friend whose key expired since it
    /// was added is still listed); imports are validated.
    fn read_friend(&self, bytes: &[u8], path: &Path) -> Result<Friend, IdentityError> {
        if let Ok(cert) = Cert::from_bytes(bytes) {
            return stored_friend(cert, path);
        }
        let p = policy();
        let helper = SelfHelper {
            account: &self.cert,
            policy: &p,
        };
        let mut plain = Vec::new();
        let corrupt = |e: &dyn std::fmt::Display| IdentityError::CorruptKey {
            path: Some(path.to_path_buf()),
            reason: e.to_string(),
        };
        let mut d = DecryptorBuilder::from_bytes(bytes)
            .and_then(|b| b.with_policy(&p, None, helper))
            .map_err(|e| corrupt(&e))?;
        d.read_to_end(&mut plain).map_err(|e| corrupt(&e))?;
        let cert = Cert::from_bytes(&plain).map_err(|e| corrupt(&e))?;
        stored_friend(cert, path)
    }
}

/// A friend from a stored key file (structure checked, validity not).
fn stored_friend(cert: Cert, path: &Path) -> Result<Friend, IdentityError> {
    let cert = cert.strip_secret_key_material();
    let fingerprint = to_mau_fpr(&cert.fingerprint()).ok_or_else(|| IdentityError::CorruptKey {
        path: Some(path.to_path_buf()),
        reason: "unknown key version".into(),
    })?;
    Ok(Friend { fingerprint, cert })
}

/// Decrypts every passphrase-protected secret key of a transferable secret
/// key (gpg style), so that subkeys are usable too.
fn decrypt_all_secrets(cert: Cert, passphrase: &str, path: &Path) -> Result<Cert, IdentityError> {
    let password = Password::from(passphrase);
    let mut decrypted: Vec<openpgp::Packet> = Vec::new();
    for ka in cert.keys().secret() {
        if !ka.key().secret().is_encrypted() {
            continue;
        }
        let key = ka
            .key()
            .clone()
            .decrypt_secret(&password)
            .map_err(|_| IdentityError::WrongPassphrase(path.to_path_buf()))?;
        decrypted.push(if ka.primary() {
            key.role_into_primary().into()
        } else {
            key.role_into_subordinate().into()
        });
    }
    if decrypted.is_empty() {
        return Ok(cert);
    }
    let (cert, _) = cert.insert_packets(decrypted).map_err(IdentityError::pgp)?;
    Ok(cert)
}

/// Parses and validates a friend's public key.
/// Why bytes that are not a key were given as one, when the first packet
/// says: an encrypted or signed message (an `account.pgp`, a shared file).
fn not_a_key(bytes: &[u8]) -> Option<String> {
    use openpgp::packet::Tag;
    use openpgp::parse::{PacketParser, PacketParserResult};
    let PacketParserResult::Some(pp) = PacketParser::from_bytes(bytes).ok()? else {
        return None;
    };
    let what = match pp.packet.tag() {
        Tag::SKESK => "a passphrase-encrypted OpenPGP message (such as a Mau account.pgp, which holds a secret key)",
        Tag::PKESK | Tag::SEIP | Tag::AED => "an encrypted OpenPGP message",
        Tag::OnePassSig | Tag::Literal | Tag::CompressedData => "a signed OpenPGP message",
        _ => return None,
    };
    Some(format!(
        "this is {what}, not a public key: import the file your friend's `mau export` wrote"
    ))
}

fn parse_public_key(bytes: &[u8], path: Option<&Path>) -> Result<Friend, IdentityError> {
    let cert = Cert::from_bytes(bytes).map_err(|e| IdentityError::CorruptKey {
        path: path.map(Path::to_path_buf),
        reason: not_a_key(bytes).unwrap_or_else(|| e.to_string()),
    })?;
    let cert = cert.strip_secret_key_material();
    let fpr_text = cert.fingerprint().to_hex();
    let p = policy();
    if let RevocationStatus::Revoked(_) = cert.revocation_status(&p, None) {
        return Err(IdentityError::KeyRevoked(fpr_text));
    }
    let vc = cert
        .with_policy(&p, None)
        .map_err(|e| IdentityError::InvalidKey {
            fingerprint: fpr_text.clone(),
            reason: e.to_string(),
        })?;
    if vc.alive().is_err() {
        return Err(IdentityError::KeyExpired(fpr_text));
    }
    let fingerprint =
        to_mau_fpr(&cert.fingerprint()).ok_or_else(|| IdentityError::UnsupportedKey {
            fingerprint: fpr_text.clone(),
            reason: "unknown key version".into(),
        })?;
    Ok(Friend { fingerprint, cert })
}

pub(crate) fn encrypt_with_password(
    cert: &Cert,
    passphrase: &str,
) -> Result<Vec<u8>, IdentityError> {
    let mut tsk = Zeroizing::new(Vec::new());
    cert.as_tsk()
        .serialize(&mut *tsk)
        .map_err(IdentityError::pgp)?;
    let mut sink = Vec::new();
    (|| -> openpgp::Result<()> {
        let message = Message::new(&mut sink);
        let message =
            Encryptor::with_passwords(message, Some(Password::from(passphrase))).build()?;
        let mut w = LiteralWriter::new(message).build()?;
        w.write_all(&tsk)?;
        w.finalize()
    })()
    .map_err(IdentityError::pgp)?;
    Ok(sink)
}

fn decrypt_with_password(
    bytes: &[u8],
    passphrase: &str,
    path: &Path,
) -> Result<Cert, IdentityError> {
    let p = policy();
    let helper = PasswordHelper {
        password: Password::from(passphrase),
        wrong: false,
    };
    let corrupt = |e: &dyn std::fmt::Display| IdentityError::CorruptKey {
        path: Some(path.to_path_buf()),
        reason: e.to_string(),
    };
    let mut d =
        match DecryptorBuilder::from_bytes(bytes).and_then(|b| b.with_policy(&p, None, helper)) {
            Ok(d) => d,
            Err(e) => {
                if e.downcast_ref::<openpgp::Error>() == Some(&openpgp::Error::InvalidPassword) {
                    return Err(IdentityError::WrongPassphrase(path.to_path_buf()));
                }
                return Err(corrupt(&e));
            }
        };
    let mut plain = Zeroizing::new(Vec::new());
    d.read_to_end(&mut plain).map_err(|e| corrupt(&e))?;
    if d.helper_ref().wrong {
        return Err(IdentityError::WrongPassphrase(path.to_path_buf()));
    }
    let cert = Cert::from_bytes(&plain[..]).map_err(|e| corrupt(&e))?;
    if !cert.is_tsk() {
        return Err(corrupt(&"the account file holds no secret key"));
    }
    Ok(cert)
}

struct PasswordHelper {
    password: Password,
    wrong: bool,
}

impl VerificationHelper for PasswordHelper {
    fn get_certs(&mut self, _ids: &[KeyHandle]) -> openpgp::Result<Vec<Cert>> {
        Ok(Vec::new())
    }
    fn check(&mut self, _structure: MessageStructure) -> openpgp::Result<()> {
        Ok(())
    }
}

impl DecryptionHelper for PasswordHelper {
    fn decrypt(
        &mut self,
        _pkesks: &[PKESK],
        skesks: &[SKESK],
        _sym_algo: Option<SymmetricAlgorithm>,
        decrypt: &mut dyn FnMut(Option<SymmetricAlgorithm>, &SessionKey) -> bool,
    ) -> openpgp::Result<Option<Cert>> {
        for skesk in skesks {
            if let Ok((algo, sk)) = skesk.decrypt(&self.password) {
                if decrypt(algo, &sk) {
                    return Ok(None);
                }
            }
        }
        self.wrong = true;
        Err(openpgp::Error::InvalidPassword.into())
    }
}

/// Decrypts friend files with the account's own keys and requires a good
/// signature by the account.
struct SelfHelper<'a> {
    account: &'a Cert,
    policy: &'a StandardPolicy<'a>,
}

impl VerificationHelper for SelfHelper<'_> {
    fn get_certs(&mut self, _ids: &[KeyHandle]) -> openpgp::Result<Vec<Cert>> {
        Ok(vec![self.account.clone()])
    }
    fn check(&mut self, structure: MessageStructure) -> openpgp::Result<()> {
        for layer in structure {
            if let MessageLayer::SignatureGroup { results } = layer {
                if results.iter().any(|r| r.is_ok()) {
                    return Ok(());
                }
            }
        }
        Err(anyhow_msg("friend file is not signed by the account").into())
    }
}

fn anyhow_msg(msg: &str) -> openpgp::Error {
    openpgp::Error::InvalidOperation(msg.to_string())
}

impl DecryptionHelper for SelfHelper<'_> {
    fn decrypt(
        &mut self,
        pkesks: &[PKESK],
        _skesks: &[SKESK],
        sym_algo: Option<SymmetricAlgorithm>,
        decrypt: &mut dyn FnMut(Option<SymmetricAlgorithm>, &SessionKey) -> bool,
    ) -> openpgp::Result<Option<Cert>> {
        let keys: Vec<_> = self
            .account
            .keys()
            .with_policy(self.policy, None)
            .for_storage_encryption()
            .secret()
            .collect();
        for pkesk in pkesks {
            for key in &keys {
                let Ok(mut pair) = key.key().clone().into_keypair() else {
                    continue;
                };
                if pkesk
                    .decrypt(&mut pair, sym_algo)
                    .map(|(algo, sk)| decrypt(algo, &sk))
                    .unwrap_or(false)
                {
                    return Ok(Some(self.account.clone()));
                }
            }
        }
        Err(anyhow_msg("friend file is not encrypted to this account").into())
    }
}
