//! Embedding a Mau node in a smol program: `cargo run -p mau-smol --example embed_smol`.
use mau_identity::{KeyVersion, TlsIdentity};
use mau_net::{NodeConfig, RunningNode};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    smol::block_on(async {
        // A real program loads its account: TlsIdentity::from_account(&account, addr).
        let identity = |addr: Option<&str>| {
            TlsIdentity::from_ed25519_seed(&[7; 32], 1_700_000_000, KeyVersion::V4, addr)
        };
        let mut config = NodeConfig::new("127.0.0.1:0".parse()?);
        config.bootstrap = vec![]; // e.g. mau_net::parse_peer_spec("FPR@host:port")?
        let node = RunningNode::start(mau_smol::SmolRuntime, config, identity).await?;
        println!("{} listening on {}", node.fingerprint(), node.local_addr());
        let outcome = node.lookup(node.fingerprint()).await?; // a DHT lookup
        println!("lookup asked {} peers", outcome.requests);
        Ok(())
    })
}
