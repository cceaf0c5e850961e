//! `Fingerprint::parse` on arbitrary strings never panics; what it accepts
//! prints as 40 or 64 lowercase hex digits that parse back to the same value
//! (also upper-cased and through serde); `from_bytes` round-trips too.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mau_proto::Fingerprint;

fuzz_target!(|data: &[u8]| {
    if let Ok(fp) = Fingerprint::from_bytes(data) {
        assert_eq!(fp.as_bytes(), data);
        assert_eq!(Fingerprint::parse(&fp.to_string()), Ok(fp));
    }
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(fp) = Fingerprint::parse(text) else {
        return;
    };
    let hex = fp.to_string();
    assert!(hex.len() == 40 || hex.len() == 64, "{hex}");
    assert!(hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')));
    assert_eq!(hex.len(), fp.as_bytes().len() * 2);
    assert_eq!(Fingerprint::parse(&hex), Ok(fp));
    assert_eq!(Fingerprint::parse(&hex.to_uppercase()), Ok(fp));
    assert_eq!(fp.version(), if hex.len() == 40 { 4 } else { 6 });
    let json = serde_json::to_string(&fp).expect("serialize");
    assert_eq!(
        serde_json::from_str::<Fingerprint>(&json).expect("deserialize"),
        fp
    );
});
