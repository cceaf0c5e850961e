use super::*;
use mau_identity::KeyVersion;

/// Two accounts that are each other's friends (keys generated once per test).
fn pair() -> (tempfile::TempDir, Store, tempfile::TempDir, Store) {
    let da = tempfile::tempdir().unwrap();
    let db = tempfile::tempdir().unwrap();
    let a = Account::create(da.path(), "A", "", "pw", KeyVersion::V4).unwrap();
    let b = Account::create(db.path(), "B", "", "pw", KeyVersion::V4).unwrap();
    a.add_friend(b.export_public().unwrap().as_bytes()).unwrap();
    b.add_friend(a.export_public().unwrap().as_bytes()).unwrap();
    (da, Store::new(a).unwrap(), db, Store::new(b).unwrap())
}

#[test]
fn names() {
    for bad in [
        "",
        ".",
        "..",
        "../x",
        "a/b",
        "a\\b",
        "a\0b",
        ".hidden.pgp",
        "x..y",
        "x\ny.pgp",
        "x\ry.pgp",
        "a\u{1b}[2Jb.pgp",
        "tab\t.pgp",
        "del\u{7f}.pgp",
    ] {
        assert!(validate_name(bad).is_err(), "{bad:?} accepted");
    }
    assert!(validate_name(&"a".repeat(MAX_NAME_LEN + 1)).is_err());
    assert!(validate_name("hello world.pgp").is_ok());
    assert!(validate_name("ünïcødé ✓.pgp").is_ok());
    assert_eq!(escaped("x\ny\u{1b}[0m.pgp"), "x\\ny\\u{1b}[0m.pgp");
    assert_eq!(content_name("a"), "a.pgp");
    assert_eq!(content_name("a.pgp"), "a.pgp");
    let c = Cursor {
        modified_nanos: 17,
        name: "ä b-c.pgp".into(),
    };
    assert_eq!(Cursor::decode(&c.encode()), Some(c));
    assert_eq!(Cursor::decode("x-00"), None);
    assert_eq!(Cursor::decode("1-0"), None);
}

/// Fuzz finding (content_request): a `+` passed as a digit of a cursor.
#[test]
fn cursors_are_digits_dash_hex() {
    assert_eq!(
        Cursor::decode("5-6161"),
        Some(Cursor {
            modified_nanos: 5,
            name: "aa".into()
        })
    );
    for bad in ["1700000-61+e70", "+5-61", "5-+a", "5- 61", "-61"] {
        assert_eq!(Cursor::decode(bad), None, "{bad}");
    }
}

