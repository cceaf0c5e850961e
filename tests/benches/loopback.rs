//! find_peer over keep-alive mutual TLS on loopback, against the same
//! runtime and HTTP stack answering a static 200 over plain TCP: the ratio is
//! what TLS, authentication and the Kademlia work cost per request.
//!
//! `cargo bench -p mau-tests --bench loopback`

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion};
use http_body_util::{BodyExt, Empty, Full};
use mau_net::runtime::Runtime;
use mau_proto::wire::{find_peer_path, max_find_peer_body};
use mau_smol::SmolRuntime;
use smol_hyper::rt::FuturesIo;

fn bench(c: &mut Criterion) {
    let rt = SmolRuntime;
    let (nodes, plain_addr) = smol::block_on(async {
        let nodes = mau_tests::network(&rt, 25).await;
        // The baseline: hyper on a plain TCP socket, a static empty 200.
        let listener = rt
            .bind_tcp(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .expect("bind");
        let addr = SmolRuntime::tcp_local_addr(&listener).expect("addr");
        rt.spawn(async move {
            while let Ok((s, _)) = SmolRuntime::accept_tcp(&listener).await {
                smol::spawn(async move {
                    let svc = hyper::service::service_fn(|_req| async {
                        Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::new())))
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(FuturesIo::new(s), svc)
                        .await;
                })
                .detach();
            }
        });
        (nodes, addr)
    });
    let client = nodes[0].client().clone();
    let server = nodes[1].contact();
    let target = nodes[2].fingerprint();
    let path = find_peer_path(&target);
    let max = max_find_peer_body(20);

    let mut plain = smol::block_on(async {
        let tcp = rt.connect_tcp(plain_addr).await.expect("connect");
        let (sender, conn) = hyper::client::conn::http1::handshake(FuturesIo::new(tcp))
            .await
            .expect("handshake");
        smol::spawn(async move {
            let _ = conn.await;
        })
        .detach();
        sender
    });

    let mut g = c.benchmark_group("loopback_request");
    g.bench_function("find_peer_mutual_tls_keepalive_smol", |b| {
        b.iter(|| smol::block_on(client.get(&server, &path, max)).expect("find_peer"))
    });
    g.bench_function("static_200_plain_tcp_keepalive", |b| {
        b.iter(|| {
            smol::block_on(async {
                let req = hyper::Request::get("/")
                    .header("host", "x")
                    .body(Empty::<Bytes>::new())
                    .expect("request");
                plain.ready().await.expect("ready");
                let resp = plain.send_request(req).await.expect("send");
                resp.into_body().collect().await.expect("body").to_bytes()
            })
        })
    });
    drop(nodes);

    // The same find_peer on a tokio network, in the same run: the adapter ratio.
    let tokio_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let tk = mau_tokio::TokioRuntime::from_handle(tokio_rt.handle().clone());
    let tnodes = tokio_rt.block_on(mau_tests::network(&tk, 25));
    let tclient = tnodes[0].client().clone();
    let tserver = tnodes[1].contact();
    let tpath = find_peer_path(&tnodes[2].fingerprint());
    g.bench_function("find_peer_mutual_tls_keepalive_tokio", |b| {
        b.iter(|| {
            tokio_rt
                .block_on(tclient.get(&tserver, &tpath, max))
                .expect("find_peer")
        })
    });
    g.finish();
    drop(tnodes);
}

criterion_group!(benches, bench);
criterion_main!(benches);
