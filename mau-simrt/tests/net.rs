//! The simulated network and clock, without nodes: timing, refusal,
//! partitions, crashes.

use std::io::ErrorKind;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use mau_net::Runtime;
use mau_simrt::{LinkConfig, Sim, SimError};

fn ip(s: &str) -> IpAddr {
    s.parse().expect("literal IP")
}

const LIMIT: Duration = Duration::from_secs(3600);

/// Both hosts' links fixed (the worse end wins, so both alike).
fn fixed(sim: &Sim, hosts: &[IpAddr], latency_ms: u64, bandwidth: u64) {
    for &h in hosts {
        let link = LinkConfig {
            latency: Duration::from_millis(latency_ms),
            bandwidth,
            loss: 0.0,
        };
        sim.set_host_link(h, Some(link));
    }
    sim.set_default_links((Duration::ZERO, Duration::ZERO), u64::MAX, 0.0);
}

#[test]
fn time_jumps_and_timers_fire_in_order() {
    let sim = Sim::new(1);
    let s = sim.clone();
    let order = sim
        .block_on(LIMIT, async move {
            let (tx, rx) = async_channel::unbounded();
            for ms in [300u64, 100, 200] {
                let (s2, tx) = (s.clone(), tx.clone());
                s.spawn(async move {
                    s2.sleep(Duration::from_millis(ms)).await;
                    let _ = tx.send((ms, s2.elapsed())).await;
                });
            }
            let mut got = Vec::new();
            for _ in 0..3 {
                got.push(rx.recv().await.expect("sender alive"));
            }
            got
        })
        .expect("runs");
    assert_eq!(
        order,
        [100u64, 200, 300].map(|ms| (ms, Duration::from_millis(ms)))
    );
}

#[test]
fn a_stuck_simulation_is_a_deadlock_not_a_hang() {
    let sim = Sim::new(1);
    let r = sim.block_on(LIMIT, futures_lite::future::pending::<()>());
    assert_eq!(r, Err(SimError::Deadlock(Duration::ZERO)));
}

#[test]
fn connect_is_refused_after_a_round_trip_when_nothing_listens() {
    let sim = Sim::new(1);
    let (a, b) = (ip("10.0.0.1"), ip("10.0.0.2"));
    fixed(&sim, &[a, b], 20, u64::MAX);
    let rt = sim.host(a);
    let s = sim.clone();
    let (err, took) = sim
        .block_on(LIMIT, async move {
            let r = rt.connect_tcp(SocketAddr::new(b, 7000)).await;
            (r.err().map(|e| e.kind()), s.elapsed())
        })
        .expect("runs");
    assert_eq!(err, Some(ErrorKind::ConnectionRefused));
    assert_eq!(took, Duration::from_millis(40));
}

#[test]
fn bytes_arrive_after_latency_and_transmission_time() {
    let sim = Sim::new(1);
    let (a, b) = (ip("10.0.0.1"), ip("10.0.0.2"));
    // 10 ms one way, 100 kB/s: 10 kB take 100 ms to send.
    fixed(&sim, &[a, b], 10, 100_000);
    let (client, server) = (sim.host(a), sim.host(b));
    let s = sim.clone();
    let (n, at) = sim
        .block_on(LIMIT, async move {
            let l = server
                .bind_tcp("0.0.0.0:7000".parse().expect("literal"))
                .await
                .expect("bind");
            let s2 = s.clone();
            s.spawn(async move {
                let (mut c, _) = SimRt::accept_tcp(&l).await.expect("accept");
                let mut buf = vec![0u8; 10_000];
                c.read_exact(&mut buf).await.expect("read");
                let _ = s2;
            });
            let mut c = client
                .connect_tcp(SocketAddr::new(b, 7000))
                .await
                .expect("connect");
            assert_eq!(
                s.elapsed(),
                Duration::from_millis(20),
                "connect takes a round trip"
            );
            c.write_all(&[7u8; 10_000]).await.expect("write");
            c.close().await.expect("close");
            let mut rest = Vec::new();
            let n = c.read_to_end(&mut rest).await.expect("server closes");
            (n, s.elapsed())
        })
        .expect("runs");
    assert_eq!(n, 0);
    // Write at 20 ms, arrives 20 + 100 + 10 = 130 ms; the server's FIN
    // (when its task ends) arrives 10 ms later.
    assert_eq!(at, Duration::from_millis(140));
}

type SimRt = mau_simrt::SimRuntime;

