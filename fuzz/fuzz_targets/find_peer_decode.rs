//! `wire::decode_find_peer(bytes, 20)` on arbitrary bytes never panics; what
//! it accepts holds at most 20 records, and encoding then decoding it gives the
//! same records (the encoding also fits the size limit).
#![no_main]

use libfuzzer_sys::fuzz_target;
use mau_proto::wire::{decode_find_peer, encode_find_peer, max_find_peer_body};

const K: usize = 20;

fuzz_target!(|data: &[u8]| {
    let Ok(records) = decode_find_peer(data, K) else {
        return;
    };
    assert!(records.len() <= K, "{} records", records.len());
    let body = encode_find_peer(&records);
    assert!(body.len() <= max_find_peer_body(K), "{} bytes", body.len());
    let again = decode_find_peer(&body, K).expect("re-decode of our own encoding");
    assert_eq!(again, records);
    assert_eq!(encode_find_peer(&again), body);
});
