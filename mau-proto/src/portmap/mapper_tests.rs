//! The mapper against scripted gateways: unit cases and properties.

use core::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use proptest::prelude::*;

use super::*;

const LAN: &str = "192.168.1.10:7000";
const WAN: Ipv4Addr = Ipv4Addr::new(11, 19, 0, 100);

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn at(ms: u64) -> Time {
    Time(ms)
}

fn mapper(lifetime: u64) -> Mapper {
    let mut m = Mapper::new(MapperConfig::new(LAN.parse().unwrap(), secs(lifetime)), 7);
    m.start(Time::ZERO);
    m
}

fn drain(m: &mut Mapper) -> Vec<Action> {
    std::iter::from_fn(|| m.poll_action()).collect()
}

fn sent(actions: &[Action]) -> Vec<Vec<u8>> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Send(b) => Some(b.clone()),
            _ => None,
        })
        .collect()
}

/// A PCP gateway's answer to `request`: `lifetime`, `epoch`, our port at WAN.
fn pcp_answer(request: &[u8], result: u8, lifetime: u32, epoch: u32) -> Vec<u8> {
    let mut b = request.to_vec();
    b[1] |= 0x80;
    b[3] = result;
    b[4..8].copy_from_slice(&lifetime.to_be_bytes());
    b[8..12].copy_from_slice(&epoch.to_be_bytes());
    b[12..24].fill(0);
    b[44..60].copy_from_slice(&WAN.to_ipv6_mapped().octets());
    b
}

fn natpmp_address(epoch: u32) -> Vec<u8> {
    let mut b = vec![0, 128, 0, 0];
    b.extend(epoch.to_be_bytes());
    b.extend(WAN.octets());
    b
}

fn natpmp_map(request: &[u8], lifetime: u32, epoch: u32) -> Vec<u8> {
    let mut b = vec![0, 130, 0, 0];
    b.extend(epoch.to_be_bytes());
    b.extend(&request[4..8]);
    b.extend(lifetime.to_be_bytes());
    b
}

/// Runs the timers up to `until`; returns every action.
fn run_to(m: &mut Mapper, until: Time) -> Vec<Action> {
    let mut out = Vec::new();
    while let Some(t) = m.poll_timeout().filter(|t| *t <= until) {
        m.handle_timeout(t);
        out.extend(drain(m));
    }
    out
}

#[test]
fn pcp_maps_renews_at_half_the_lifetime_and_deletes_on_shutdown() {
    let mut m = mapper(120);
    let first = sent(&drain(&mut m));
    assert_eq!(first.len(), 1);
    assert_eq!(first[0][0], 2, "PCP is tried first");
    m.handle(at(20), Event::Datagram(&pcp_answer(&first[0], 0, 100, 500)));
    let mapping = *m.mapping().expect("mapped");
    assert_eq!(mapping.protocol, Protocol::Pcp);
    assert_eq!(mapping.external, SocketAddr::from((WAN, 7000)));
    assert_eq!(mapping.expires, at(100_020));
    assert_eq!(drain(&mut m), [Action::Changed(Some(mapping))]);
    // The renewal goes out at half the granted lifetime, not before.
    assert_eq!(m.poll_timeout(), Some(at(50_020)));
    assert!(run_to(&mut m, at(50_019)).is_empty());
    let renew = sent(&run_to(&mut m, at(50_020)));
    assert_eq!(renew.len(), 1);
    assert_eq!(&renew[0][24..36], &first[0][24..36], "same nonce");
    m.handle(
        at(50_030),
        Event::Datagram(&pcp_answer(&renew[0], 0, 100, 550)),
    );
    assert!(drain(&mut m).is_empty(), "a plain renewal changes nothing");
    assert_eq!(m.mapping().unwrap().expires, at(150_030));
    // Shutdown: lifetime 0, then stopped once the gateway confirms.
    m.shutdown(at(60_000));
    let del = sent(&drain(&mut m));
    assert_eq!(&del[0][4..8], &[0, 0, 0, 0]);
    m.handle(at(60_010), Event::Datagram(&pcp_answer(&del[0], 0, 0, 560)));
    assert!(m.is_stopped());
    assert_eq!(
        drain(&mut m),
        [Action::Removed {
            protocol: Protocol::Pcp,
            confirmed: true
        }]
    );
    assert_eq!(m.poll_timeout(), None);
}

