//! Mixed networks: smol nodes and tokio nodes form one DHT and find each other.

use std::time::Duration;

use mau_smol::SmolRuntime;
use mau_tests::{config, eventually, start};
use mau_tokio::TokioRuntime;

/// The nodes of `nodes` (other than `fp` itself) that do not find `fp` at `addr`.
async fn misses_from<R: mau_net::Runtime>(
    nodes: &[mau_net::RunningNode<R>],
    kind: &str,
    fp: &mau_proto::Fingerprint,
    addr: &mau_proto::PeerAddress,
) -> Vec<String> {
    let mut misses = Vec::new();
    for n in nodes.iter().filter(|n| n.fingerprint() != *fp) {
        let found = n
            .lookup(*fp)
            .await
            .expect("lookup")
            .found
            .map(|c| c.address);
        if found.as_ref() != Some(addr) {
            misses.push(format!("{kind} {} -> {fp}", n.fingerprint()));
        }
    }
    misses
}

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
            misses.extend(misses_from(&smol_nodes, "smol", fp, addr).await);
            misses.extend(misses_from(&tokio_nodes, "tokio", fp, addr).await);
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

/// A smol client syncs a friend's files from a tokio server, and back.
#[test]
fn smol_and_tokio_sync_from_each_other() {
    use mau_net::sync::{FriendClient, SyncOptions};
    use mau_store::Store;
    use mau_tests::content_sync::{account_in, serve};
    use std::sync::Arc;

    let tokio_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let tk = TokioRuntime::from_handle(tokio_rt.handle().clone());
    let sm = SmolRuntime;
    smol::block_on(async {
        let (da, db) = (
            tempfile::tempdir().expect("dir"),
            tempfile::tempdir().expect("dir"),
        );
        let (a, b) = (account_in(da.path(), "A"), account_in(db.path(), "B"));
        a.add_friend(b.export_public().expect("export").as_bytes())
            .expect("friend");
        b.add_friend(a.export_public().expect("export").as_bytes())
            .expect("friend");
        let sa = Arc::new(Store::new(a).expect("store"));
        let sb = Arc::new(Store::new(b).expect("store"));
        sb.follow(&sa.fingerprint()).expect("follow");
        sa.follow(&sb.fingerprint()).expect("follow");
        // A on tokio, B on smol, one DHT.
        let na = serve(&tk, &sa, 1, vec![]).await;
        let nb = serve(&sm, &sb, 2, vec![na.contact()]).await;
        eventually(&sm, "B joined", Duration::from_secs(30), || {
            !nb.is_joining()
        })
        .await;
        for i in 0..20 {
            sa.share(
                &format!("a-{i}"),
                format!("from A {i}").as_bytes(),
                &[sb.fingerprint()],
            )
            .expect("share");
        }
        for i in 0..10 {
            sb.share(
                &format!("b-{i}"),
                format!("from B {i}").as_bytes(),
                &[sa.fingerprint()],
            )
            .expect("share");
        }
        let opts = SyncOptions {
            idle_timeout: Duration::from_secs(10),
            ..SyncOptions::default()
        };
        // smol client <- tokio server.
        let client = FriendClient::connect(
            &nb,
            sb.clone(),
            sa.fingerprint(),
            &[na.advertised().clone()],
            opts.clone(),
        )
        .await
        .expect("A reachable from smol");
        let r = client.sync(&()).await.expect("sync");
        assert_eq!((r.downloaded, r.failed.len()), (20, 0), "{r:?}");
        assert_eq!(sb.files(&sa.fingerprint()).expect("files").len(), 20);
        // tokio client <- smol server.
        let client = FriendClient::connect(
            &na,
            sa.clone(),
            sb.fingerprint(),
            &[nb.advertised().clone()],
            opts,
        )
        .await
        .expect("B reachable from tokio");
        let r = client.sync(&()).await.expect("sync");
        assert_eq!((r.downloaded, r.failed.len()), (10, 0), "{r:?}");
        assert_eq!(sa.files(&sb.fingerprint()).expect("files").len(), 10);
    });
}
