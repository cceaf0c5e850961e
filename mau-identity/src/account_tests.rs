//! Account and friend tests (unit tests: they reach the crash hook).

use std::path::Path;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use sequoia_openpgp as openpgp;

use openpgp::cert::prelude::*;
use openpgp::parse::Parse;
use openpgp::serialize::SerializeInto;

use crate::account::encrypt_with_password;
use crate::{Account, IdentityError, KeyVersion, ACCOUNT_FILE, MAU_DIR};

const PASS: &str = "correct horse battery staple";

/// Friends' keys, made once (key generation is the slow part of these tests).
fn friend_key(i: usize) -> &'static Cert {
    static KEYS: OnceLock<Vec<Cert>> = OnceLock::new();
    &KEYS.get_or_init(|| {
        (0..2)
            .map(|i| {
                CertBuilder::general_purpose(Some(format!("Friend {i} <f{i}@example.org>")))
                    .set_validity_period(None)
                    .generate()
                    .expect("generate")
                    .0
            })
            .collect()
    })[i]
}

fn account_file(root: &Path) -> std::path::PathBuf {
    root.join(MAU_DIR).join(ACCOUNT_FILE)
}

#[test]
fn create_save_load_round_trip_v4_and_v6() {
    for version in [KeyVersion::V4, KeyVersion::V6] {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = Account::create(dir.path(), "Alice", "alice@example.org", PASS, version)
            .expect("create");
        assert_eq!(a.version(), version);
        assert_eq!(a.user_ids(), vec!["Alice <alice@example.org>".to_string()]);
        let b = Account::load(dir.path(), PASS).expect("load");
        assert_eq!(a.fingerprint(), b.fingerprint());
        assert_eq!(a.creation_time(), b.creation_time());
        assert_eq!(a.ed25519_seed(), b.ed25519_seed());
        assert_eq!(b.root(), Some(dir.path()));
        // The fingerprint length follows the version.
        assert_eq!(
            a.fingerprint().version(),
            if version == KeyVersion::V4 { 4 } else { 6 }
        );
        // A second create refuses to overwrite.
        assert!(matches!(
            Account::create(dir.path(), "Mallory", "", PASS, version),
            Err(IdentityError::AccountExists(_))
        ));
    }
}

#[cfg(unix)]
#[test]
fn files_are_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let a = Account::create(dir.path(), "Alice", "a@example.org", PASS, KeyVersion::V4)
        .expect("create");
    let mode = |p: &Path| std::fs::metadata(p).expect("meta").permissions().mode() & 0o777;
    assert_eq!(mode(&dir.path().join(MAU_DIR)), 0o700);
    assert_eq!(mode(&account_file(dir.path())), 0o600);
    let f = a
        .add_friend(&friend_key(0).armored().to_vec().expect("armor"))
        .expect("add");
    assert_eq!(
        mode(
            &dir.path()
                .join(MAU_DIR)
                .join(format!("{}.pgp", f.fingerprint()))
        ),
        0o600
    );
}

#[test]
fn load_errors_are_distinct() {
    let dir = tempfile::tempdir().expect("tempdir");
    assert!(matches!(
        Account::load(dir.path(), PASS),
        Err(IdentityError::AccountNotFound(_))
    ));
    Account::create(dir.path(), "Alice", "a@example.org", PASS, KeyVersion::V4).expect("create");
    assert!(matches!(
        Account::load(dir.path(), "wrong"),
        Err(IdentityError::WrongPassphrase(_))
    ));
    assert!(matches!(
        Account::create(dir.path().join("x"), "A", "a@b", "", KeyVersion::V4),
        Err(IdentityError::PassphraseRequired)
    ));

    // Corrupt: garbage, and a truncated file.
    let path = account_file(dir.path());
    let good = std::fs::read(&path).expect("read");
    std::fs::write(&path, b"this is not OpenPGP").expect("write");
    assert!(matches!(
        Account::load(dir.path(), PASS),
        Err(IdentityError::CorruptKey { .. })
    ));
    std::fs::write(&path, &good[..good.len() / 2]).expect("write");
    let err = Account::load(dir.path(), PASS).expect_err("truncated");
    assert!(
        matches!(err, IdentityError::CorruptKey { .. }),
        "truncated file: {err:?}"
    );

    // Unsupported: a valid account file whose primary key is not Ed25519.
    let (p256, _) = CertBuilder::new()
        .set_cipher_suite(CipherSuite::P256)
        .add_userid("P256 <p@example.org>")
        .generate()
        .expect("generate");
    std::fs::write(&path, encrypt_with_password(&p256, PASS).expect("encrypt")).expect("write");
    assert!(matches!(
        Account::load(dir.path(), PASS),
        Err(IdentityError::UnsupportedKey { .. })
    ));
}