#[test]
fn share_version_sync_and_verify() {
    let (_da, a, _db, b) = pair();
    let af = a.fingerprint();
    let bf = b.fingerprint();
    let e1 = a.share("post", &b"hello"[..], &[bf]).unwrap();
    assert_eq!(e1.name, "post.pgp");
    let (_, m1) = a.meta(&e1.path).unwrap();
    assert!(a.may_read(&bf, &m1), "b is a recipient");
    let private = a.share("private", &b"me only"[..], &[]).unwrap();
    let (_, mp) = a.meta(&private.path).unwrap();
    assert!(!a.may_read(&bf, &mp), "b is not a recipient");
    // Replace: the old bytes become a version.
    let e2 = a.share("post", &b"hello again"[..], &[bf]).unwrap();
    assert_eq!(a.versions(&e2.path), vec![m1.sum.clone()]);
    let vpath = a.version_path(&af, "post.pgp", &m1.sum).unwrap();
    assert_eq!(sha256_file(&vpath).unwrap(), m1.sum);
    // Listing, with pages.
    let all = a.files(&af).unwrap();
    assert_eq!(all.len(), 2);
    let p = a.page(&af, None, None, 1, 100, |_| true).unwrap();
    assert_eq!(p.entries.len(), 1);
    let p2 = a
        .page(&af, None, p.next.as_ref(), 1, 100, |_| true)
        .unwrap();
    assert_eq!(p2.entries.len(), 1);
    assert_ne!(p.entries[0].name, p2.entries[0].name);
    assert!(p2.next.is_none());
    // B receives the file: accepted, decrypts to the plaintext.
    b.follow(&af).unwrap();
    assert_eq!(b.followed().unwrap(), vec![af]);
    let (_, m2) = a.meta(&e2.path).unwrap();
    let part = b.partial_path(&af, "post.pgp", &m2.sum);
    fs::copy(&e2.path, &part).unwrap();
    b.accept_download(&af, "post.pgp", &part, e2.size, &m2.sum)
        .unwrap();
    let mut out = Vec::new();
    b.open(&af, "post", &mut out).unwrap();
    assert_eq!(out, b"hello again");
    // A file A signed for itself only: B cannot decrypt it; refused, old copy kept.
    let part = b.partial_path(&af, "post.pgp", &mp.sum);
    fs::copy(&private.path, &part).unwrap();
    let err = b
        .accept_download(&af, "post.pgp", &part, private.size, &mp.sum)
        .unwrap_err();
    assert!(
        matches!(err, StoreError::Content(ContentError::NotForUs(_))),
        "{err}"
    );
    assert!(!part.exists());
    let mut out = Vec::new();
    b.open(&af, "post", &mut out).unwrap();
    assert_eq!(out, b"hello again");
    // Signed by B itself, put in A's directory: wrong signer.
    let own = b.share("mine", &b"x"[..], &[af]).unwrap();
    let (_, mo) = b.meta(&own.path).unwrap();
    let part = b.partial_path(&af, "post.pgp", &mo.sum);
    fs::copy(&own.path, &part).unwrap();
    let err = b
        .accept_download(&af, "post.pgp", &part, own.size, &mo.sum)
        .unwrap_err();
    assert!(
        matches!(err, StoreError::Content(ContentError::BadSignature { .. })),
        "{err}"
    );
    // Wrong sum: refused before any crypto.
    let part = b.partial_path(&af, "post.pgp", &m2.sum);
    fs::copy(&e2.path, &part).unwrap();
    let err = b
        .accept_download(&af, "post.pgp", &part, e2.size, &"0".repeat(64))
        .unwrap_err();
    assert!(matches!(err, StoreError::SumMismatch { .. }), "{err}");
    // Unfollow keeps the files, hidden; follow brings them back.
    b.unfollow(&af).unwrap();
    assert!(b.followed().unwrap().is_empty());
    assert!(b.hidden_dir_of(&af).join("post.pgp").is_file());
    b.follow(&af).unwrap();
    assert!(b.dir_of(&af).join("post.pgp").is_file());
    // Delete removes the file and its versions.
    a.delete("post").unwrap();
    assert!(!e2.path.exists());
    assert!(!versions_dir(&e2.path).exists());
    assert!(matches!(a.delete("post"), Err(StoreError::NotFound(_))));
}

#[test]
fn sync_state_through_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let a = Account::create(dir.path(), "A", "", "pw", KeyVersion::V4).unwrap();
    let s = Store::new(a).unwrap();
    let f = Fingerprint::parse("0123456789abcdef0123456789abcdef01234567").unwrap();
    assert_eq!(s.sync_state().unwrap().last_sync(&f), None);
    let t = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    s.record_sync(f, t).unwrap();
    assert_eq!(s.sync_state().unwrap().last_sync(&f), Some(t));
}

/// A shares `n` files named `f<i>.pgp` (`text` + i) with B, B follows A;
/// returns each file's (name, path in A's store, size, sum).
fn shared(a: &Store, b: &Store, n: usize, text: &str) -> Vec<(String, PathBuf, u64, String)> {
    let bf = b.fingerprint();
    b.follow(&a.fingerprint()).unwrap();
    (0..n)
        .map(|i| {
            let e = a
                .share(&format!("f{i}"), format!("{text}{i}").as_bytes(), &[bf])
                .unwrap();
            let (_, m) = a.meta(&e.path).unwrap();
            (e.name, e.path, e.size, m.sum.clone())
        })
        .collect()
}

/// Stages A's `files` in B's store as a sync does: copied to their
/// partial files (not durable) and checked.
fn stage(a: &Store, b: &Store, files: &[(String, PathBuf, u64, String)]) -> Vec<Staged> {
    stage_with(a, b, files, Flush::best())
}

fn stage_with(
    a: &Store,
    b: &Store,
    files: &[(String, PathBuf, u64, String)],
    flush: Flush,
) -> Vec<Staged> {
    let af = a.fingerprint();
    files
        .iter()
        .map(|(name, path, size, sum)| {
            let partial = b.partial_path(&af, name, sum);
            fs::copy(path, &partial).unwrap();
            b.check_download(&af, &partial, *size, sum, None, false)
                .unwrap();
            b.staged(&partial, flush).unwrap();
            Staged {
                name: name.clone(),
                partial,
            }
        })
        .collect()
}

fn plaintext(b: &Store, af: &Fingerprint, name: &str) -> Vec<u8> {
    let mut out = Vec::new();
    b.open(af, name, &mut out).unwrap();
    out
}

