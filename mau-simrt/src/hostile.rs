//! Hostile peers of a scenario ([`crate::scenario`]) and the invariants
//! they must not break.
//!
//! - A garbage node: a real identity that joins (it pings honest nodes,
//!   its certificate claiming its address, and answers their pings), whose
//!   server answers every `/kad/find_peer` with garbage, in turn: invalid
//!   JSON, K lying contacts (honest fingerprints and made-up ones, all at
//!   dead addresses) and an oversized body.
//! - A request storm: a peer sends `/kad/find_peer` requests to one victim
//!   from a few connections at once, as fast as the simulated network
//!   carries them, bounded in count and in time.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use mau_identity::TlsIdentity;
use mau_net::Runtime;
use mau_proto::wire::{FIND_PEER_PREFIX, PING_PATH};
use mau_proto::{Fingerprint, PeerAddress};

use crate::net::mix;
use crate::{Sim, SimRuntime};

/// The garbage node's host.
pub(crate) const GARBAGE_HOST: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 200, 0, 1));
/// The storm's host (nothing listens there).
pub(crate) const STORM_HOST: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 200, 0, 2));
/// Connections the storm sends from at once.
pub(crate) const STORM_WORKERS: usize = 16;
/// Requests the storm sends at most.
pub(crate) const STORM_REQUESTS: usize = 3000;
/// How long the storm lasts at most (virtual time).
pub(crate) const STORM_TIME: Duration = Duration::from_secs(15);
/// Records in a lying answer.
const LIES: usize = mau_proto::config::K;
/// The oversized answer's body: far over any valid find_peer answer.
const OVERSIZED: usize = 1 << 20;

/// A dead address a lie points to: 10.250.x.y, where nothing listens.
fn dead(i: usize) -> String {
    format!("10.250.{}.{}:7000", (i >> 8) as u8, i as u8)
}

/// The garbage node's lies for `seed`: every honest fingerprint of
/// `honest` and as many made-up ones, each at a dead address.
pub(crate) fn lies(seed: u64, honest: &[Fingerprint]) -> Vec<(Fingerprint, String)> {
    let mut out: Vec<(Fingerprint, String)> = honest
        .iter()
        .enumerate()
        .map(|(i, fp)| (*fp, dead(i)))
        .collect();
    for i in 0..honest.len().max(LIES) {
        let mut bytes = [0u8; 32];
        for (j, chunk) in bytes.chunks_mut(8).enumerate() {
            chunk.copy_from_slice(&mix(seed ^ mix((i * 4 + j) as u64)).to_le_bytes());
        }
        if let Ok(fp) = Fingerprint::from_bytes(&bytes) {
            out.push((fp, dead(honest.len() + i)));
        }
    }
    out
}

/// One garbage answer for the `n`th find_peer: invalid JSON, K lies (a
/// window of `lies` that moves with `n`), or an oversized body.
fn garbage(n: usize, lies: &[(Fingerprint, String)]) -> Vec<u8> {
    match n % 3 {
        0 => b"[{\"fingerprint\": 7, \"address\": [".to_vec(),
        1 => {
            let records: Vec<String> = (0..LIES.min(lies.len()))
                .map(|j| &lies[(n / 3 + j) % lies.len()])
                .map(|(fp, a)| format!("{{\"fingerprint\":\"{fp}\",\"address\":\"{a}\"}}"))
                .collect();
            format!("[{}]", records.join(",")).into_bytes()
        }
        _ => {
            let mut body = b"[".to_vec();
            body.resize(OVERSIZED, b' ');
            body.push(b']');
            body
        }
    }
}

