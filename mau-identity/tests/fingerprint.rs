//! The fingerprint derivation used by the verifier agrees with sequoia's own
//! fingerprints (and, when `gpg` is installed, with gpg's).

use std::time::{Duration, UNIX_EPOCH};

use mau_identity::openpgp;
use mau_identity::{derive_fingerprint, Account, KeyVersion};
use openpgp::packet::key::{Key4, Key6, PrimaryRole, SecretParts};
use proptest::prelude::*;

fn public_of(seed: &[u8; 32]) -> [u8; 32] {
    use ring::signature::KeyPair;
    let kp = ring::signature::Ed25519KeyPair::from_seed_unchecked(seed).expect("seed");
    kp.public_key().as_ref().try_into().expect("32 bytes")
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(16))]

    #[test]
    fn derivation_matches_sequoia(seed in any::<[u8; 32]>(), created in any::<u32>()) {
        let ctime = UNIX_EPOCH + Duration::from_secs(u64::from(created));
        let public = public_of(&seed);

        let v4: Key4<SecretParts, PrimaryRole> =
            Key4::import_secret_ed25519(&seed, ctime).expect("v4 key");
        prop_assert_eq!(
            derive_fingerprint(KeyVersion::V4, &public, created).as_bytes().to_vec(),
            v4.fingerprint().as_bytes().to_vec()
        );

        let v6: Key6<SecretParts, PrimaryRole> =
            Key6::import_secret_ed25519(&seed, ctime).expect("v6 key");
        prop_assert_eq!(
            derive_fingerprint(KeyVersion::V6, &public, created).as_bytes().to_vec(),
            v6.fingerprint().as_bytes().to_vec()
        );
    }
}

#[test]
fn generated_accounts_match_sequoia() {
    for version in [KeyVersion::V4, KeyVersion::V6] {
        let a = Account::generate_in_memory("A", "a@example.org", version).expect("account");
        let cert = a.public_cert();
        assert_eq!(a.fingerprint().as_bytes(), cert.fingerprint().as_bytes());
        let tls = mau_identity::TlsIdentity::from_account(&a, None).expect("tls");
        assert_eq!(tls.fingerprint(), a.fingerprint());
    }
}

/// Cross-checks the v4 derivation and the Go-compatible account file with
/// GnuPG (an independent implementation), when it is installed.
#[test]
fn gpg_agrees_when_available() {
    use std::process::Command;
    if Command::new("gpg").arg("--version").output().is_err() {
        eprintln!("gpg not installed: skipped");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let home = dir.path().join("gnupg");
    std::fs::create_dir(&home).expect("gnupghome");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    }
    let a =
        Account::create(dir.path(), "Gee", "g@example.org", "pw", KeyVersion::V4).expect("create");
    let gpg = |args: &[&str]| {
        Command::new("gpg")
            .env("GNUPGHOME", &home)
            .args(["--batch", "--no-tty", "--quiet"])
            .args(args)
            .output()
            .expect("run gpg")
    };
    let export = dir.path().join("pub.asc");
    std::fs::write(&export, a.export_public().expect("export")).expect("write");
    let out = gpg(&[
        "--with-colons",
        "--show-keys",
        export.to_str().expect("utf8"),
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    let fpr = text
        .lines()
        .find(|l| l.starts_with("fpr:"))
        .and_then(|l| l.split(':').nth(9))
        .expect("gpg printed a fingerprint");
    assert_eq!(fpr.to_lowercase(), a.fingerprint().to_string());

    // gpg decrypts account.pgp with the passphrase, like Go's ReadMessage.
    let account = dir.path().join(".mau").join("account.pgp");
    let out = gpg(&[
        "--pinentry-mode",
        "loopback",
        "--passphrase",
        "pw",
        "--decrypt",
        account.to_str().expect("utf8"),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tsk = openpgp::Cert::from_bytes(&out.stdout).expect("decrypted key");
    assert!(tsk.is_tsk());
    assert_eq!(tsk.fingerprint().as_bytes(), a.fingerprint().as_bytes());
}

use openpgp::parse::Parse;
