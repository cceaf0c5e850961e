//! Hole punching over TCP, decided without I/O (after libp2p's DCUtR).
//!
//! Two peers talk through a relay. The one that opened the relayed
//! connection (the *initiator*) sends the address it will dial from and
//! receives the other's, timing that round trip; then it tells the other
//! to dial (*sync*) and dials itself half a round trip later, so both
//! connection attempts leave at about the same moment and each side's
//! router sees an outgoing connection before the other's arrives (a TCP
//! simultaneous open). On success the peers move to the direct connection;
//! after [`PunchConfig::max_attempts`] failures they stay relayed.
//!
//! [`Punch`] is the initiator's state; [`Responder`] bounds what the other
//! side does for callers asking it to dial.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::fingerprint::Fingerprint;
use crate::time::Time;

/// Parameters of a punch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PunchConfig {
    /// Attempts (exchange, sync, dial) before staying relayed.
    pub max_attempts: u32,
    /// How long the exchange may take before the attempt counts as failed.
    pub exchange_timeout: Duration,
    /// How long one dial keeps trying (both sides retry their connect
    /// within it, so a first packet dropped by a router is not the end).
    pub dial_window: Duration,
    /// Pause between attempts.
    pub retry_wait: Duration,
}

impl Default for PunchConfig {
    fn default() -> Self {
        PunchConfig {
            max_attempts: 3,
            exchange_timeout: Duration::from_secs(5),
            dial_window: Duration::from_secs(3),
            retry_wait: Duration::from_millis(500),
        }
    }
}

/// What the initiator must do next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PunchCommand {
    /// Send our dial-from address over the relayed connection and report the
    /// peer's answer ([`Punch::on_exchanged`]); the round trip is timed from now.
    Exchange,
    /// Tell the peer to dial now (over the relayed connection, without
    /// waiting for its answer); the initiator dials at `dial_at`.
    Sync {
        /// When to dial.
        dial_at: Time,
    },
    /// Dial the peer's address for at most `window`, then report
    /// ([`Punch::on_dialed`]).
    Dial {
        /// How long the dial may keep trying.
        window: Duration,
    },
    /// A direct connection is up: use it, release the relayed stream.
    Direct,
    /// Every attempt failed (or the peer cannot punch): stay relayed.
    StayRelayed,
}

/// How a punch ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PunchOutcome {
    /// Direct, at the given attempt (1-based).
    Direct {
        /// Which attempt worked.
        attempt: u32,
    },
    /// Still relayed after this many attempts.
    Relayed {
        /// Attempts made.
        attempts: u32,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Idle,
    Exchanging { sent: Time },
    WaitingToDial { at: Time },
    Dialing { since: Time },
    Pausing { until: Time },
    Done(PunchOutcome),
}

/// The initiator's punch: events with the time in, [`PunchCommand`]s out.
#[derive(Debug)]
pub struct Punch {
    config: PunchConfig,
    state: State,
    attempt: u32,
    rtt: Option<Duration>,
    out: Vec<PunchCommand>,
}

impl Punch {
    /// A punch that starts at once (its first command is [`PunchCommand::Exchange`]).
    pub fn start(config: PunchConfig, now: Time) -> Self {
        let mut p = Punch {
            config,
            state: State::Idle,
            attempt: 0,
            rtt: None,
            out: Vec::new(),
        };
        p.next_attempt(now);
        p
    }

    fn next_attempt(&mut self, now: Time) {
        if self.attempt >= self.config.max_attempts {
            self.finish(PunchOutcome::Relayed {
                attempts: self.attempt,
            });
            return;
        }
        self.attempt += 1;
        self.state = State::Exchanging { sent: now };
        self.out.push(PunchCommand::Exchange);
    }

    fn finish(&mut self, outcome: PunchOutcome) {
        self.state = State::Done(outcome);
        self.out.push(match outcome {
            PunchOutcome::Direct { .. } => PunchCommand::Direct,
            PunchOutcome::Relayed { .. } => PunchCommand::StayRelayed,
        });
    }

    fn failed(&mut self, now: Time) {
        if self.attempt >= self.config.max_attempts {
            self.finish(PunchOutcome::Relayed {
                attempts: self.attempt,
            });
        } else {
            self.state = State::Pausing {
                until: now + self.config.retry_wait,
            };
        }
    }

    /// The exchange answered: `ok` if the peer gave an address to dial
    /// (a peer that cannot punch answers no, and the punch ends relayed).
    pub fn on_exchanged(&mut self, now: Time, ok: bool) {
        let State::Exchanging { sent } = self.state else {
            return;
        };
        if !ok {
            self.finish(PunchOutcome::Relayed {
                attempts: self.attempt,
            });
            return;
        }
        let rtt = now.since(sent);
        self.rtt = Some(rtt);
        let dial_at = now + rtt / 2;
        self.state = State::WaitingToDial { at: dial_at };
        self.out.push(PunchCommand::Sync { dial_at });
        if dial_at <= now {
            self.handle_timeout(now);
        }
    }

