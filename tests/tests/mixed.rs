//! Mixed networks: smol nodes and tokio nodes form one DHT and find each other.

use std::time::Duration;

use mau_smol::SmolRuntime;
use mau_tests::{config, eventually, start};
use mau_tokio::TokioRuntime;

#[test]
fn ten_smol_and_ten_tokio_nodes_find_each_other() {
    let tokio_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let tk = TokioRuntime::from_handle(tokio_rt.handle().clone());
    let sm = SmolRuntime;
    smol::block_on(async {
        let first = start(&sm, 0, config(0), vec![]).await;
        let boot = vec![first.contact()];
        let mut smol_nodes = vec![first];
        let mut tokio_nodes = Vec::new();
        for i in 1..20u32 {
            if i % 2 == 0 {
                smol_nodes.push(start(&sm, i, config(u64::from(i)), boot.clone()).await);
            } else {
                tokio_nodes.push(start(&tk, i, config(u64::from(i)), boot.clone()).await);
            }
        }
        assert_eq!((smol_nodes.len(), tokio_nodes.len()), (10, 10));
        eventually(&sm, "all joined", Duration::from_secs(60), || {
            smol_nodes.iter().all(|n| !n.is_joining())
                && tokio_nodes.iter().all(|n| !n.is_joining())
        })
        .await;
        let everyone: Vec<_> = smol_nodes
            .iter()
            .map(|n| (n.fingerprint(), n.advertised().clone()))
            .chain(
                tokio_nodes
                    .iter()
                    .map(|n| (n.fingerprint(), n.advertised().clone())),
            )
            .collect();
        let mut misses = Vec::new();
        for (fp, addr) in &everyone {
            for n in &smol_nodes {
                if n.fingerprint() != *fp
                    && n.lookup(*fp)
                        .await
                        .expect("lookup")
                        .found
                        .map(|c| c.address)
                        != Some(addr.clone())
                {
                    misses.push(format!("smol {} -> {fp}", n.fingerprint()));
                }
            }
            for n in &tokio_nodes {
                if n.fingerprint() != *fp
                    && n.lookup(*fp)
                        .await
                        .expect("lookup")
                        .found
                        .map(|c| c.address)
                        != Some(addr.clone())
                {
                    misses.push(format!("tokio {} -> {fp}", n.fingerprint()));
                }
            }
        }
        assert!(misses.is_empty(), "{misses:?}");
        // Both kinds hold both kinds in their tables.
        let smol_fps: Vec<_> = smol_nodes.iter().map(|n| n.fingerprint()).collect();
        let tokio_fps: Vec<_> = tokio_nodes.iter().map(|n| n.fingerprint()).collect();
        for n in &smol_nodes {
            assert!(n
                .snapshot()
                .peers
                .iter()
                .any(|p| tokio_fps.contains(&p.fingerprint)));
        }
        for n in &tokio_nodes {
            assert!(n
                .snapshot()
                .peers
                .iter()
                .any(|p| smol_fps.contains(&p.fingerprint)));
        }
    });
}
