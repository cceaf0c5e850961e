//! Mixed networks: smol nodes and tokio nodes form one DHT and find each other.

use std::future::Future;
use std::time::Duration;

use mau_smol::SmolRuntime;
use mau_tests::{eventually, mixed_network};
use mau_tokio::TokioRuntime;

/// Runs `f` on smol, with a tokio runtime (two workers) beside it.
fn on_both<F: Future>(f: impl FnOnce(SmolRuntime, TokioRuntime) -> F) -> F::Output {
    let tokio_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let tk = TokioRuntime::from_handle(tokio_rt.handle().clone());
    smol::block_on(f(SmolRuntime, tk))
}

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

/// Asserts that every node of `nodes` has one of `others` in its table.
fn each_holds_one_of<R: mau_net::Runtime>(
    nodes: &[mau_net::RunningNode<R>],
    kind: &str,
    others: &[mau_proto::Fingerprint],
) {
    for n in nodes {
        assert!(
            n.snapshot()
                .peers
                .iter()
                .any(|p| others.contains(&p.fingerprint)),
            "{kind} node {} holds no node of the other runtime",
            n.fingerprint()
        );
    }
}

#[test]
fn ten_smol_and_ten_tokio_nodes_find_each_other() {
    on_both(|sm, tk| async move {
        let (smol_nodes, tokio_nodes) = mixed_network(&sm, &tk, 20).await;
        assert_eq!((smol_nodes.len(), tokio_nodes.len()), (10, 10));
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
        each_holds_one_of(&smol_nodes, "smol", &tokio_fps);
        each_holds_one_of(&tokio_nodes, "tokio", &smol_fps);
    });
}

/// A smol client syncs a friend's files from a tokio server, and back.
#[test]
fn smol_and_tokio_sync_from_each_other() {
    use mau_net::sync::{FriendClient, SyncOptions};
    use mau_net::{RunningNode, Runtime};
    use mau_store::Store;
    use mau_tests::content_sync::{following_stores, serve};
    use std::any::type_name;
    use std::sync::Arc;

    /// `store` shares `n` files named `<who>-<i>` (lower case) with `to`.
    fn share(store: &Store, who: &str, n: usize, to: &Store) {
        for i in 0..n {
            let name = format!("{}-{i}", who.to_lowercase());
            let body = format!("from {who} {i}");
            store
                .share(&name, body.as_bytes(), &[to.fingerprint()])
                .expect("share");
        }
    }

    /// The owner of `store` (on `node`) syncs `friend`'s files from `server`,
    /// a node of the other runtime; all `n` of them arrive.
    async fn sync_from<C: Runtime, S: Runtime>(
        (node, store): (&RunningNode<C>, &Arc<Store>),
        (server, friend): (&RunningNode<S>, &Arc<Store>),
        n: usize,
    ) {
        let opts = SyncOptions {
            idle_timeout: Duration::from_secs(10),
            ..SyncOptions::default()
        };
        let client = FriendClient::connect(
            node,
            store.clone(),
            friend.fingerprint(),
            &[server.advertised().clone()],
            opts,
        )
        .await
        .unwrap_or_else(|e| panic!("friend not reachable from {}: {e}", type_name::<C>()));
        let r = client.sync(&()).await.expect("sync");
        assert_eq!((r.downloaded, r.failed.len()), (n, 0), "{r:?}");
        assert_eq!(store.files(&friend.fingerprint()).expect("files").len(), n);
    }

    on_both(|sm, tk| async move {
        let (da, db) = (
            tempfile::tempdir().expect("dir"),
            tempfile::tempdir().expect("dir"),
        );
        let (sa, sb) = following_stores(da.path(), db.path());
        sa.follow(&sb.fingerprint()).expect("follow");
        // A on tokio, B on smol, one DHT.
        let na = serve(&tk, &sa, 1, vec![]).await;
        let nb = serve(&sm, &sb, 2, vec![na.contact()]).await;
        eventually(&sm, "B joined", Duration::from_secs(30), || {
            !nb.is_joining()
        })
        .await;
        share(&sa, "A", 20, &sb);
        share(&sb, "B", 10, &sa);
        // smol client <- tokio server.
        sync_from((&nb, &sb), (&na, &sa), 20).await;
        // tokio client <- smol server.
        sync_from((&na, &sa), (&nb, &sb), 10).await;
    });
}