#[test]
fn a_batch_is_installed_together_and_keeps_old_copies() {
    for flush in [Flush::EachFile, Flush::FileSystem, Flush::best()] {
        let (_da, a, _db, b) = pair();
        let af = a.fingerprint();
        let old = shared(&a, &b, 3, "old");
        let staged = stage_with(&a, &b, &old, flush);
        let done = b.commit_downloads_with(&af, &staged, flush);
        assert!(done.iter().all(Result::is_ok), "{flush:?}: {done:?}");
        let new = shared(&a, &b, 3, "new");
        let staged = stage_with(&a, &b, &new, flush);
        let done = b.commit_downloads_with(&af, &staged, flush);
        for (i, r) in done.iter().enumerate() {
            let dest = r.as_ref().unwrap();
            assert_eq!(dest, &b.dir_of(&af).join(format!("f{i}.pgp")));
            // The new bytes in place, the old ones a version.
            assert_eq!(
                plaintext(&b, &af, &format!("f{i}")),
                format!("new{i}").as_bytes()
            );
            assert_eq!(b.versions(dest), vec![old[i].3.clone()]);
        }
        assert!(staged.iter().all(|s| !s.partial.exists()), "renamed");
    }
}

#[test]
fn a_failed_file_leaves_its_old_copy_and_the_rest_of_the_batch_goes_on() {
    let (_da, a, _db, b) = pair();
    let af = a.fingerprint();
    let old = shared(&a, &b, 3, "old");
    b.commit_downloads(&af, &stage(&a, &b, &old));
    let new = shared(&a, &b, 3, "new");
    let mut staged = stage(&a, &b, &new);
    // f1's partial file is gone before the commit; f2 has a name that
    // could escape the directory.
    fs::remove_file(&staged[1].partial).unwrap();
    staged[2].name = "../x.pgp".into();
    let done = b.commit_downloads(&af, &staged);
    assert!(done[0].is_ok());
    assert!(
        matches!(done[1], Err(StoreError::Io { .. })),
        "{:?}",
        done[1]
    );
    assert!(matches!(done[2], Err(StoreError::InvalidName { .. })));
    assert_eq!(plaintext(&b, &af, "f0"), b"new0");
    assert_eq!(plaintext(&b, &af, "f1"), b"old1");
    assert_eq!(plaintext(&b, &af, "f2"), b"old2");
    // The old copy of a file that was not replaced is no version.
    let f1 = b.dir_of(&af).join("f1.pgp");
    assert!(b.versions(&f1).is_empty(), "{:?}", b.versions(&f1));
    // A file that failed before its rename leaves no partial file.
    assert!(!staged[2].partial.exists());
}

/// A crash before the flush: the staged files were written and checked,
/// but never committed. Each file is still its old copy, the staged
/// bytes are hidden partial files (never listed or served), and the next
/// sync finds them as partial downloads: a whole one is checked again
/// before it is installed, a cut one (what a crash may leave of bytes not
/// yet flushed) is refused and removed, its old copy kept.
#[test]
fn a_batch_interrupted_before_its_flush_leaves_the_old_copies() {
    let (_da, a, _db, b) = pair();
    let af = a.fingerprint();
    let old = shared(&a, &b, 2, "old");
    b.commit_downloads(&af, &stage(&a, &b, &old));
    let new = shared(&a, &b, 2, "new");
    let staged = stage(&a, &b, &new);
    // (No commit: the process died here.)
    let listed: Vec<String> = b.files(&af).unwrap().into_iter().map(|e| e.name).collect();
    assert_eq!(listed, ["f0.pgp", "f1.pgp"], "partial files are not listed");
    assert_eq!(plaintext(&b, &af, "f0"), b"old0");
    assert_eq!(plaintext(&b, &af, "f1"), b"old1");
    // After the crash f1's unflushed bytes were lost past its first half.
    let cut = new[1].2 / 2;
    File::options()
        .write(true)
        .open(&staged[1].partial)
        .and_then(|f| f.set_len(cut))
        .unwrap();
    // f1's partial download is resumed: the rest arrives, zeros here (as
    // a crash may leave), and the whole is checked before anything moves.
    File::options()
        .write(true)
        .open(&staged[1].partial)
        .and_then(|f| f.set_len(new[1].2))
        .unwrap();
    let err = b
        .accept_download(&af, "f1.pgp", &staged[1].partial, new[1].2, &new[1].3)
        .unwrap_err();
    assert!(matches!(err, StoreError::SumMismatch { .. }), "{err}");
    assert!(!staged[1].partial.exists(), "removed");
    assert_eq!(plaintext(&b, &af, "f1"), b"old1");
    // f0's partial download is whole: checked again, then installed.
    b.accept_download(&af, "f0.pgp", &staged[0].partial, new[0].2, &new[0].3)
        .unwrap();
    assert_eq!(plaintext(&b, &af, "f0"), b"new0");
}