/// Reads an HTTP request head (at most 8 KiB); returns its path.
async fn read_path<S: futures_io::AsyncRead + Unpin>(s: &mut S) -> Option<String> {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = s.read(&mut buf).await.ok()?;
        if n == 0 || head.len() > 8192 {
            return None;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let line = head.split(|&b| b == b'\r').next()?;
    let line = std::str::from_utf8(line).ok()?;
    line.split(' ').nth(1).map(str::to_owned)
}

/// Starts the garbage node's server on [`GARBAGE_HOST`]: pings are answered
/// as they should be, every find_peer with garbage. Returns its address
/// and the count of garbage answers it sends.
pub(crate) async fn serve_garbage(
    sim: &Sim,
    id: &TlsIdentity,
    lies: Vec<(Fingerprint, String)>,
) -> std::io::Result<(SocketAddr, Arc<AtomicUsize>)> {
    let rt = sim.host(GARBAGE_HOST);
    let addr = SocketAddr::new(GARBAGE_HOST, crate::scenario::PORT);
    let listener = rt.bind_tcp(addr).await?;
    let config =
        mau_identity::server_config(id).map_err(|e| std::io::Error::other(e.to_string()))?;
    let acceptor = futures_rustls::TlsAcceptor::from(config);
    let answered = Arc::new(AtomicUsize::new(0));
    let count = answered.clone();
    let lies = Arc::new(lies);
    let server = rt.clone();
    rt.spawn(async move {
        while let Ok((tcp, _)) = SimRuntime::accept_tcp(&listener).await {
            let (acceptor, answered, lies) = (acceptor.clone(), answered.clone(), lies.clone());
            server.spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let Some(path) = read_path(&mut tls).await else {
                    return;
                };
                let body = match path.as_str() {
                    PING_PATH => Vec::new(),
                    p if p.starts_with(FIND_PEER_PREFIX) => {
                        garbage(answered.fetch_add(1, Ordering::Relaxed), &lies)
                    }
                    _ => b"{}".to_vec(),
                };
                let head = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                    body.len()
                );
                if tls.write_all(head.as_bytes()).await.is_ok() {
                    let _ = tls.write_all(&body).await;
                    let _ = tls.close().await;
                }
            });
        }
    });
    Ok((addr, count))
}

/// One `GET path` to `to` (whose fingerprint is `server`) from `id` over a
/// mutual-TLS connection of its own; true if answered 200.
pub async fn request(
    rt: &SimRuntime,
    to: SocketAddr,
    server: Fingerprint,
    id: &TlsIdentity,
    path: &str,
) -> bool {
    let Ok(tcp) = rt.connect_tcp(to).await else {
        return false;
    };
    let Ok(config) = mau_identity::client_config(id, server) else {
        return false;
    };
    let connector = futures_rustls::TlsConnector::from(config);
    let Ok(mut tls) = connector.connect(mau_identity::server_name(), tcp).await else {
        return false;
    };
    let req = format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n");
    if tls.write_all(req.as_bytes()).await.is_err() {
        return false;
    }
    let mut answer = Vec::new();
    let _ = (&mut tls).take(64 * 1024).read_to_end(&mut answer).await;
    answer.starts_with(b"HTTP/1.1 200")
}

/// The storm: [`STORM_WORKERS`] loops on [`STORM_HOST`] send find_peer
/// requests for `targets` to `victim`, one after the other on fresh
/// connections, until [`STORM_REQUESTS`] were sent or [`STORM_TIME`]
/// passed. Returns once every loop stopped: (sent, answered 200).
pub(crate) async fn storm(
    sim: &Sim,
    id: TlsIdentity,
    victim: (SocketAddr, Fingerprint),
    targets: Vec<Fingerprint>,
) -> (usize, usize) {
    let rt = sim.host(STORM_HOST);
    let sent = Arc::new(AtomicUsize::new(0));
    let ok = Arc::new(AtomicUsize::new(0));
    let (done_tx, done_rx) = async_channel::unbounded::<()>();
    let until = sim.elapsed() + STORM_TIME;
    let (id, targets) = (Arc::new(id), Arc::new(targets));
    for _ in 0..STORM_WORKERS {
        let (rt2, sim, id, targets) = (rt.clone(), sim.clone(), id.clone(), targets.clone());
        let (sent, ok, done) = (sent.clone(), ok.clone(), done_tx.clone());
        rt.spawn(async move {
            while sim.elapsed() < until {
                let n = sent.fetch_add(1, Ordering::Relaxed);
                if n >= STORM_REQUESTS {
                    break;
                }
                let path = format!("{FIND_PEER_PREFIX}{}", targets[n % targets.len().max(1)]);
                if request(&rt2, victim.0, victim.1, &id, &path).await {
                    ok.fetch_add(1, Ordering::Relaxed);
                }
            }
            drop(done);
        });
    }
    drop(done_tx);
    while done_rx.recv().await.is_ok() {}
    (
        sent.load(Ordering::Relaxed).min(STORM_REQUESTS),
        ok.load(Ordering::Relaxed),
    )
}