#[test]
fn gpg_style_protected_secret_key_loads() {
    // A bare transferable secret key whose secret is passphrase-protected.
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert, _) = CertBuilder::new()
        .set_cipher_suite(CipherSuite::Cv25519)
        .set_primary_key_flags(
            openpgp::types::KeyFlags::empty()
                .set_certification()
                .set_signing(),
        )
        .add_storage_encryption_subkey()
        .add_userid("gpg <g@example.org>")
        .set_password(Some(PASS.into()))
        .generate()
        .expect("generate");
    crate::fsutil::ensure_mau_dir(dir.path()).expect("dir");
    std::fs::write(
        account_file(dir.path()),
        cert.as_tsk().to_vec().expect("serialize"),
    )
    .expect("write");
    let a = Account::load(dir.path(), PASS).expect("load");
    assert_eq!(
        a.fingerprint().to_string(),
        cert.fingerprint().to_hex().to_lowercase()
    );
    // The encryption subkey was decrypted too: friends can be stored and read.
    let f = a
        .add_friend(&friend_key(0).to_vec().expect("serialize"))
        .expect("add friend");
    assert_eq!(a.friends().expect("list")[0].fingerprint(), f.fingerprint());
    assert!(matches!(
        Account::load(dir.path(), "nope"),
        Err(IdentityError::WrongPassphrase(_))
    ));
}

#[test]
fn interrupted_save_keeps_the_old_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = Account::create(dir.path(), "Alice", "a@example.org", PASS, KeyVersion::V4)
        .expect("create");
    let before = std::fs::read(account_file(dir.path())).expect("read");
    // Fail after the temporary file is written and synced, before the rename.
    let err = a
        .write("new passphrase", true, |tmp| {
            assert!(tmp.exists());
            Err(std::io::Error::other("simulated crash"))
        })
        .expect_err("interrupted");
    assert!(matches!(err, IdentityError::Io { .. }));
    assert_eq!(
        std::fs::read(account_file(dir.path())).expect("read"),
        before
    );
    // A crash leaves a stray temporary file: it must not disturb anything.
    std::fs::write(
        dir.path().join(MAU_DIR).join(".account.pgp.tmp.1.0"),
        b"half-written",
    )
    .expect("write");
    let b = Account::load(dir.path(), PASS).expect("old passphrase still works");
    assert_eq!(a.fingerprint(), b.fingerprint());
    assert!(b.friends().expect("friends").is_empty());
    // A completed save switches to the new passphrase.
    a.save("new passphrase").expect("save");
    assert!(Account::load(dir.path(), "new passphrase").is_ok());
    assert!(matches!(
        Account::load(dir.path(), PASS),
        Err(IdentityError::WrongPassphrase(_))
    ));
}

