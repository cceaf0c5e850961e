//! `wire::parse_kad_path` and `PeerAddress::parse` on arbitrary strings never
//! panic; accepted routes and addresses survive a print-and-parse round trip.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mau_proto::wire::{find_peer_path, parse_kad_path, KadRoute, PeerAddress, MAX_ADDRESS_LEN};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match parse_kad_path(text) {
        Ok(KadRoute::FindPeer(fp)) => {
            let path = find_peer_path(&fp);
            assert_eq!(parse_kad_path(&path), Ok(KadRoute::FindPeer(fp)));
        }
        Ok(KadRoute::Ping) => assert!(text.starts_with(mau_proto::wire::PING_PATH)),
        Err(_) => {}
    }
    if let Ok(a) = PeerAddress::parse(text) {
        assert_eq!(a.as_str(), text);
        assert!(text.len() <= MAX_ADDRESS_LEN);
        assert!(a.port() > 0);
        assert!(!a.host().is_empty());
        assert_eq!(PeerAddress::parse(&a.to_string()).as_ref(), Ok(&a));
        let json = serde_json::to_string(&a).expect("serialize");
        assert_eq!(
            serde_json::from_str::<PeerAddress>(&json).expect("deserialize"),
            a
        );
    }
});