#[test]
fn a_nat_pmp_only_gateway_is_used_after_its_version_answer() {
    let mut m = mapper(3600);
    drain(&mut m);
    m.handle(at(5), Event::Datagram(&[0, 129, 0, 1, 0, 0, 0, 9]));
    let a = drain(&mut m);
    assert!(matches!(
        &a[0],
        Action::Unavailable {
            protocol: Protocol::Pcp,
            ..
        }
    ));
    assert_eq!(sent(&a), [vec![0, 0]], "NAT-PMP asks the external address");
    m.handle(at(10), Event::Datagram(&natpmp_address(9)));
    let req = sent(&drain(&mut m));
    assert_eq!(req, [natpmp::map_tcp_request(7000, 7000, 3600).to_vec()]);
    m.handle(at(15), Event::Datagram(&natpmp_map(&req[0], 3600, 9)));
    let mapping = *m.mapping().expect("mapped");
    assert_eq!(mapping.protocol, Protocol::NatPmp);
    assert_eq!(mapping.external, SocketAddr::from((WAN, 7000)));
    // Deletion: lifetime 0, suggested port 0.
    m.shutdown(at(20));
    let del = sent(&drain(&mut m));
    assert_eq!(del, [natpmp::map_tcp_request(7000, 0, 0).to_vec()]);
}

#[test]
fn a_closed_port_5351_goes_straight_to_upnp() {
    let mut m = mapper(3600);
    drain(&mut m);
    m.handle(at(3), Event::Unreachable);
    let a = drain(&mut m);
    let internal: SocketAddr = LAN.parse().unwrap();
    assert_eq!(
        a.last(),
        Some(&Action::Upnp(UpnpOp::Map {
            internal,
            lifetime: secs(3600)
        }))
    );
    assert!(sent(&a).is_empty(), "NAT-PMP is skipped: same port");
    let ext = SocketAddr::from((WAN, 7000));
    m.handle(at(900), Event::Upnp(Ok((ext, secs(3600)))));
    assert_eq!(m.mapping().unwrap().protocol, Protocol::Upnp);
    drain(&mut m);
    // Renewal at half, one operation at a time.
    let a = run_to(&mut m, at(1_800_900));
    assert_eq!(
        a,
        [Action::Upnp(UpnpOp::Renew {
            internal,
            external_port: 7000,
            lifetime: secs(3600)
        })]
    );
    let a = run_to(&mut m, at(1_810_900));
    assert!(a.is_empty(), "no second operation while one runs: {a:?}");
    m.handle(at(1_811_000), Event::Upnp(Ok((ext, secs(3600)))));
    m.shutdown(at(1_900_000));
    assert_eq!(
        drain(&mut m),
        [Action::Upnp(UpnpOp::Remove {
            external_port: 7000
        })]
    );
    m.handle(at(1_900_500), Event::Upnp(Ok((ext, secs(0)))));
    assert!(m.is_stopped());
}

#[test]
fn a_silent_gateway_costs_a_bounded_number_of_requests_then_a_long_wait() {
    let mut m = mapper(3600);
    let mut a = drain(&mut m);
    a.extend(run_to(&mut m, at(20_000)));
    let s = sent(&a);
    let pcp = s.iter().filter(|b| b[0] == 2).count();
    let pmp = s.iter().filter(|b| b[0] == 0).count();
    assert_eq!((pcp, pmp), (2, 4), "{a:?}");
    let upnp = a.iter().filter(|x| matches!(x, Action::Upnp(_))).count();
    assert_eq!(upnp, 1);
    // PCP 3+6 s (±10%), NAT-PMP 3.75 s, then UPnP gets 30 s.
    m.handle(at(20_000), Event::Upnp(Err("no gateway".into())));
    let a = drain(&mut m);
    assert_eq!(
        a.last(),
        Some(&Action::GaveUp {
            retry_in: secs(600)
        })
    );
    assert!(m.is_waiting() && m.mapping().is_none());
    assert!(run_to(&mut m, at(619_999)).is_empty());
    let again = run_to(&mut m, at(620_000));
    assert_eq!(sent(&again).len(), 1, "a new round after 10 min");
    // The next wait doubles.
    m.handle(at(620_001), Event::Unreachable);
    m.handle(at(620_002), Event::Upnp(Err("no".into())));
    assert_eq!(
        drain(&mut m).last(),
        Some(&Action::GaveUp {
            retry_in: secs(1200)
        })
    );
}

#[test]
fn a_rebooted_pcp_gateway_is_noticed_and_the_mapping_announced_again() {
    let mut m = mapper(100);
    let req = sent(&drain(&mut m));
    m.handle(at(0), Event::Datagram(&pcp_answer(&req[0], 0, 100, 10_000)));
    drain(&mut m);
    let renew = sent(&run_to(&mut m, at(50_000)));
    m.handle(
        at(50_000),
        Event::Datagram(&pcp_answer(&renew[0], 0, 100, 3)),
    );
    let a = drain(&mut m);
    assert_eq!(a[0], Action::GatewayRestarted);
    assert!(matches!(a[1], Action::Changed(Some(_))));
}