/// "No unverified address in an honest table": every peer of each table
/// (node name, its peers) is a real identity at the address it listens on
/// (`real`: fingerprint to address).
pub fn unverified(
    tables: &[(String, Vec<(Fingerprint, PeerAddress)>)],
    real: &BTreeMap<Fingerprint, String>,
) -> Vec<String> {
    let mut out = Vec::new();
    for (node, peers) in tables {
        for (fp, address) in peers {
            if real.get(fp).map(String::as_str) != Some(address.as_str()) {
                out.push(format!(
                    "{node}'s table holds {fp} at {address}, where it does not listen"
                ));
            }
        }
    }
    out
}

/// "No honest peer lost to an attacker's load": every peer the victim held
/// before the attack (`before`) that is still alive (`alive`) is in its
/// table after it (`after`).
pub fn lost_to_load(
    victim: &str,
    before: &BTreeSet<Fingerprint>,
    after: &BTreeSet<Fingerprint>,
    alive: &BTreeSet<Fingerprint>,
) -> Vec<String> {
    before
        .iter()
        .filter(|fp| alive.contains(fp) && !after.contains(fp))
        .map(|fp| format!("{victim} lost the honest, alive peer {fp} to the storm"))
        .collect()
}

/// The memory bound: a node's peak open connections (`peaks`: node name,
/// connections) stay within `connections`. (Its table cannot outgrow the
/// run's real identities without breaking [`unverified`], sampled at the
/// same moments.)
pub fn over_bound(peaks: &[(String, usize)], connections: usize) -> Vec<String> {
    peaks
        .iter()
        .filter(|(_, open)| *open > connections)
        .map(|(node, open)| format!("{node} held {open} connections at once (bound {connections})"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fp(i: u8) -> Fingerprint {
        Fingerprint::from_bytes(&[i; 32]).expect("32 bytes")
    }

    fn addr(s: &str) -> PeerAddress {
        PeerAddress::parse(s).expect("address")
    }

    #[test]
    fn a_lie_in_a_table_breaks_the_invariant() {
        let real = BTreeMap::from([(fp(1), "10.0.0.1:7000".to_owned())]);
        let honest = vec![("node 0".to_owned(), vec![(fp(1), addr("10.0.0.1:7000"))])];
        assert!(unverified(&honest, &real).is_empty());
        // A real fingerprint at a dead address, and a made-up one.
        for lie in [
            (fp(1), addr("10.250.0.1:7000")),
            (fp(9), addr("10.0.0.1:7000")),
        ] {
            let tables = vec![("node 0".to_owned(), vec![lie.clone()])];
            assert_eq!(unverified(&tables, &real).len(), 1, "{lie:?}");
        }
    }

    #[test]
    fn a_live_peer_gone_from_the_victim_breaks_the_invariant() {
        let before = BTreeSet::from([fp(1), fp(2), fp(3)]);
        let alive = BTreeSet::from([fp(1), fp(2)]);
        // fp(3) left the network: not a loss.
        assert!(lost_to_load("v", &before, &BTreeSet::from([fp(1), fp(2)]), &alive).is_empty());
        let lost = lost_to_load("v", &before, &BTreeSet::from([fp(1)]), &alive);
        assert_eq!(lost.len(), 1, "{lost:?}");
        assert!(lost[0].contains(&fp(2).to_string()));
    }

    #[test]
    fn a_node_over_the_memory_bound_breaks_the_invariant() {
        assert!(over_bound(&[("n".to_owned(), 10)], 10).is_empty());
        assert_eq!(over_bound(&[("n".to_owned(), 11)], 10).len(), 1);
    }

    #[test]
    fn garbage_answers_are_garbage() {
        let lies = lies(7, &[fp(1), fp(2)]);
        assert_eq!(lies.len(), 2 + LIES);
        let k = mau_proto::config::K;
        let invalid = garbage(0, &lies);
        assert!(mau_proto::wire::decode_find_peer(&invalid, k).is_err());
        let lying = garbage(1, &lies);
        let parsed = mau_proto::wire::decode_find_peer(&lying, k).expect("lies parse");
        assert_eq!(parsed.len(), LIES);
        assert!(parsed
            .iter()
            .all(|r| r.address.as_str().starts_with("10.250.")));
        assert!(garbage(2, &lies).len() > mau_proto::wire::max_find_peer_body(k));
    }
}
