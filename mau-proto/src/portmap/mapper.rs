//! The port mapper: which protocol, when to ask, when to renew, when to give
//! up. A pure state machine: the caller feeds it [`Event`]s and the time,
//! sends what [`Mapper::poll_action`] returns, and calls
//! [`Mapper::handle_timeout`] at [`Mapper::poll_timeout`].
//!
//! ```text
//! start ─▶ Trying(PCP) ─no answer / refused / NAT-PMP only─▶ Trying(NAT-PMP) ─▶ Trying(UPnP) ─▶ Waiting
//!              │ ICMP unreachable on 5351: NAT-PMP is skipped too  │                  │         (retry in 10 min,
//!              ▼                                                   ▼                  ▼          doubling to 4 h)
//!           Mapped ◀───────────────────────────────────────────────┴──────────────────┘
//!              │ at half the lifetime: renew (retransmitting, always before the end);
//!              │ the lease ends unrenewed: lost, start again; the gateway rebooted: remap
//!              ▼ shutdown
//!           Removing (lifetime 0 / DeletePortMapping, a few tries) ─▶ Stopped
//! ```

use core::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use super::epoch::{Epoch, Rule};
use super::retry::{Retry, Schedule};
use super::{natpmp, pcp, Protocol};
use crate::{Rng, Time};

/// What the mapper is asked to hold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MapperConfig {
    /// Protocols to try, in order.
    pub protocols: Vec<Protocol>,
    /// Our address on the gateway's network and the TCP port to map. An
    /// IPv6 address asks for a pinhole (PCP only: NAT-PMP is IPv4 only and
    /// the UPnP client maps IPv4).
    pub internal: SocketAddr,
    /// The lease asked for (the gateway may grant less).
    pub lifetime: Duration,
    /// PCP requests to a silent gateway before trying the next protocol.
    pub pcp_probes: u32,
    /// NAT-PMP requests to a silent gateway before the next protocol.
    pub natpmp_probes: u32,
    /// How long one UPnP operation may take before it counts as failed.
    pub upnp_timeout: Duration,
    /// The wait after every protocol failed; it doubles each round.
    pub retry_after: Duration,
    /// The longest such wait.
    pub retry_max: Duration,
    /// Deletion requests sent at shutdown before giving up.
    pub delete_attempts: u32,
}

impl MapperConfig {
    /// Every protocol in the default order, for `internal`.
    pub fn new(internal: SocketAddr, lifetime: Duration) -> Self {
        MapperConfig {
            protocols: Protocol::ALL.to_vec(),
            internal,
            lifetime,
            // 3 s then 6 s: 9 s of silence (PCP's IRT is 3 s).
            pcp_probes: 2,
            // 250, 500, 1000, 2000 ms: 3.75 s of silence.
            natpmp_probes: 4,
            upnp_timeout: Duration::from_secs(30),
            retry_after: Duration::from_secs(600),
            retry_max: Duration::from_secs(4 * 3600),
            delete_attempts: 3,
        }
    }
}

/// A mapping the gateway holds for us.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mapping {
    /// Through which protocol.
    pub protocol: Protocol,
    /// The address and port peers can reach us at (for an IPv6 pinhole,
    /// our own address).
    pub external: SocketAddr,
    /// The lifetime granted.
    pub lifetime: Duration,
    /// When it was granted or last renewed.
    pub renewed_at: Time,
    /// When it ends unless renewed.
    pub expires: Time,
}

/// A UPnP IGD operation for the caller's UPnP client; it answers with
/// [`Event::Upnp`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UpnpOp {
    /// Find the gateway and map our port (any external port if ours is taken).
    Map {
        /// Our address and port.
        internal: SocketAddr,
        /// The lease to ask for.
        lifetime: Duration,
    },
    /// Refresh the mapping of `external_port`.
    Renew {
        /// Our address and port.
        internal: SocketAddr,
        /// The mapped port.
        external_port: u16,
        /// The lease to ask for.
        lifetime: Duration,
    },
    /// Delete the mapping of `external_port`.
    Remove {
        /// The mapped port.
        external_port: u16,
    },
}