#[test]
fn a_rebooted_nat_pmp_gateway_is_asked_its_address_again() {
    let mut m = mapper(100);
    drain(&mut m);
    m.handle(at(1), Event::Datagram(&[0, 129, 0, 1, 0, 0, 0, 9]));
    drain(&mut m);
    m.handle(at(2), Event::Datagram(&natpmp_address(5000)));
    let req = sent(&drain(&mut m));
    m.handle(at(3), Event::Datagram(&natpmp_map(&req[0], 100, 5000)));
    drain(&mut m);
    let renew = sent(&run_to(&mut m, at(50_003)));
    m.handle(at(50_004), Event::Datagram(&natpmp_map(&renew[0], 100, 2)));
    let a = drain(&mut m);
    assert_eq!(a[0], Action::GatewayRestarted);
    assert_eq!(sent(&a), [vec![0, 0]]);
    m.handle(at(50_010), Event::Datagram(&natpmp_address(3)));
    assert!(matches!(drain(&mut m)[..], [Action::Changed(Some(_))]));
}

#[test]
fn an_unanswered_renewal_retries_before_the_end_then_the_mapping_is_lost() {
    let mut m = mapper(8);
    let req = sent(&drain(&mut m));
    m.handle(at(0), Event::Datagram(&pcp_answer(&req[0], 0, 8, 100)));
    drain(&mut m);
    let a = run_to(&mut m, at(7_999));
    // Renewals at 4 s, then at half of what is left each time.
    assert!(sent(&a).len() >= 3, "{a:?}");
    assert!(m.mapping().is_some());
    let a = run_to(&mut m, at(8_000));
    assert_eq!(a[0], Action::Changed(None));
    assert_eq!(m.trying(), Some(Protocol::Pcp), "a new round starts");
}

#[test]
fn answers_to_someone_else_are_ignored() {
    let mut m = mapper(100);
    let req = sent(&drain(&mut m));
    let mut other = pcp_answer(&req[0], 0, 100, 1);
    other[24] ^= 1;
    m.handle(at(1), Event::Datagram(&other));
    assert!(m.mapping().is_none() && drain(&mut m).is_empty());
    let mut udp = pcp_answer(&req[0], 0, 100, 1);
    udp[36] = 17;
    m.handle(at(1), Event::Datagram(&udp));
    assert!(m.mapping().is_none());
}

#[test]
fn ipv6_asks_pcp_for_a_pinhole_and_nothing_else() {
    let internal: SocketAddr = "[2001:db8:19:1::10]:7000".parse().unwrap();
    let mut m = Mapper::new(MapperConfig::new(internal, secs(60)), 1);
    m.start(Time::ZERO);
    let req = sent(&drain(&mut m));
    assert_eq!(
        &req[0][8..24],
        &match internal.ip() {
            IpAddr::V6(v6) => v6.octets(),
            IpAddr::V4(_) => unreachable!(),
        }
    );
    m.handle(
        at(1),
        Event::Datagram(&[
            2, 0x81, 0, 2, 0, 0, 0, 30, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        ]),
    );
    let a = drain(&mut m);
    assert!(matches!(
        a[0],
        Action::Unavailable {
            protocol: Protocol::Pcp,
            ..
        }
    ));
    assert!(matches!(a[1], Action::GaveUp { .. }), "{a:?}");
}

/// What a scripted gateway does with one request.
#[derive(Clone, Debug)]
enum Gw {
    Silent,
    Unreachable,
    Pcp {
        result: u8,
        lifetime: u32,
        epoch: u32,
    },
    NatPmp {
        lifetime: u32,
        epoch: u32,
    },
    Garbage(Vec<u8>),
}

fn gw() -> impl Strategy<Value = Gw> {
    prop_oneof![
        Just(Gw::Silent),
        Just(Gw::Unreachable),
        (0u8..16, 0u32..400, any::<u32>()).prop_map(|(result, lifetime, epoch)| Gw::Pcp {
            result: if result > 13 { 0 } else { result },
            lifetime,
            epoch
        }),
        (0u32..400, any::<u32>()).prop_map(|(lifetime, epoch)| Gw::NatPmp { lifetime, epoch }),
        proptest::collection::vec(any::<u8>(), 0..80).prop_map(Gw::Garbage),
    ]
}

/// The longest any timer may be set ahead: the 4 h backoff ceiling (a
/// granted lifetime is at most 400 s here).
const BOUND: Duration = Duration::from_secs(4 * 3600);

