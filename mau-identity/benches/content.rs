//! Decrypt + verify throughput of one large content file
//! ([`Account::check`], what a sync does with a download, and
//! [`Account::open`] into a sink), to compare sequoia's crypto backends on
//! the same bytes: `cargo bench -p mau-identity --bench content`, once as
//! built (crypto-rust) and once with `crypto-rust` replaced by
//! `crypto-openssl` in mau-identity's sequoia features (that backend needs
//! Debian's libssl-dev and libclang-dev). Prints wall and CPU time.
//! `MAU_BENCH_MB` sets the size (200), `MAU_BENCH_ROUNDS` the rounds (5),
//! `MAU_BENCH_OPEN=0` times `check` alone (e.g. under `perf record`),
//! `MAU_BENCH_KEY=v6` uses v6 keys.
//! A bench binary, not a timed test.

use std::time::Instant;

use mau_identity::{Account, KeyVersion};

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// CPU time of this thread so far (the check runs on it alone), from
/// `/proc/thread-self/schedstat`: steadier than wall time on a shared
/// machine.
fn thread_cpu() -> f64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
        .map_or(0.0, |ns: f64| ns / 1e9)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let mb = env_usize("MAU_BENCH_MB", 200);
    let rounds = env_usize("MAU_BENCH_ROUNDS", 5).max(1);
    let with_open = std::env::var("MAU_BENCH_OPEN").map_or(true, |v| v != "0");
    let version = match std::env::var("MAU_BENCH_KEY").as_deref() {
        Ok("v6") => KeyVersion::V6,
        _ => KeyVersion::V4,
    };
    let a = Account::generate_in_memory("A", "", version).expect("account A");
    let b = Account::generate_in_memory("B", "", version).expect("account B");
    // Incompressible plaintext (the data is not compressed, but keep the
    // same shape as a real file).
    let mut plain = vec![0u8; mb << 20];
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for chunk in plain.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
    }
    let mut sealed = Vec::with_capacity(plain.len() + 4096);
    let t = Instant::now();
    a.seal(&plain[..], &mut sealed, &[&b.public_cert()])
        .expect("seal");
    println!(
        "backend {}, {version:?} keys, {mb} MiB: seal {:.3} s",
        backend(),
        t.elapsed().as_secs_f64()
    );
    let signer = a.public_cert();
    let (mut check, mut check_cpu, mut open) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..rounds {
        let (t, c0) = (Instant::now(), thread_cpu());
        b.check(&sealed[..], &signer).expect("check");
        check.push(t.elapsed().as_secs_f64());
        check_cpu.push(thread_cpu() - c0);
        if with_open {
            let t = Instant::now();
            b.open(&sealed[..], std::io::sink(), &signer).expect("open");
            open.push(t.elapsed().as_secs_f64());
        }
    }
    let size = sealed.len() as f64 / 1e6;
    let (c, cc) = (median(check.clone()), median(check_cpu.clone()));
    println!(
        "check (decrypt + verify, no output): median {c:.3} s ({:.0} MB/s), rounds {check:.3?}; \
         cpu median {cc:.3} s ({:.0} MB/s of cpu), rounds {check_cpu:.3?}",
        size / c,
        size / cc
    );
    if with_open {
        let o = median(open.clone());
        println!(
            "open into a sink: median {o:.3} s ({:.0} MB/s), rounds {open:.3?}",
            size / o
        );
    }
}

fn backend() -> String {
    mau_identity::openpgp::crypto::backend()
}