    /// The exchange failed (an error on the relayed connection).
    pub fn on_exchange_failed(&mut self, now: Time) {
        if matches!(self.state, State::Exchanging { .. }) {
            self.failed(now);
        }
    }

    /// The dial ended: `ok` if a direct connection is up.
    pub fn on_dialed(&mut self, now: Time, ok: bool) {
        if !matches!(self.state, State::Dialing { .. }) {
            return;
        }
        if ok {
            self.finish(PunchOutcome::Direct {
                attempt: self.attempt,
            });
        } else {
            self.failed(now);
        }
    }

    /// Moves time on.
    pub fn handle_timeout(&mut self, now: Time) {
        match self.state {
            State::Exchanging { sent } if now >= sent + self.config.exchange_timeout => {
                self.failed(now)
            }
            State::WaitingToDial { at } if now >= at => {
                self.state = State::Dialing { since: now };
                self.out.push(PunchCommand::Dial {
                    window: self.config.dial_window,
                });
            }
            // The dial reports itself; this only catches one that never does.
            State::Dialing { since } if now >= since + self.config.dial_window * 2 => {
                self.failed(now)
            }
            State::Pausing { until } if now >= until => self.next_attempt(now),
            _ => {}
        }
    }

    /// When [`Self::handle_timeout`] must be called next.
    pub fn poll_timeout(&self) -> Option<Time> {
        match self.state {
            State::Exchanging { sent } => Some(sent + self.config.exchange_timeout),
            State::WaitingToDial { at } => Some(at),
            State::Dialing { since } => Some(since + self.config.dial_window * 2),
            State::Pausing { until } => Some(until),
            State::Idle | State::Done(_) => None,
        }
    }

    /// The next command, if any.
    pub fn poll_command(&mut self) -> Option<PunchCommand> {
        if self.out.is_empty() {
            None
        } else {
            Some(self.out.remove(0))
        }
    }

    /// How the punch ended (`None` while it runs).
    pub fn outcome(&self) -> Option<PunchOutcome> {
        match self.state {
            State::Done(o) => Some(o),
            _ => None,
        }
    }

    /// The last relayed round trip measured.
    pub fn rtt(&self) -> Option<Duration> {
        self.rtt
    }
}

/// The responder's bound: how many dials a caller may ask for, and how many
/// run at once. A caller cannot make us dial more than
/// `per_peer` times per `period`, nor more than `concurrent` dials run.
#[derive(Debug)]
pub struct Responder {
    per_peer: u32,
    period: Duration,
    concurrent: usize,
    running: usize,
    recent: BTreeMap<Fingerprint, (Time, u32)>,
    tracked: usize,
}

impl Responder {
    /// At most `per_peer` dials per caller per `period`, `concurrent` at once.
    pub fn new(per_peer: u32, period: Duration, concurrent: usize) -> Self {
        Responder {
            per_peer,
            period,
            concurrent,
            running: 0,
            recent: BTreeMap::new(),
            tracked: 1024,
        }
    }

    /// `peer` asks us to dial: true if we may (then [`Self::dial_ended`] must follow).
    pub fn may_dial(&mut self, now: Time, peer: Fingerprint) -> bool {
        if self.running >= self.concurrent {
            return false;
        }
        let period = self.period;
        self.recent.retain(|_, (since, _)| now < *since + period);
        if self.recent.len() >= self.tracked && !self.recent.contains_key(&peer) {
            return false;
        }
        let (_, n) = self.recent.entry(peer).or_insert((now, 0));
        if *n >= self.per_peer {
            return false;
        }
        *n += 1;
        self.running += 1;
        true
    }