proptest! {
    #[test]
    fn hostile_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..128)) {
        let _ = pcp::decode(&bytes);
        let _ = natpmp::decode(&bytes);
        let mut m = mapper(60);
        m.handle(at(1), Event::Datagram(&bytes));
        let _ = drain(&mut m);
    }

    /// Whatever the gateway answers, and whenever: timers stay bounded, a
    /// held mapping is renewed before it ends (the next timer is never
    /// after its end, and the renewal is sent strictly before it), and
    /// shutdown ends in a bounded number of steps.
    #[test]
    fn timers_stay_bounded_and_leases_are_renewed_before_they_end(
        script in proptest::collection::vec((gw(), 0u64..5_000, any::<bool>()), 1..60),
        upnp_ok in any::<bool>(),
    ) {
        let mut m = mapper(120);
        let mut now = Time::ZERO;
        let mut pending = drain(&mut m);
        for (answer, delay, fire_timer) in script {
            for a in std::mem::take(&mut pending) {
                match a {
                    Action::Send(req) => {
                        let reply = match &answer {
                            Gw::Silent => None,
                            Gw::Unreachable => { m.handle(now, Event::Unreachable); None }
                            Gw::Pcp { result, lifetime, epoch } if req[0] == 2 =>
                                Some(pcp_answer(&req, *result, *lifetime, *epoch)),
                            Gw::NatPmp { epoch, .. } if req == [0, 0] => Some(natpmp_address(*epoch)),
                            Gw::NatPmp { lifetime, epoch } if req[0] == 0 => Some(natpmp_map(&req, *lifetime, *epoch)),
                            Gw::Garbage(b) => Some(b.clone()),
                            _ => None,
                        };
                        if let Some(r) = reply {
                            m.handle(now, Event::Datagram(&r));
                        }
                    }
                    Action::Upnp(_) => {
                        let r = if upnp_ok { Ok((SocketAddr::from((WAN, 7000)), secs(120))) } else { Err("no".into()) };
                        m.handle(now, Event::Upnp(r));
                    }
                    _ => {}
                }
                pending.extend(drain(&mut m));
            }
            pending.extend(drain(&mut m));
            let next = m.poll_timeout().expect("a running mapper always has a timer");
            prop_assert!(next <= now + BOUND, "timer {next:?} too far from {now:?}");
            if let Some(mapping) = m.mapping() {
                prop_assert!(mapping.expires > mapping.renewed_at);
                prop_assert!(next <= mapping.expires, "renewal after the end");
            }
            now = if fire_timer { next.max(now) } else { now + Duration::from_millis(delay) };
            if let Some(mapping) = m.mapping().copied() {
                // A renewal due now is sent while the lease still runs.
                if now >= mapping.expires {
                    prop_assert!(next <= mapping.expires);
                }
            }
            m.handle_timeout(now);
            pending.extend(drain(&mut m));
        }
        m.shutdown(now);
        for _ in 0..10 {
            match m.poll_timeout() {
                None => break,
                Some(t) => { now = t; m.handle_timeout(now); }
            }
        }
        drain(&mut m);
        prop_assert!(m.is_stopped());
    }

    /// Timers fired on time, a PCP gateway that grants `lifetime` and
    /// answers each request or not as `answers` says: a mapping is only
    /// ever lost after renewal requests went out while it still ran (the
    /// first at half the lifetime), and never while every one is answered.
    #[test]
    fn a_lease_is_renewed_before_it_ends(
        lifetime in 1u32..400,
        answers in proptest::collection::vec(any::<bool>(), 1..80),
    ) {
        let mut m = mapper(u64::from(lifetime));
        let mut now = Time::ZERO;
        let mut held: Option<Mapping> = None;
        let mut sends: Vec<Time> = Vec::new();
        let all_answered = answers.iter().all(|a| *a);
        let mut answers = answers.into_iter().chain(std::iter::repeat(all_answered));
        for _ in 0..200 {
            let mut queue: std::collections::VecDeque<Action> = drain(&mut m).into();
            while let Some(a) = queue.pop_front() {
                match a {
                    Action::Send(req) if req[0] == 2 => {
                        sends.push(now);
                        if answers.next() == Some(true) {
                            let epoch = 1000 + (now.as_millis() / 1000) as u32;
                            m.handle(now, Event::Datagram(&pcp_answer(&req, 0, lifetime, epoch)));
                            queue.extend(drain(&mut m));
                        }
                    }
                    Action::Changed(Some(mapping)) => held = Some(mapping),
                    Action::Changed(None) => {
                        let lost = held.take().expect("lost a mapping never held");
                        prop_assert!(!all_answered, "lost although every renewal was answered");
                        let half = lost.renewed_at + lost.lifetime / 2;
                        prop_assert!(
                            sends.iter().any(|t| *t >= half && *t < lost.expires),
                            "no renewal between {half:?} and {:?}: {sends:?}", lost.expires
                        );
                    }
                    _ => {}
                }
            }
            if let Some(current) = m.mapping() {
                held = Some(*current);
            }
            match m.poll_timeout() {
                Some(t) => { now = t; m.handle_timeout(now); }
                None => break,
            }
        }
    }
}