#[test]
fn friends_add_list_remove() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = Account::create(dir.path(), "Alice", "a@example.org", PASS, KeyVersion::V4)
        .expect("create");
    assert!(a.friends().expect("list").is_empty());

    // Armored, from a file.
    let key_file = dir.path().join("friend0.asc");
    std::fs::write(&key_file, friend_key(0).armored().to_vec().expect("armor")).expect("write");
    let f0 = a.import_friend_file(&key_file).expect("import");
    // Binary, with secret parts (they are dropped).
    let f1 = a
        .add_friend(&friend_key(1).as_tsk().to_vec().expect("tsk"))
        .expect("add");
    assert!(!f1.cert().is_tsk());
    assert_eq!(
        f0.fingerprint().to_string(),
        friend_key(0).fingerprint().to_hex().to_lowercase()
    );
    assert_eq!(f0.user_ids(), vec!["Friend 0 <f0@example.org>".to_string()]);

    // Stored in Go's layout, not as plain text.
    let stored = std::fs::read(
        dir.path()
            .join(MAU_DIR)
            .join(format!("{}.pgp", f0.fingerprint())),
    )
    .expect("stored");
    assert!(
        Cert::from_bytes(&stored).is_err(),
        "friend file is encrypted"
    );

    // Listing survives a reload.
    let reloaded = Account::load(dir.path(), PASS).expect("load");
    let mut expected = vec![f0.fingerprint(), f1.fingerprint()];
    expected.sort();
    let listed: Vec<_> = reloaded
        .friends()
        .expect("list")
        .iter()
        .map(|f| f.fingerprint())
        .collect();
    assert_eq!(listed, expected);

    reloaded.remove_friend(&f0.fingerprint()).expect("remove");
    assert!(matches!(
        reloaded.remove_friend(&f0.fingerprint()),
        Err(IdentityError::FriendNotFound(_))
    ));
    assert!(matches!(
        reloaded.friend(&f0.fingerprint()),
        Err(IdentityError::FriendNotFound(_))
    ));
    assert_eq!(reloaded.friends().expect("list").len(), 1);

    // Another account cannot read these friend files.
    assert!(reloaded.friend(&f1.fingerprint()).is_ok());
    // A plain public key dropped into .mau is read as well.
    let plain = dir
        .path()
        .join(MAU_DIR)
        .join(format!("{}.pgp", f0.fingerprint()));
    std::fs::write(&plain, friend_key(0).to_vec().expect("serialize")).expect("write");
    assert_eq!(reloaded.friends().expect("list").len(), 2);

    // Go's sub-keyrings: friend files in sub-directories of .mau count too.
    let group = dir.path().join(MAU_DIR).join("family");
    std::fs::create_dir(&group).expect("mkdir");
    std::fs::rename(&plain, group.join(format!("{}.pgp", f0.fingerprint()))).expect("move");
    std::fs::write(group.join("notes.txt"), b"not a key").expect("write");
    assert_eq!(reloaded.friends().expect("list").len(), 2);
    assert!(reloaded.friend(&f0.fingerprint()).is_ok());
    reloaded
        .remove_friend(&f0.fingerprint())
        .expect("remove from group");
    assert_eq!(reloaded.friends().expect("list").len(), 1);
}

#[test]
fn bad_friend_keys_are_rejected() {
    let a = {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = Account::create(dir.path(), "Alice", "a@example.org", PASS, KeyVersion::V4)
            .expect("create");
        (a, dir)
    };
    let (a, _dir) = a;
    assert!(matches!(
        a.add_friend(b"-----BEGIN PGP PUBLIC KEY BLOCK-----\n\ngarbage\n"),
        Err(IdentityError::CorruptKey { .. })
    ));
    assert!(matches!(
        a.add_friend(b""),
        Err(IdentityError::CorruptKey { .. })
    ));

    // Revoked.
    let (cert, rev) = CertBuilder::new()
        .add_userid("Revoked <r@example.org>")
        .generate()
        .expect("generate");
    let revoked = cert.insert_packets(rev).expect("revoke").0;
    assert!(matches!(
        a.add_friend(&revoked.to_vec().expect("serialize")),
        Err(IdentityError::KeyRevoked(_))
    ));

    // Expired.
    let (expired, _) = CertBuilder::new()
        .add_userid("Expired <e@example.org>")
        .set_creation_time(SystemTime::now() - Duration::from_secs(3 * 86400))
        .set_validity_period(Duration::from_secs(86400))
        .generate()
        .expect("generate");
    assert!(matches!(
        a.add_friend(&expired.to_vec().expect("serialize")),
        Err(IdentityError::KeyExpired(_))
    ));

    // Own key.
    assert!(matches!(
        a.add_friend(a.export_public().expect("export").as_bytes()),
        Err(IdentityError::InvalidOption(_))
    ));
    // Missing file.
    assert!(matches!(
        a.import_friend_file("/nonexistent/key.asc"),
        Err(IdentityError::Io { .. })
    ));
}

#[test]
fn in_memory_accounts_have_no_directory() {
    let a = Account::generate_in_memory("Mem", "", KeyVersion::V6).expect("generate");
    assert!(a.root().is_none());
    assert!(matches!(a.friends(), Err(IdentityError::NoDirectory)));
    assert!(matches!(a.save(PASS), Err(IdentityError::NoDirectory)));
    let exported = a.export_public().expect("export");
    assert!(exported.starts_with("-----BEGIN PGP PUBLIC KEY BLOCK-----"));
    let parsed = Cert::from_bytes(exported.as_bytes()).expect("parse");
    assert!(!parsed.is_tsk(), "export holds no secrets");
    assert_eq!(parsed.fingerprint().as_bytes(), a.fingerprint().as_bytes());
}