    /// A dial allowed by [`Self::may_dial`] ended.
    pub fn dial_ended(&mut self) {
        self.running = self.running.saturating_sub(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn drain(p: &mut Punch) -> Vec<PunchCommand> {
        std::iter::from_fn(|| p.poll_command()).collect()
    }

    #[test]
    fn dials_half_a_round_trip_after_sync() {
        let mut p = Punch::start(PunchConfig::default(), Time(1000));
        assert_eq!(drain(&mut p), vec![PunchCommand::Exchange]);
        p.on_exchanged(Time(1080), true);
        assert_eq!(p.rtt(), Some(Duration::from_millis(80)));
        assert_eq!(
            drain(&mut p),
            vec![PunchCommand::Sync {
                dial_at: Time(1120)
            }]
        );
        assert_eq!(p.poll_timeout(), Some(Time(1120)));
        p.handle_timeout(Time(1120));
        let window = PunchConfig::default().dial_window;
        assert_eq!(drain(&mut p), vec![PunchCommand::Dial { window }]);
        p.on_dialed(Time(1200), true);
        assert_eq!(drain(&mut p), vec![PunchCommand::Direct]);
        assert_eq!(p.outcome(), Some(PunchOutcome::Direct { attempt: 1 }));
    }

    #[test]
    fn stays_relayed_after_bounded_attempts() {
        let cfg = PunchConfig {
            max_attempts: 2,
            ..PunchConfig::default()
        };
        let mut p = Punch::start(cfg, Time(0));
        let mut now = Time(0);
        let mut exchanges = 0;
        while p.outcome().is_none() {
            for c in drain(&mut p) {
                match c {
                    PunchCommand::Exchange => {
                        exchanges += 1;
                        p.on_exchanged(now + Duration::from_millis(10), true);
                    }
                    PunchCommand::Dial { .. } => p.on_dialed(now, false),
                    _ => {}
                }
            }
            now = p.poll_timeout().unwrap_or(now).max(now);
            p.handle_timeout(now);
        }
        assert_eq!(exchanges, 2);
        assert_eq!(p.outcome(), Some(PunchOutcome::Relayed { attempts: 2 }));
        assert_eq!(drain(&mut p).last(), Some(&PunchCommand::StayRelayed));
    }

    #[test]
    fn a_peer_that_cannot_punch_ends_it_at_once() {
        let mut p = Punch::start(PunchConfig::default(), Time(0));
        drain(&mut p);
        p.on_exchanged(Time(5), false);
        assert_eq!(drain(&mut p), vec![PunchCommand::StayRelayed]);
        assert_eq!(p.outcome(), Some(PunchOutcome::Relayed { attempts: 1 }));
    }

    #[test]
    fn responder_bounds_dials() {
        let fp = |n: u8| Fingerprint::parse(&format!("{n:02x}").repeat(20)).unwrap();
        let mut r = Responder::new(2, Duration::from_secs(60), 2);
        assert!(r.may_dial(Time(0), fp(1)));
        assert!(r.may_dial(Time(0), fp(1)));
        r.dial_ended();
        r.dial_ended();
        assert!(!r.may_dial(Time(10), fp(1)), "per-peer bound");
        assert!(r.may_dial(Time(10), fp(2)));
        assert!(r.may_dial(Time(10), fp(3)));
        assert!(!r.may_dial(Time(10), fp(4)), "concurrency bound");
        r.dial_ended();
        r.dial_ended();
        assert!(r.may_dial(Time(60_000), fp(1)), "the period ended");
    }

    #[derive(Clone, Debug)]
    enum Ev {
        Exchanged(u16, bool),
        ExchangeFailed,
        Dialed(bool),
        Tick(u16),
    }

    proptest! {
        /// Whatever the network does, a punch ends after at most
        /// `max_attempts` exchanges, with exactly one final command, and
        /// dials only after a sync at the time the sync named.
        #[test]
        fn punch_ends_within_bounds(evs in proptest::collection::vec(prop_oneof![
            (0u16..2000, any::<bool>()).prop_map(|(d, ok)| Ev::Exchanged(d, ok)),
            Just(Ev::ExchangeFailed),
            any::<bool>().prop_map(Ev::Dialed),
            (0u16..8000).prop_map(Ev::Tick),
        ], 1..300), max in 1u32..5) {
            let cfg = PunchConfig { max_attempts: max, ..PunchConfig::default() };
            let mut now = Time(0);
            let mut p = Punch::start(cfg, now);
            let (mut exchanges, mut finals, mut dial_at) = (0, 0, None);
            for e in evs {
                match e {
                    Ev::Exchanged(d, ok) => { now = now + Duration::from_millis(d.into()); p.on_exchanged(now, ok) }
                    Ev::ExchangeFailed => p.on_exchange_failed(now),
                    Ev::Dialed(ok) => p.on_dialed(now, ok),
                    Ev::Tick(d) => { now = now + Duration::from_millis(d.into()); p.handle_timeout(now) }
                }
                for c in drain(&mut p) {
                    match c {
                        PunchCommand::Exchange => exchanges += 1,
                        PunchCommand::Sync { dial_at: at } => dial_at = Some(at),
                        PunchCommand::Dial { .. } => {
                            prop_assert!(dial_at.take().is_some_and(|at| now >= at));
                        }
                        PunchCommand::Direct | PunchCommand::StayRelayed => finals += 1,
                    }
                }
                prop_assert!(exchanges <= max);
                prop_assert!(finals <= 1);
                prop_assert_eq!(finals == 1, p.outcome().is_some());
                if p.outcome().is_none() { prop_assert!(p.poll_timeout().is_some()); }
            }
        }
    }
}