#[test]
fn a_partition_blocks_connects_until_it_heals_and_resets_what_crosses_it() {
    let sim = Sim::new(1);
    let (a, b) = (ip("10.0.0.1"), ip("10.0.0.2"));
    fixed(&sim, &[a, b], 5, u64::MAX);
    let (client, server) = (sim.host(a), sim.host(b));
    let s = sim.clone();
    let (reset, connected_at) = sim
        .block_on(LIMIT, async move {
            let l = server
                .bind_tcp("0.0.0.0:7000".parse().expect("literal"))
                .await
                .expect("bind");
            let held = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
            let h = held.clone();
            s.spawn(async move {
                while let Ok((c, _)) = SimRt::accept_tcp(&l).await {
                    h.lock().expect("lock").push(c);
                }
            });
            let to = SocketAddr::new(b, 7000);
            let mut first = client.connect_tcp(to).await.expect("connect");
            s.partition(&[vec![b]]);
            let mut buf = [0u8; 1];
            let reset = first.read(&mut buf).await.err().map(|e| e.kind());
            let s2 = s.clone();
            s.spawn(async move {
                s2.sleep(Duration::from_secs(5)).await;
                s2.heal();
            });
            let t0 = s.elapsed();
            client.connect_tcp(to).await.expect("connects once healed");
            (reset, s.elapsed() - t0)
        })
        .expect("runs");
    assert_eq!(reset, Some(ErrorKind::ConnectionReset));
    // SYNs at 0, 1 s, 3 s (lost), 7 s (healed at 5 s): connected at 7 s + RTT.
    assert_eq!(connected_at, Duration::from_millis(7010));
}

#[test]
fn a_crash_stops_the_hosts_tasks_and_resets_its_connections() {
    let sim = Sim::new(1);
    let (a, b) = (ip("10.0.0.1"), ip("10.0.0.2"));
    fixed(&sim, &[a, b], 5, u64::MAX);
    let (client, server) = (sim.host(a), sim.host(b));
    let s = sim.clone();
    let (read, refused) = sim
        .block_on(LIMIT, async move {
            let srv = server.clone();
            server.spawn(async move {
                let l = srv
                    .bind_tcp("0.0.0.0:7000".parse().expect("literal"))
                    .await
                    .expect("bind");
                let mut held = Vec::new();
                while let Ok((c, _)) = SimRt::accept_tcp(&l).await {
                    held.push(c);
                }
            });
            s.sleep(Duration::from_millis(1)).await;
            let to = SocketAddr::new(b, 7000);
            let mut c = client.connect_tcp(to).await.expect("connect");
            s.crash(b);
            let mut buf = [0u8; 1];
            let read = c.read(&mut buf).await.err().map(|e| e.kind());
            s.sleep(Duration::from_millis(1)).await;
            let refused = client.connect_tcp(to).await.err().map(|e| e.kind());
            (read, refused)
        })
        .expect("runs");
    assert_eq!(read, Some(ErrorKind::ConnectionReset));
    assert_eq!(
        refused,
        Some(ErrorKind::ConnectionRefused),
        "the listener died with its task"
    );
}

#[test]
fn open_connections_count_each_held_end_once_per_host() {
    let sim = Sim::new(1);
    let (a, b) = (ip("10.0.0.1"), ip("10.0.0.2"));
    fixed(&sim, &[a, b], 1, u64::MAX);
    let (client, server, looped) = (sim.host(a), sim.host(b), sim.host(a));
    let s = sim.clone();
    let counts = sim
        .block_on(LIMIT, async move {
            let l = server
                .bind_tcp("0.0.0.0:7000".parse().expect("literal"))
                .await
                .expect("bind");
            let own = looped
                .bind_tcp("0.0.0.0:7001".parse().expect("literal"))
                .await
                .expect("bind");
            let to_b = client
                .connect_tcp(SocketAddr::new(b, 7000))
                .await
                .expect("connect");
            let (from_a, _) = SimRt::accept_tcp(&l).await.expect("accept");
            // A connection from a host to itself is one of its connections.
            let to_self = client
                .connect_tcp(SocketAddr::new(a, 7001))
                .await
                .expect("connect");
            let (self_end, _) = SimRt::accept_tcp(&own).await.expect("accept");
            let both = s.open_connections();
            drop(to_b);
            s.sleep(Duration::from_millis(10)).await;
            let a_closed = s.open_connections();
            drop((from_a, to_self, self_end));
            s.sleep(Duration::from_millis(10)).await;
            (both, a_closed, s.open_connections())
        })
        .expect("runs");
    let (both, a_closed, none) = counts;
    assert_eq!(both.get(&a), Some(&2), "{both:?}");
    assert_eq!(both.get(&b), Some(&1), "{both:?}");
    assert_eq!(a_closed.get(&a), Some(&1), "{a_closed:?}");
    assert_eq!(
        a_closed.get(&b),
        Some(&1),
        "B still holds its end: {a_closed:?}"
    );
    assert!(none.is_empty(), "{none:?}");
}