/// What the caller must do, or should know.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Send this datagram to the gateway's port 5351 (PCP or NAT-PMP).
    Send(Vec<u8>),
    /// Run this UPnP operation.
    Upnp(UpnpOp),
    /// The mapping is new, changed, lost or removed (`None`).
    Changed(Option<Mapping>),
    /// `protocol` gave no mapping (for the log); the next one is tried.
    Unavailable {
        /// The protocol.
        protocol: Protocol,
        /// Why.
        reason: String,
    },
    /// No protocol gave a mapping; the next round starts after `retry_in`.
    GaveUp {
        /// The wait.
        retry_in: Duration,
    },
    /// The gateway lost its state (rebooted): the mapping is being made again.
    GatewayRestarted,
    /// Shutdown is over: the gateway confirmed the deletion, or did not
    /// answer (the mapping then ends with its lease).
    Removed {
        /// The protocol it was held through.
        protocol: Protocol,
        /// Whether the gateway confirmed.
        confirmed: bool,
    },
}

/// What happened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event<'a> {
    /// A datagram from the gateway's port 5351.
    Datagram(&'a [u8]),
    /// Nothing listens on the gateway's port 5351 (ICMP port unreachable).
    Unreachable,
    /// The outcome of the last [`UpnpOp`]: the external address and the
    /// lease held, or why not.
    Upnp(Result<(SocketAddr, Duration), String>),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    Pcp,
    NatPmpAddress,
    NatPmpMap(Ipv4Addr),
    Upnp,
}

impl Step {
    fn first(p: Protocol) -> Step {
        match p {
            Protocol::Pcp => Step::Pcp,
            Protocol::NatPmp => Step::NatPmpAddress,
            Protocol::Upnp => Step::Upnp,
        }
    }

