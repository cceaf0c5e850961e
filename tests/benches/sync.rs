//! Friend sync throughput on loopback against `curl` fetching the same bytes
//! from the same mutual-TLS listener (with B's exported certificate):
//! 1,000 small files, and one 200 MB file. Prints seconds, MB/s and the
//! ratio sync/curl (time). A bench binary, not a timed test.
//!
//! `cargo bench -p mau-tests --bench sync` (`MAU_BENCH_BIG_MB=50` for a
//! smaller large file, `MAU_BENCH_ONLY=small` or `big` for one workload,
//! `MAU_BENCH_ROUNDS=N` rounds (3), `MAU_BENCH_CURL=0` to time the sync
//! alone, e.g. under a profiler: "measuring" on stderr marks the end of the
//! set-up).

use std::io::Write;
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

use mau_net::sync::{FriendClient, SyncOptions};
use mau_proto::Contact;
use mau_smol::SmolRuntime;
use mau_store::Store;
use mau_tests::content_sync::{mutual_friends, serve};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// CPU seconds used so far by this process (the node serving, and the
/// sync) and by its waited-for children (curl), from `/proc/self/stat`.
fn cpu() -> (f64, f64) {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which is in parentheses).
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<f64> = rest
        .split_whitespace()
        .map(|v| v.parse().unwrap_or(0.0))
        .collect();
    // utime, stime, cutime, cstime are fields 14-17 (index 11-14 here), in
    // clock ticks (100 a second on Linux).
    let at = |i: usize| f.get(i).copied().unwrap_or(0.0) / 100.0;
    (at(11) + at(12), at(13) + at(14))
}

