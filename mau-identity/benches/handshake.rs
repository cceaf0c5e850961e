//! A full in-memory mutual TLS 1.3 handshake with Mau's verifier, against the
//! same handshake with rustls's standard WebPKI verifiers on an equivalent
//! setup (the same self-signed certificates, each added as a trust anchor).

use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion};
use mau_identity::{client_config, provider, server_config, KeyVersion, TlsIdentity};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::ServerName;
use rustls::server::WebPkiClientVerifier;
use rustls::sign::SingleCertAndKey;
use rustls::{ClientConfig, ClientConnection, RootCertStore, ServerConfig, ServerConnection};

fn pump(client: &mut ClientConnection, server: &mut ServerConnection) {
    let mut buf = Vec::with_capacity(4096);
    while client.is_handshaking() || server.is_handshaking() {
        buf.clear();
        while client.wants_write() {
            client.write_tls(&mut buf).expect("client write");
        }
        let mut rd = &buf[..];
        while !rd.is_empty() {
            server.read_tls(&mut rd).expect("server read");
            server.process_new_packets().expect("server process");
        }
        buf.clear();
        while server.wants_write() {
            server.write_tls(&mut buf).expect("server write");
        }
        let mut rd = &buf[..];
        while !rd.is_empty() {
            client.read_tls(&mut rd).expect("client read");
            client.process_new_packets().expect("client process");
        }
    }
}

fn bench(c: &mut Criterion) {
    let a = TlsIdentity::from_ed25519_seed(&[1; 32], 1_700_000_000, KeyVersion::V4, None)
        .expect("identity a");
    let b = TlsIdentity::from_ed25519_seed(&[2; 32], 1_700_000_000, KeyVersion::V4, None)
        .expect("identity b");

    // Mau: pinned fingerprint, key-bound names.
    let mau_client = client_config(&a, b.fingerprint()).expect("client config");
    let mau_server = server_config(&b).expect("server config");

    // Standard: WebPKI verifiers, both self-signed certificates as anchors,
    // the server's fingerprint (a DNS SAN) as server name.
    let mut roots = RootCertStore::empty();
    roots.add(a.certificate().clone()).expect("anchor a");
    roots.add(b.certificate().clone()).expect("anchor b");
    let roots = Arc::new(roots);
    let server_verifier = WebPkiServerVerifier::builder_with_provider(roots.clone(), provider())
        .build()
        .expect("server verifier");
    let client_verifier = WebPkiClientVerifier::builder_with_provider(roots, provider())
        .build()
        .expect("client verifier");
    let mut std_client = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("tls13")
        .with_webpki_verifier(server_verifier)
        .with_client_cert_resolver(Arc::new(SingleCertAndKey::from(a.certified_key())));
    std_client.resumption = rustls::client::Resumption::disabled();
    let std_client = Arc::new(std_client);
    let mut std_server = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("tls13")
        .with_client_cert_verifier(client_verifier)
        .with_cert_resolver(Arc::new(SingleCertAndKey::from(b.certified_key())));
    std_server.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    std_server.send_tls13_tickets = 0;
    let std_server = Arc::new(std_server);
    let std_name = ServerName::try_from(b.fingerprint().to_string()).expect("dns name");

    let mut group = c.benchmark_group("mutual_handshake");
    group.bench_function("mau_verifier", |bench| {
        bench.iter(|| {
            let mut client = ClientConnection::new(mau_client.clone(), mau_identity::server_name())
                .expect("client");
            let mut server = ServerConnection::new(mau_server.clone()).expect("server");
            pump(&mut client, &mut server);
            assert!(server.peer_certificates().is_some());
        })
    });
    group.bench_function("webpki_verifier", |bench| {
        bench.iter(|| {
            let mut client =
                ClientConnection::new(std_client.clone(), std_name.clone()).expect("client");
            let mut server = ServerConnection::new(std_server.clone()).expect("server");
            pump(&mut client, &mut server);
            assert!(server.peer_certificates().is_some());
        })
    });
    group.finish();

    // What a server does after the handshake to learn who connected.
    let mut client =
        ClientConnection::new(mau_client.clone(), mau_identity::server_name()).expect("client");
    let mut server = ServerConnection::new(mau_server.clone()).expect("server");
    pump(&mut client, &mut server);
    c.bench_function("peer_identity", |bench| {
        bench.iter(|| mau_identity::peer_identity(&server).expect("identity"))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