    fn protocol(self) -> Protocol {
        match self {
            Step::Pcp => Protocol::Pcp,
            Step::NatPmpAddress | Step::NatPmpMap(_) => Protocol::NatPmp,
            Step::Upnp => Protocol::Upnp,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum State {
    Idle,
    /// Getting a first mapping with `protocols[index]`.
    Trying {
        index: usize,
        step: Step,
        retry: Retry,
    },
    /// Holding `mapping`; `renewing` while a renewal is under way.
    Mapped {
        mapping: Mapping,
        renew_at: Time,
        renewing: Option<(Step, Retry)>,
    },
    /// Every protocol failed.
    Waiting {
        until: Time,
    },
    /// Deleting `mapping` at shutdown.
    Removing {
        mapping: Mapping,
        retry: Retry,
    },
    Stopped,
}

const NATPMP: Schedule = Schedule {
    initial: natpmp::INITIAL_RETRANSMIT,
    max: Duration::from_secs(64),
    jitter: false,
};

const PCP: Schedule = Schedule {
    initial: pcp::IRT,
    max: pcp::MRT,
    jitter: true,
};

/// UPnP renewals after a failure: 1 s, doubling (one operation at a time).
const UPNP: Schedule = Schedule {
    initial: Duration::from_secs(1),
    max: Duration::from_secs(600),
    jitter: false,
};

/// Deletion at shutdown: 250 ms doubling, whatever the protocol.
const DELETE: Schedule = Schedule {
    initial: Duration::from_millis(250),
    max: Duration::from_secs(2),
    jitter: false,
};

/// The port-mapping state machine (see the module docs).
#[derive(Clone, Debug)]
pub struct Mapper {
    config: MapperConfig,
    state: State,
    rng: Rng,
    nonce: [u8; 12],
    epoch: Epoch,
    /// The next wait after a round where every protocol failed.
    backoff: Duration,
    /// Nothing listens on port 5351 (this round).
    port_5351_closed: bool,
    /// A UPnP operation is running (at most one at a time).
    upnp_pending: bool,
    actions: std::collections::VecDeque<Action>,
}

impl Mapper {
    /// A mapper that starts at [`Mapper::start`]; `seed` gives the PCP
    /// nonce and retransmission jitter.
    pub fn new(config: MapperConfig, seed: u64) -> Self {
        let mut rng = Rng::new(seed);
        let mut nonce = [0u8; 12];
        nonce.copy_from_slice(&rng.bytes32()[..12]);
        let backoff = config.retry_after;
        Mapper {
            config,
            state: State::Idle,
            rng,
            nonce,
            epoch: Epoch::default(),
            backoff,
            port_5351_closed: false,
            upnp_pending: false,
            actions: Default::default(),
        }
    }

    /// Starts the first round.
    pub fn start(&mut self, now: Time) {
        if self.state == State::Idle {
            self.try_from(now, 0);
        }
    }

    /// The mapping held, if any.
    pub fn mapping(&self) -> Option<&Mapping> {
        match &self.state {
            State::Mapped { mapping, .. } => Some(mapping),
            _ => None,
        }
    }

    /// The protocol being tried, while no mapping is held yet.
    pub fn trying(&self) -> Option<Protocol> {
        match &self.state {
            State::Trying { step, .. } => Some(step.protocol()),
            _ => None,
        }
    }

    /// True once every protocol failed and the mapper waits for its next
    /// round.
    pub fn is_waiting(&self) -> bool {
        matches!(self.state, State::Waiting { .. })
    }

    /// True after shutdown completed: nothing more to send.
    pub fn is_stopped(&self) -> bool {
        self.state == State::Stopped
    }

    /// The next action to carry out.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// When [`Mapper::handle_timeout`] is due (`None`: never).
    pub fn poll_timeout(&self) -> Option<Time> {
        match &self.state {
            State::Idle | State::Stopped => None,
            State::Trying { retry, .. } | State::Removing { retry, .. } => Some(retry.next_at),
            State::Mapped {
                renew_at, renewing, ..
            } => Some(renewing.map_or(*renew_at, |(_, r)| r.next_at)),
            State::Waiting { until } => Some(*until),
        }
    }

    /// Deletes the mapping (if any) and stops; done when
    /// [`Mapper::is_stopped`].
    pub fn shutdown(&mut self, now: Time) {
        match std::mem::replace(&mut self.state, State::Stopped) {
            State::Mapped { mapping, .. } => {
                let mut retry = Retry::first(DELETE, now, &mut self.rng);
                if mapping.protocol == Protocol::Upnp {
                    // One operation, bounded by the UPnP client itself.
                    retry.next_at = now + self.config.upnp_timeout;
                }
                self.send_delete(&mapping);
                self.state = State::Removing { mapping, retry };
            }
            State::Removing { mapping, retry } => self.state = State::Removing { mapping, retry },
            _ => {}
        }
    }

    /// Timers: retransmit, renew, move on, or start a new round.
    pub fn handle_timeout(&mut self, now: Time) {
        if self.poll_timeout().is_none_or(|t| now < t) {
            return;
        }
        match self.state.clone() {
            State::Idle | State::Stopped => {}
            State::Waiting { .. } => self.try_from(now, 0),
            State::Trying {
                index,
                step,
                mut retry,
            } => {
                let probes = match step.protocol() {
                    Protocol::Pcp => self.config.pcp_probes,
                    Protocol::NatPmp => self.config.natpmp_probes,
                    Protocol::Upnp => 1,
                };
                if retry.sent >= probes {
                    self.upnp_pending = false;
                    self.fail(now, index, "no answer from the gateway".into());
                } else {
                    retry.again(now, &mut self.rng);
                    self.send_step(step, None);
                    self.state = State::Trying { index, step, retry };
                }
            }
            State::Mapped {
                mapping,
                renew_at,
                renewing,
            } => {
                if now >= mapping.expires {
                    self.upnp_pending = false;
                    self.actions.push_back(Action::Changed(None));
                    self.try_from(now, 0);
                    return;
                }
                let (step, retry) = match renewing {
                    None => {
                        let step = match mapping.protocol {
                            Protocol::NatPmp => match mapping.external.ip() {
                                IpAddr::V4(ip) => Step::NatPmpMap(ip),
                                IpAddr::V6(_) => Step::NatPmpAddress,
                            },
                            p => Step::first(p),
                        };
                        (step, Retry::first(schedule(step), now, &mut self.rng))
                    }
                    Some((step, mut retry)) => {
                        retry.again(now, &mut self.rng);
                        (step, retry)
                    }
                };
                let mut retry = retry;
                retry.before(now, mapping.expires);
                if !(step == Step::Upnp && self.upnp_pending) {
                    self.send_step(step, Some(&mapping));
                }
                self.state = State::Mapped {
                    mapping,
                    renew_at,
                    renewing: Some((step, retry)),
                };
            }
            State::Removing { mapping, mut retry } => {
                if retry.sent >= self.config.delete_attempts || mapping.protocol == Protocol::Upnp {
                    self.stopped(false);
                } else {
                    retry.again(now, &mut self.rng);
                    self.send_delete(&mapping);
                    self.state = State::Removing { mapping, retry };
                }
            }
        }
    }

    /// A datagram, an ICMP error or a UPnP outcome.
    pub fn handle(&mut self, now: Time, event: Event<'_>) {
        match event {
            Event::Datagram(bytes) => self.on_datagram(now, bytes),
            Event::Unreachable => self.on_unreachable(now),
            Event::Upnp(outcome) => {
                self.upnp_pending = false;
                self.on_upnp(now, outcome);
            }
        }
    }

    fn on_unreachable(&mut self, now: Time) {
        match self.state.clone() {
            State::Trying { index, step, .. } if step.protocol().uses_port_5351() => {
                self.port_5351_closed = true;
                self.fail(
                    now,
                    index,
                    "nothing listens on the gateway's port 5351".into(),
                );
            }
            State::Removing { mapping, .. } if mapping.protocol.uses_port_5351() => {
                self.stopped(false)
            }
            // While renewing, retransmissions go on until the lease ends.
            _ => {}
        }
    }

    fn on_upnp(&mut self, now: Time, outcome: Result<(SocketAddr, Duration), String>) {
        match (self.state.clone(), outcome) {
            (
                State::Trying {
                    step: Step::Upnp, ..
                },
                Ok((external, lifetime)),
            ) => self.mapped(now, Protocol::Upnp, external, lifetime),
            (
                State::Trying {
                    index,
                    step: Step::Upnp,
                    ..
                },
                Err(reason),
            ) => self.fail(now, index, reason),
            (
                State::Mapped {
                    mapping,
                    renewing: Some((Step::Upnp, _)),
                    ..
                },
                Ok((external, lifetime)),
            ) => self.renewed(now, mapping, external, lifetime, false),
            (
                State::Mapped {
                    mapping,
                    renew_at,
                    renewing: Some((Step::Upnp, mut retry)),
                },
                Err(_),
            ) => {
                // Next try after the backoff, still before the end.
                retry.next_at = now + retry_wait(&retry);
                retry.before(now, mapping.expires);
                self.state = State::Mapped {
                    mapping,
                    renew_at,
                    renewing: Some((Step::Upnp, retry)),
                };
            }
            (State::Removing { mapping, .. }, outcome) if mapping.protocol == Protocol::Upnp => {
                self.stopped(outcome.is_ok())
            }
            _ => {}
        }
    }

    fn on_datagram(&mut self, now: Time, bytes: &[u8]) {
        let step = match &self.state {
            State::Trying { step, .. } => *step,
            State::Mapped {
                renewing: Some((step, _)),
                ..
            } => *step,
            State::Removing { mapping, .. } => match mapping.protocol {
                Protocol::Pcp => Step::Pcp,
                Protocol::NatPmp => Step::NatPmpMap(Ipv4Addr::UNSPECIFIED),
                Protocol::Upnp => return,
            },
            _ => return,
        };
        match step {
            Step::Pcp => {
                if let Ok(r) = pcp::decode(bytes) {
                    self.on_pcp(now, r);
                }
            }
            Step::NatPmpAddress | Step::NatPmpMap(_) => {
                if let Ok(r) = natpmp::decode(bytes) {
                    self.on_natpmp(now, step, r);
                }
            }
            Step::Upnp => {}
        }
    }

    fn on_pcp(&mut self, now: Time, r: pcp::Response) {
        let pcp::Response::Map {
            result,
            lifetime,
            epoch,
            nonce,
            internal_port,
            external,
        } = r
        else {
            if let (State::Trying { index, .. }, pcp::Response::UnsupportedVersion { version }) =
                (&self.state, r)
            {
                let reason = format!("the gateway speaks version {version} only");
                self.fail(now, *index, reason);
            }
            return;
        };
        // Not an answer to our request (or a spoof): ignored.
        if nonce.is_some_and(|n| n != self.nonce)
            || (nonce.is_some() && internal_port != self.config.internal.port())
        {
            return;
        }
        let lost = self.epoch.lost_state(Rule::Pcp, epoch, now);
        match self.state.clone() {
            State::Trying { index, .. } => {
                if result != pcp::ResultCode::Success {
                    self.fail(now, index, format!("refused: {result:?}"));
                } else if lifetime == 0 || nonce.is_none() {
                    self.fail(now, index, "granted no lifetime".into());
                } else {
                    self.mapped(now, Protocol::Pcp, external, secs(lifetime));
                }
            }
            // A refusal while renewing is ignored: retransmissions go on
            // until the lease ends.
            State::Mapped { mapping, .. }
                if result == pcp::ResultCode::Success && lifetime > 0 && nonce.is_some() =>
            {
                self.renewed(now, mapping, external, secs(lifetime), lost);
            }
            State::Removing { .. } => self.stopped(result == pcp::ResultCode::Success),
            _ => {}
        }
    }

    fn on_natpmp(&mut self, now: Time, step: Step, r: natpmp::Response) {
        let epoch = match &r {
            natpmp::Response::ExternalAddress { epoch, .. }
            | natpmp::Response::MapTcp { epoch, .. } => Some(*epoch),
            natpmp::Response::Error { .. } => None,
        };
        let lost = epoch.is_some_and(|e| self.epoch.lost_state(Rule::NatPmp, e, now));
        let port = self.config.internal.port();
        match (self.state.clone(), step, r) {
            (State::Trying { index, .. }, _, natpmp::Response::Error { code, .. }) => {
                self.fail(now, index, format!("refused: {code:?}"));
            }
            (
                State::Trying { index, .. },
                Step::NatPmpAddress,
                natpmp::Response::ExternalAddress { ip, .. },
            ) => {
                if ip.is_unspecified() {
                    self.fail(now, index, "the gateway has no external address".into());
                } else {
                    let step = Step::NatPmpMap(ip);
                    let retry = Retry::first(NATPMP, now, &mut self.rng);
                    self.send_step(step, None);
                    self.state = State::Trying { index, step, retry };
                }
            }
            (
                State::Trying { index, .. },
                Step::NatPmpMap(ip),
                natpmp::Response::MapTcp {
                    internal_port,
                    external_port,
                    lifetime,
                    ..
                },
            ) if internal_port == port => {
                if lifetime == 0 || external_port == 0 {
                    self.fail(now, index, "granted no lifetime".into());
                } else {
                    let external = SocketAddr::from((ip, external_port));
                    self.mapped(now, Protocol::NatPmp, external, secs(lifetime));
                }
            }
            (
                State::Mapped { mapping, .. },
                Step::NatPmpMap(ip),
                natpmp::Response::MapTcp {
                    internal_port,
                    external_port,
                    lifetime,
                    ..
                },
            ) if internal_port == port && lifetime > 0 && external_port > 0 => {
                let external = SocketAddr::from((ip, external_port));
                if lost {
                    // The external address may have changed too: ask again.
                    self.actions.push_back(Action::GatewayRestarted);
                    let mut m = mapping;
                    m.external = external;
                    m.lifetime = secs(lifetime);
                    m.renewed_at = now;
                    m.expires = now + m.lifetime;
                    let mut retry = Retry::first(NATPMP, now, &mut self.rng);
                    retry.before(now, m.expires);
                    self.send_step(Step::NatPmpAddress, None);
                    self.state = State::Mapped {
                        mapping: m,
                        renew_at: now + m.lifetime / 2,
                        renewing: Some((Step::NatPmpAddress, retry)),
                    };
                } else {
                    self.renewed(now, mapping, external, secs(lifetime), false);
                }
            }
            (
                State::Mapped {
                    mapping, renew_at, ..
                },
                Step::NatPmpAddress,
                natpmp::Response::ExternalAddress { ip, .. },
            ) if !ip.is_unspecified() => {
                let mut m = mapping;
                m.external = SocketAddr::from((ip, m.external.port()));
                self.actions.push_back(Action::Changed(Some(m)));
                self.state = State::Mapped {
                    mapping: m,
                    renew_at,
                    renewing: None,
                };
            }
            (State::Removing { .. }, _, natpmp::Response::MapTcp { internal_port, .. })
                if internal_port == port =>
            {
                self.stopped(true)
            }
            _ => {}
        }
    }

    /// A first mapping through `protocol`.
    fn mapped(&mut self, now: Time, protocol: Protocol, external: SocketAddr, lifetime: Duration) {
        let mapping = Mapping {
            protocol,
            external,
            lifetime,
            renewed_at: now,
            expires: now + lifetime,
        };
        self.backoff = self.config.retry_after;
        self.actions.push_back(Action::Changed(Some(mapping)));
        self.state = State::Mapped {
            mapping,
            renew_at: now + lifetime / 2,
            renewing: None,
        };
    }

    /// A renewal answered: the lease starts again; a changed address or a
    /// restarted gateway is announced.
    fn renewed(
        &mut self,
        now: Time,
        old: Mapping,
        external: SocketAddr,
        lifetime: Duration,
        restarted: bool,
    ) {
        let mapping = Mapping {
            protocol: old.protocol,
            external,
            lifetime,
            renewed_at: now,
            expires: now + lifetime,
        };
        if restarted {
            self.actions.push_back(Action::GatewayRestarted);
        }
        if restarted || external != old.external {
            self.actions.push_back(Action::Changed(Some(mapping)));
        }
        self.state = State::Mapped {
            mapping,
            renew_at: now + lifetime / 2,
            renewing: None,
        };
    }

    /// `protocols[index]` failed: on to the next one.
    fn fail(&mut self, now: Time, index: usize, reason: String) {
        if let Some(&protocol) = self.config.protocols.get(index) {
            self.actions
                .push_back(Action::Unavailable { protocol, reason });
        }
        self.try_from(now, index + 1);
    }

    /// Tries `protocols[index..]`, skipping what cannot work.
    fn try_from(&mut self, now: Time, index: usize) {
        if index == 0 {
            self.port_5351_closed = false;
        }
        let v6 = self.config.internal.is_ipv6();
        let next = (index..self.config.protocols.len()).find(|&i| {
            let p = self.config.protocols[i];
            // Only PCP opens IPv6 pinholes; a closed port 5351 rules out both.
            let family_ok = !v6 || p == Protocol::Pcp;
            family_ok
                && !(p.uses_port_5351() && self.port_5351_closed)
                && !self.config.protocols[..i].contains(&p)
        });
        let Some(index) = next else {
            let retry_in = self.backoff;
            self.backoff = (self.backoff * 2).min(self.config.retry_max);
            self.actions.push_back(Action::GaveUp { retry_in });
            self.state = State::Waiting {
                until: now + retry_in,
            };
            return;
        };
        let step = Step::first(self.config.protocols[index]);
        let mut retry = Retry::first(schedule(step), now, &mut self.rng);
        if step == Step::Upnp {
            retry.next_at = now + self.config.upnp_timeout;
        }
        self.send_step(step, None);
        self.state = State::Trying { index, step, retry };
    }

    /// Sends the request of `step` (a renewal of `current` if given).
    fn send_step(&mut self, step: Step, current: Option<&Mapping>) {
        let internal = self.config.internal;
        let lifetime = self.config.lifetime;
        let lifetime_secs = lifetime.as_secs().clamp(1, u64::from(u32::MAX)) as u32;
        let action = match step {
            Step::Pcp => Action::Send(
                pcp::MapRequest {
                    nonce: self.nonce,
                    client: internal.ip(),
                    internal_port: internal.port(),
                    // Our port, any address; a renewal repeats what it got.
                    suggested: current.map_or_else(
                        || {
                            let any = pcp::MapRequest::any_external(internal.ip());
                            SocketAddr::new(any.ip(), internal.port())
                        },
                        |m| m.external,
                    ),
                    lifetime: lifetime_secs,
                }
                .encode()
                .to_vec(),
            ),
            Step::NatPmpAddress => Action::Send(natpmp::external_address_request().to_vec()),
            Step::NatPmpMap(_) => {
                let suggested = current.map_or(internal.port(), |m| m.external.port());
                Action::Send(
                    natpmp::map_tcp_request(internal.port(), suggested, lifetime_secs).to_vec(),
                )
            }
            Step::Upnp => {
                self.upnp_pending = true;
                Action::Upnp(match current {
                    None => UpnpOp::Map { internal, lifetime },
                    Some(m) => UpnpOp::Renew {
                        internal,
                        external_port: m.external.port(),
                        lifetime,
                    },
                })
            }
        };
        self.actions.push_back(action);
    }

    fn send_delete(&mut self, m: &Mapping) {
        let internal = self.config.internal;
        let action = match m.protocol {
            Protocol::Pcp => Action::Send(
                pcp::MapRequest {
                    nonce: self.nonce,
                    client: internal.ip(),
                    internal_port: internal.port(),
                    suggested: m.external,
                    lifetime: 0,
                }
                .encode()
                .to_vec(),
            ),
            // RFC 6886 §3.4: lifetime 0 and suggested port 0 delete.
            Protocol::NatPmp => {
                Action::Send(natpmp::map_tcp_request(internal.port(), 0, 0).to_vec())
            }
            Protocol::Upnp => Action::Upnp(UpnpOp::Remove {
                external_port: m.external.port(),
            }),
        };
        self.actions.push_back(action);
        if m.protocol == Protocol::Upnp {
            self.upnp_pending = true;
        }
    }

    fn stopped(&mut self, confirmed: bool) {
        self.upnp_pending = false;
        if let State::Removing { mapping, .. } = &self.state {
            self.actions.push_back(Action::Removed {
                protocol: mapping.protocol,
                confirmed,
            });
        }
        self.state = State::Stopped;
    }
}

fn secs(s: u32) -> Duration {
    Duration::from_secs(u64::from(s))
}

fn schedule(step: Step) -> Schedule {
    match step {
        Step::Pcp => PCP,
        Step::NatPmpAddress | Step::NatPmpMap(_) => NATPMP,
        Step::Upnp => UPNP,
    }
}

/// The wait before the next UPnP renewal attempt after a failed one.
fn retry_wait(retry: &Retry) -> Duration {
    let doublings = retry.sent.saturating_sub(1).min(9);
    (UPNP.initial * (1u32 << doublings)).min(UPNP.max)
}

#[cfg(test)]
#[path = "mapper_tests.rs"]
mod tests;
