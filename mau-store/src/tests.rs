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
