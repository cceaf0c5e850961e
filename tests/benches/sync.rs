//! Friend sync throughput on loopback against `curl` fetching the same bytes
//! from the same mutual-TLS listener (with B's exported certificate):
//! 1,000 small files, and one 200 MB file. Prints seconds, MB/s and the
//! ratio sync/curl (time). A bench binary, not a timed test.
//!
//! `cargo bench -p mau-tests --bench sync` (`MAU_BENCH_BIG_MB=50` for a
//! smaller large file, `MAU_BENCH_ONLY=small` or `big` for one workload).

use std::io::Write;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mau_net::sync::{FriendClient, SyncOptions};
use mau_proto::Contact;
use mau_smol::SmolRuntime;
use mau_store::Store;
use mau_tests::content_sync::{mutual_friends, serve};

const ROUNDS: usize = 3;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let big_mb: usize = std::env::var("MAU_BENCH_BIG_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
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
        let mut sync_t = Vec::new();
        let mut curl_t = Vec::new();
        for _ in 0..ROUNDS {
            // Fresh copy on B's side: full sync of everything.
            let dir = sb.dir_of(&af);
            let _ = std::fs::remove_dir_all(&dir);
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
            let t = Instant::now();
            let r = smol::block_on(client.sync(&())).expect("sync");
            sync_t.push(t.elapsed());
            assert_eq!(r.downloaded, names.len(), "{r:?}");
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
            let t = Instant::now();
            let st = Command::new("curl")
                .args(["-sS", "-k", "--fail", "--tlsv1.3", "--cert"])
                .arg(&certf)
                .arg("--key")
                .arg(&keyf)
                .arg("-K")
                .arg(&cfgf)
                .status()
                .expect("curl runs");
            curl_t.push(t.elapsed());
            assert!(st.success(), "curl failed");
        }
        let (s, c) = (median(sync_t), median(curl_t));
        let mb = bytes as f64 / 1e6;
        println!(
            "{label}: sync {:.3} s ({:.1} MB/s), curl {:.3} s ({:.1} MB/s), sync/curl time ratio {:.2}",
            s.as_secs_f64(),
            mb / s.as_secs_f64(),
            c.as_secs_f64(),
            mb / c.as_secs_f64(),
            s.as_secs_f64() / c.as_secs_f64()
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
