//! `mau devnet` on both runtimes: real nodes on 127.0.0.1 find each other.

use std::process::Command;

fn devnet(runtime: &str) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_mau"))
        .args([
            "--runtime",
            runtime,
            "devnet",
            "--nodes",
            "8",
            "--lookups",
            "12",
            "--json",
        ])
        .env_remove("MAU_LOG_LEVEL")
        .output()
        .expect("run mau devnet");
    assert!(
        out.status.success(),
        "{runtime}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON report")
}

#[test]
fn devnet_finds_every_target_on_smol_and_tokio() {
    for runtime in ["smol", "tokio"] {
        let r = devnet(runtime);
        assert_eq!(r["nodes"], 8, "{runtime}");
        assert_eq!(r["found"], 12, "{runtime}: {r}");
        let sizes = r["table_sizes"].as_array().expect("sizes");
        assert!(
            sizes.iter().all(|s| s.as_u64().unwrap_or(0) > 0),
            "{runtime}: an empty table: {r}"
        );
    }
}
