//! The control socket's line parser: the server reads one line (at most
//! `control::MAX_LINE` bytes) as a `ControlRequest`; the `mau` client reads
//! the answer as a `ControlResponse`. On arbitrary lines neither panics, and
//! whatever parses survives serialize → parse unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mau_net::control::{ControlRequest, ControlResponse, MAX_LINE};

fuzz_target!(|data: &[u8]| {
    // What `answer` sees: up to the first newline, at most MAX_LINE bytes.
    let data = &data[..data.len().min(MAX_LINE as usize)];
    let line = match data.iter().position(|&b| b == b'\n') {
        Some(i) => &data[..=i],
        None => data,
    };
    let Ok(line) = std::str::from_utf8(line) else {
        return;
    };
    if let Ok(req) = serde_json::from_str::<ControlRequest>(line) {
        let json = serde_json::to_string(&req).expect("serialize request");
        assert!(!json.contains('\n'), "a request must stay one line");
        assert_eq!(
            serde_json::from_str::<ControlRequest>(&json).expect("re-parse"),
            req
        );
    }
    if let Ok(resp) = serde_json::from_str::<ControlResponse>(line) {
        let json = serde_json::to_string(&resp).expect("serialize response");
        assert!(!json.contains('\n'), "an answer must stay one line");
        assert_eq!(
            serde_json::from_str::<ControlResponse>(&json).expect("re-parse"),
            resp
        );
    }
});