/// The 1-minute load average (the machine may be shared).
fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "?".into())
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let big_mb = env_usize("MAU_BENCH_BIG_MB", 200);
    let rounds = env_usize("MAU_BENCH_ROUNDS", 3).max(1);
    let with_curl = std::env::var("MAU_BENCH_CURL").map_or(true, |v| v != "0");
    let rt = SmolRuntime;
    let da = tempfile::tempdir().expect("tempdir");
    let db = tempfile::tempdir().expect("tempdir");
    let (a, b) = mutual_friends(da.path(), db.path());
    let (cert, key) = b.export_tls_pem(None).expect("tls pem");
    let certf = db.path().join("b.crt");
    let keyf = db.path().join("b.key");
    std::fs::write(&certf, cert).expect("cert");
    std::fs::write(&keyf, key.as_bytes()).expect("key");
    let sa = Arc::new(Store::new(a).expect("store"));
    let sb = Arc::new(Store::new(b).expect("store"));
    let (af, bf) = (sa.fingerprint(), sb.fingerprint());
    sb.follow(&af).expect("follow");
    let node = smol::block_on(serve(&rt, &sa, 1, vec![]));
    let addr = node.local_addr();

    let run = |label: &str, names: &[String], bytes: u64| {
        eprintln!("{label}: measuring (pid {})", std::process::id());
        let mb = bytes as f64 / 1e6;
        let (mut sync_t, mut curl_t, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
        // Earlier rounds' copies of many files (the sync's and curl's) are
        // moved aside and deleted after the last round: ext4 skips inodes
        // freed in the last seconds when it allocates new ones, reading
        // each one's inode block, so 1,000 files deleted just before a
        // round made every file creation of that round slower (~25% of
        // the sync's CPU in a profile). A single large file is deleted at
        // once: kept, 200 MiB copies fill the page cache and later rounds'
        // writes slow down (copy_folio_from_iter_atomic went from ~5% to
        // 23% of the samples, the sync's CPU from 0.69 s to ~1 s).
        let keep = names.len() > 1;
        let old = tempfile::tempdir_in(db.path()).expect("tempdir");
        let mut old_outs = Vec::new();
        for round in 1..=rounds {
            // Fresh copy on B's side: full sync of everything.
            let dir = sb.dir_of(&af);
            if keep && dir.exists() {
                std::fs::rename(&dir, old.path().join(round.to_string())).expect("move aside");
            } else {
                let _ = std::fs::remove_dir_all(&dir);
            }
            sb.follow(&af).expect("follow");
            let client = FriendClient::direct(
                rt,
                sb.clone(),
                Contact::new(af, addr.into()),
                SyncOptions {
                    full: true,
                    ..SyncOptions::default()
                },
            )
            .expect("client");
            let (c0, _) = cpu();
            let t = Instant::now();
            let r = smol::block_on(client.sync(&())).expect("sync");
            let s = t.elapsed().as_secs_f64();
            let sync_cpu = cpu().0 - c0;
            sync_t.push(s);
            assert_eq!(r.downloaded, names.len(), "{r:?}");
            if !with_curl {
                println!(
                    "{label} round {round}: sync {s:.3} s ({:.1} MB/s, cpu {sync_cpu:.2} s), load {}",
                    mb / s,
                    load()
                );
                continue;
            }
            // curl: the same files over the same listener, one connection.
            let out = tempfile::tempdir().expect("tempdir");
            let mut cfg = String::new();
            for (i, n) in names.iter().enumerate() {
                cfg.push_str(&format!(
                    "url = \"https://{addr}/p2p/{af}/{n}\"\noutput = \"{}\"\n",
                    out.path().join(format!("f{i}")).display()
                ));
            }
            let cfgf = out.path().join("curl.cfg");
            std::fs::File::create(&cfgf)
                .and_then(|mut f| f.write_all(cfg.as_bytes()))
                .expect("curl config");
            let (c0, k0) = cpu();
            let t = Instant::now();
            let st = Command::new("curl")
                // Bounded: an answer that stalls fails the bench (seen twice
                // in ~400 rounds, 2026-12-01) instead of hanging it.
                .args([
                    "-sS",
                    "-k",
                    "--fail",
                    "--tlsv1.3",
                    "--max-time",
                    "120",
                    "--cert",
                ])
                .arg(&certf)
                .arg("--key")
                .arg(&keyf)
                .arg("-K")
                .arg(&cfgf)
                .status()
                .expect("curl runs");
            let c = t.elapsed().as_secs_f64();
            let (c1, k1) = cpu();
            if keep {
                old_outs.push(out);
            }
            assert!(st.success(), "curl failed (or stalled for 120 s): {st}");
            curl_t.push(c);
            ratios.push(c / s);
            println!(
                "{label} round {round}: sync {s:.3} s, curl {c:.3} s, curl/sync {:.2}, load {}; \
                 cpu: sync (both sides) {sync_cpu:.2} s, curl {:.2} s + serving it {:.2} s",
                c / s,
                load(),
                k1 - k0,
                c1 - c0
            );
        }
        drop((old, old_outs));
        let s = median(sync_t);
        if !with_curl {
            println!(
                "{label}: sync {s:.3} s ({:.1} MB/s), median of {rounds}",
                mb / s
            );
            return;
        }
        let c = median(curl_t);
        println!(
            "{label}: sync {s:.3} s ({:.1} MB/s), curl {c:.3} s ({:.1} MB/s), curl/sync (throughput ratio) median {:.2}, rounds {}",
            mb / s,
            mb / c,
            median(ratios.clone()),
            ratios.iter().map(|r| format!("{r:.2}")).collect::<Vec<_>>().join(" ")
        );
    };

    let only = std::env::var("MAU_BENCH_ONLY").unwrap_or_default();
    // 1,000 small files (about 1 KB each).
    let mut names = Vec::new();
    let mut total = 0;
    for i in 0..1000 {
        let e = sa
            .share(&format!("small-{i:04}"), &vec![b'x'; 1000][..], &[bf])
            .expect("share");
        total += e.size;
        names.push(e.name);
    }
    if only != "big" {
        run("1000 small files", &names, total);
    }
    for n in &names {
        sa.delete(n).expect("delete");
    }
    if only == "small" {
        return;
    }
    // One large file.
    let data: Vec<u8> = (0..(big_mb << 20) as u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let e = sa.share("big", &data[..], &[bf]).expect("share");
    drop(data);
    run(&format!("one {big_mb} MiB file"), &[e.name], e.size);
}
