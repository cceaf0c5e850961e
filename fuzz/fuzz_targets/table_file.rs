//! `persist::parse_table` (the routing-table file a restarted node reads) on
//! arbitrary bytes never panics; an accepted table survives
//! `encode_table` → `parse_table` unchanged, and every record's address is
//! a valid `PeerAddress` that prints as it parses.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mau_net::persist::{encode_table, parse_table};
use mau_proto::wire::{PeerAddress, MAX_ADDRESS_LEN};

fuzz_target!(|data: &[u8]| {
    // load_table reads at most 16 MiB; libFuzzer's inputs are far smaller.
    let Ok(peers) = parse_table(data) else {
        return;
    };
    for p in &peers {
        let a = p.address.as_str();
        assert!(a.len() <= MAX_ADDRESS_LEN);
        assert_eq!(PeerAddress::parse(a).as_ref(), Ok(&p.address));
    }
    let bytes = encode_table(&peers).expect("encode");
    assert_eq!(
        parse_table(&bytes).expect("re-parse of our own file"),
        peers
    );
});
