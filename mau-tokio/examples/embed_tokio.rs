//! Embedding a Mau node in a tokio program: `cargo run -p mau-tokio --example embed_tokio`.
use mau_identity::{KeyVersion, TlsIdentity};
use mau_net::{NodeConfig, RunningNode};

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // A real program loads its account: TlsIdentity::from_account(&account, addr).
    let identity = |addr: Option<&str>| {
        TlsIdentity::from_ed25519_seed(&[7; 32], 1_700_000_000, KeyVersion::V4, addr)
    };
    let mut config = NodeConfig::new("127.0.0.1:0".parse()?);
    config.bootstrap = vec![]; // e.g. mau_net::parse_peer_spec("FPR@host:port")?
    let node = RunningNode::start(mau_tokio::TokioRuntime::current(), config, identity).await?;
    println!("{} listening on {}", node.fingerprint(), node.local_addr());
    let outcome = node.lookup(node.fingerprint()).await?; // a DHT lookup
    println!("lookup asked {} peers", outcome.requests);
    Ok(())
}
