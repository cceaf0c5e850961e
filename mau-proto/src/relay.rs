//! Relays, decided without I/O: how a relayed address is written, what a
//! relay admits ([`RelayBook`]), and which reservations an unreachable node
//! holds ([`Reservations`]).
//!
//! A node nobody can dial keeps a *reservation* on a relay: an open
//! mutual-TLS connection to a reachable peer that opted in. Others reach it
//! through the relay, which splices two streams; TLS between the two peers
//! runs end to end inside them. This module holds only the decisions:
//! `mau-net` holds the sockets.
//!
//! **Relayed addresses** are ordinary `host:port` strings (so the routing
//! table, the wire records and the certificate carry them unchanged) whose
//! host ends in `.mau-relay.invalid`: `.invalid` is reserved (RFC 6761) and
//! never resolves, so a peer that does not know the form (the Go
//! implementation) fails to dial it like any dead address and never reaches
//! anyone with it. `mau-net` also leaves them out of find_peer answers to
//! callers that do not announce relay support.
//!
//! ```text
//! <relay fingerprint, 1 label (v4) or 2 (v6)>.<relay host>.mau-relay.invalid:<relay port>
//! ```
//!
//! The relay host is its IPv4 address or DNS name as is, or an IPv6 address
//! written `ip6-` followed by its text with `:` replaced by `-`.

use core::net::{IpAddr, Ipv6Addr};
use std::collections::BTreeMap;
use std::time::Duration;

use crate::fingerprint::Fingerprint;
use crate::routing_table::Contact;
use crate::subnet::LimitScope;
use crate::time::Time;
use crate::wire::PeerAddress;

/// The suffix that marks a relayed address's host.
pub const RELAYED_SUFFIX: &str = ".mau-relay.invalid";

/// The address under which the holder of a reservation on `relay` is
/// reached; `None` if it would not be a valid `host:port` (a relay behind a
/// DNS name too long to carry).
pub fn relayed_address(relay: &Contact<PeerAddress>) -> Option<PeerAddress> {
    let fp = relay.fingerprint.to_string();
    let fp = if fp.len() > 63 {
        let (a, b) = fp.split_at(fp.len() / 2);
        format!("{a}.{b}")
    } else {
        fp
    };
    let host = relay.address.host();
    let host = match host.parse::<Ipv6Addr>() {
        Ok(v6) => format!("ip6-{}", v6.to_string().replace(':', "-")),
        Err(_) => host.to_owned(),
    };
    let port = relay.address.port();
    PeerAddress::parse(&format!("{fp}.{host}{RELAYED_SUFFIX}:{port}")).ok()
}

/// The relay a relayed address goes through (`None`: a direct address).
pub fn relay_of(address: &PeerAddress) -> Option<Contact<PeerAddress>> {
    let rest = address.host().strip_suffix(RELAYED_SUFFIX)?;
    let (first, rest) = rest.split_once('.')?;
    let (fp, host) = match Fingerprint::parse(first) {
        Ok(fp) => (fp, rest),
        Err(_) => {
            let (second, host) = rest.split_once('.')?;
            (Fingerprint::parse(&format!("{first}{second}")).ok()?, host)
        }
    };
    let host = match host.strip_prefix("ip6-") {
        Some(v6) => {
            let ip = v6.replace('-', ":").parse::<Ipv6Addr>().ok()?;
            format!("[{ip}]")
        }
        None => host.to_owned(),
    };
    let relay = PeerAddress::parse(&format!("{host}:{}", address.port())).ok()?;
    // A relayed address never names a relay that is itself relayed.
    if relay.host().ends_with(RELAYED_SUFFIX) {
        return None;
    }
    Some(Contact::new(fp, relay))
}

/// One host for the per-IP limit: an IPv4 address, or an IPv6 /64.
fn ip_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let mut o = v6.octets();
            o[8..].fill(0);
            IpAddr::V6(Ipv6Addr::from(o))
        }
        v4 => v4,
    }
}

/// True if `address` is a relayed address.
pub fn is_relayed(address: &PeerAddress) -> bool {
    relay_of(address).is_some()
}

/// What a relay admits. Every figure is a hard bound; a request over one is
/// refused with a [`Refusal`] naming it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RelayLimits {
    /// Reservations held at once (one per fingerprint).
    pub max_reservations: usize,
    /// Reservations held at once from one source IP (IPv6 by /64), among
    /// the sources [`RelayLimits::per_ip_scope`] counts: throwaway
    /// identities from one host cannot take every slot.
    pub max_reservations_per_ip: usize,
    /// Which sources `max_reservations_per_ip` counts.
    pub per_ip_scope: LimitScope,
    /// How long a reservation lasts unless renewed.
    pub reservation_ttl: Duration,
    /// Relayed streams at once in total.
    pub max_streams: usize,
    /// Relayed streams at once in which one peer (as caller or target) takes part.
    pub max_streams_per_peer: usize,
    /// Bytes a relayed stream carries (both directions together) before
    /// the relay closes it.
    pub max_stream_bytes: u64,
    /// How long a relayed stream lasts before the relay closes it.
    pub max_stream_duration: Duration,
    /// How long a caller waits for the target to take its stream.
    pub accept_timeout: Duration,
}

impl Default for RelayLimits {
    fn default() -> Self {
        RelayLimits {
            max_reservations: 128,
            max_reservations_per_ip: 8,
            per_ip_scope: LimitScope::AllButLoopback,
            reservation_ttl: Duration::from_secs(600),
            max_streams: 512,
            max_streams_per_peer: 64,
            max_stream_bytes: 64 * 1024 * 1024,
            max_stream_duration: Duration::from_secs(600),
            accept_timeout: Duration::from_secs(5),
        }
    }
}

/// Why a relay refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The relay holds `max_reservations`.
    #[error("relay full: no more reservations")]
    Reservations,
    /// The source IP holds `max_reservations_per_ip`.
    #[error("too many reservations from this address")]
    ReservationsPerIp,
    /// The target holds no reservation here.
    #[error("no reservation for this peer")]
    NoReservation,
    /// The relay carries `max_streams`.
    #[error("relay full: no more streams")]
    Streams,
    /// The caller or the target takes part in `max_streams_per_peer`.
    #[error("too many relayed streams for this peer")]
    StreamsPerPeer,
    /// A peer asked to be relayed to itself.
    #[error("cannot relay a peer to itself")]
    SelfRelay,
}

impl Refusal {
    /// A short name for metrics labels.
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::Reservations => "relay_reservations",
            Refusal::ReservationsPerIp => "relay_reservations_per_ip",
            Refusal::NoReservation => "relay_no_reservation",
            Refusal::Streams => "relay_streams",
            Refusal::StreamsPerPeer => "relay_streams_per_peer",
            Refusal::SelfRelay => "relay_self",
        }
    }
}

#[derive(Clone, Debug)]
struct Held {
    ip: Option<IpAddr>,
    expires: Time,
}

/// A relay's bookkeeping: who holds a reservation, which streams run.
#[derive(Debug)]
pub struct RelayBook {
    limits: RelayLimits,
    reservations: BTreeMap<Fingerprint, Held>,
    per_ip: BTreeMap<IpAddr, usize>,
    streams_per_peer: BTreeMap<Fingerprint, usize>,
    streams: usize,
}

impl RelayBook {
    /// An empty book with `limits`.
    pub fn new(limits: RelayLimits) -> Self {
        RelayBook {
            limits,
            reservations: BTreeMap::new(),
            per_ip: BTreeMap::new(),
            streams_per_peer: BTreeMap::new(),
            streams: 0,
        }
    }

    /// The limits.
    pub fn limits(&self) -> &RelayLimits {
        &self.limits
    }

    /// Reservations held.
    pub fn reservations(&self) -> usize {
        self.reservations.len()
    }

    /// Streams relayed now.
    pub fn streams(&self) -> usize {
        self.streams
    }

    /// True if `fp` holds a live reservation.
    pub fn is_reserved(&self, now: Time, fp: &Fingerprint) -> bool {
        self.reservations.get(fp).is_some_and(|h| h.expires > now)
    }

    /// `fp` (connecting from `source`) asks for, or renews, a reservation;
    /// on success, until when it holds.
    pub fn reserve(&mut self, now: Time, fp: Fingerprint, source: IpAddr) -> Result<Time, Refusal> {
        self.expire(now);
        let expires = now + self.limits.reservation_ttl;
        if let Some(h) = self.reservations.get_mut(&fp) {
            h.expires = expires;
            return Ok(expires);
        }
        if self.reservations.len() >= self.limits.max_reservations {
            return Err(Refusal::Reservations);
        }
        let ip = self
            .limits
            .per_ip_scope
            .counts(source)
            .then(|| ip_key(source));
        if let Some(ip) = ip {
            if self.per_ip.get(&ip).copied().unwrap_or(0) >= self.limits.max_reservations_per_ip {
                return Err(Refusal::ReservationsPerIp);
            }
            *self.per_ip.entry(ip).or_default() += 1;
        }
        self.reservations.insert(fp, Held { ip, expires });
        Ok(expires)
    }

    /// `fp`'s reservation ends (its connection closed).
    pub fn release(&mut self, fp: &Fingerprint) {
        if let Some(h) = self.reservations.remove(fp) {
            if let Some(ip) = h.ip {
                if let Some(n) = self.per_ip.get_mut(&ip) {
                    *n -= 1;
                    if *n == 0 {
                        self.per_ip.remove(&ip);
                    }
                }
            }
        }
    }

    /// Drops reservations not renewed in time; returns who lost theirs.
    pub fn expire(&mut self, now: Time) -> Vec<Fingerprint> {
        let gone: Vec<Fingerprint> = self
            .reservations
            .iter()
            .filter(|(_, h)| h.expires <= now)
            .map(|(fp, _)| *fp)
            .collect();
        for fp in &gone {
            self.release(fp);
        }
        gone
    }

    /// `caller` asks for a stream to `target`: admitted (counted until
    /// [`Self::close_stream`]) or refused.
    pub fn open_stream(
        &mut self,
        now: Time,
        caller: Fingerprint,
        target: Fingerprint,
    ) -> Result<(), Refusal> {
        if caller == target {
            return Err(Refusal::SelfRelay);
        }
        if !self.is_reserved(now, &target) {
            return Err(Refusal::NoReservation);
        }
        if self.streams >= self.limits.max_streams {
            return Err(Refusal::Streams);
        }
        let per = |fp| self.streams_per_peer.get(fp).copied().unwrap_or(0);
        if per(&caller) >= self.limits.max_streams_per_peer
            || per(&target) >= self.limits.max_streams_per_peer
        {
            return Err(Refusal::StreamsPerPeer);
        }
        self.streams += 1;
        for fp in [caller, target] {
            *self.streams_per_peer.entry(fp).or_default() += 1;
        }
        Ok(())
    }

    /// A stream admitted by [`Self::open_stream`] ended.
    pub fn close_stream(&mut self, caller: Fingerprint, target: Fingerprint) {
        self.streams = self.streams.saturating_sub(1);
        for fp in [caller, target] {
            if let Some(n) = self.streams_per_peer.get_mut(&fp) {
                *n -= 1;
                if *n == 0 {
                    self.streams_per_peer.remove(&fp);
                }
            }
        }
    }
}

/// What the holder of reservations must do next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReservationCommand {
    /// Open a reservation on this relay (connect, reserve, keep the connection).
    Reserve(Contact<PeerAddress>),
    /// Renew the reservation held on this relay (over its open connection).
    Renew(Contact<PeerAddress>),
    /// Close the reservation on this relay (it expired unrenewed).
    Close(Contact<PeerAddress>),
}

/// Parameters of [`Reservations`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReservationConfig {
    /// Reservations held at once (the first relays of the list that work).
    pub want: usize,
    /// First wait after a relay failed; doubles with each failure in a row.
    pub backoff: Duration,
    /// Longest wait after failures.
    pub max_backoff: Duration,
    /// How long a reserve or renew may take before it counts as failed.
    pub request_timeout: Duration,
}

impl Default for ReservationConfig {
    fn default() -> Self {
        ReservationConfig {
            want: 2,
            backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(120),
            request_timeout: Duration::from_secs(10),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Slot {
    /// Not in use; may be tried from `at` on.
    Idle { at: Time },
    /// A reserve was asked for at `since`.
    Reserving { since: Time },
    /// Held until `expires`; renewed from `renew_at` on.
    Held {
        expires: Time,
        renew_at: Time,
        renewing: bool,
    },
}

/// The reservations an unreachable node keeps: which relays to reserve on,
/// when to renew, when a reservation is lost and another relay must take
/// over. Events with the time in, [`ReservationCommand`]s out.
///
/// Relays are tried in the order given; at most [`ReservationConfig::want`]
/// are held or being asked at once. A relay that fails waits a doubling
/// backoff while the next one in the list takes its place.
#[derive(Debug)]
pub struct Reservations {
    config: ReservationConfig,
    relays: Vec<(Contact<PeerAddress>, Slot, u32)>,
    out: Vec<ReservationCommand>,
}

impl Reservations {
    /// Reservations to keep on (some of) `relays`.
    pub fn new(config: ReservationConfig, relays: Vec<Contact<PeerAddress>>, now: Time) -> Self {
        let mut r = Reservations {
            config,
            relays: relays
                .into_iter()
                .map(|c| (c, Slot::Idle { at: now }, 0))
                .collect(),
            out: Vec::new(),
        };
        r.fill(now);
        r
    }

    /// Keeps reservations on `relays` from now on, in this order (the
    /// relays chosen by [`crate::advertise::RelayChoice`]): one no longer
    /// listed is closed, a new one waits its turn, the others keep their
    /// state.
    pub fn set_relays(&mut self, now: Time, relays: Vec<Contact<PeerAddress>>) {
        let mut old = std::mem::take(&mut self.relays);
        for (c, s, _) in &old {
            let listed = relays.iter().any(|r| r.fingerprint == c.fingerprint);
            if !listed && !matches!(s, Slot::Idle { .. }) {
                self.out.push(ReservationCommand::Close(c.clone()));
            }
        }
        self.relays = relays
            .into_iter()
            .map(|c| {
                match old
                    .iter()
                    .position(|(o, _, _)| o.fingerprint == c.fingerprint)
                {
                    Some(i) => {
                        let (_, s, f) = old.swap_remove(i);
                        (c, s, f)
                    }
                    None => (c, Slot::Idle { at: now }, 0),
                }
            })
            .collect();
        self.fill(now);
    }

    /// True if `relay` is one of the relays to keep reservations on.
    pub fn is_listed(&self, relay: &Fingerprint) -> bool {
        self.index(relay).is_some()
    }

    fn index(&self, relay: &Fingerprint) -> Option<usize> {
        self.relays
            .iter()
            .position(|(c, _, _)| c.fingerprint == *relay)
    }

    /// Relays on which a reservation is held now.
    pub fn held(&self, now: Time) -> Vec<Contact<PeerAddress>> {
        self.relays
            .iter()
            .filter(|(_, s, _)| matches!(s, Slot::Held { expires, .. } if *expires > now))
            .map(|(c, _, _)| c.clone())
            .collect()
    }

    fn active(&self) -> usize {
        self.relays
            .iter()
            .filter(|(_, s, _)| !matches!(s, Slot::Idle { .. }))
            .count()
    }

    /// Starts reserves until `want` are held or asked, in list order.
    fn fill(&mut self, now: Time) {
        for i in 0..self.relays.len() {
            if self.active() >= self.config.want {
                break;
            }
            if let Slot::Idle { at } = self.relays[i].1 {
                if at <= now {
                    self.relays[i].1 = Slot::Reserving { since: now };
                    self.out
                        .push(ReservationCommand::Reserve(self.relays[i].0.clone()));
                }
            }
        }
    }

    fn failed(&mut self, now: Time, i: usize) {
        let fails = self.relays[i].2.saturating_add(1);
        let wait = self
            .config
            .backoff
            .saturating_mul(1u32 << (fails - 1).min(16))
            .min(self.config.max_backoff);
        self.relays[i].1 = Slot::Idle { at: now + wait };
        self.relays[i].2 = fails;
        self.fill(now);
    }

    /// The relay granted (or renewed) a reservation lasting `ttl`.
    pub fn on_reserved(&mut self, now: Time, relay: &Fingerprint, ttl: Duration) {
        let Some(i) = self.index(relay) else { return };
        if !matches!(self.relays[i].1, Slot::Reserving { .. } | Slot::Held { .. }) {
            return;
        }
        self.relays[i].1 = Slot::Held {
            expires: now + ttl,
            renew_at: now + ttl / 2,
            renewing: false,
        };
        self.relays[i].2 = 0;
    }

    /// The relay refused, could not be reached, or the reservation's
    /// connection closed: another relay takes over, this one waits.
    pub fn on_failed(&mut self, now: Time, relay: &Fingerprint) {
        let Some(i) = self.index(relay) else { return };
        if matches!(self.relays[i].1, Slot::Idle { .. }) {
            return;
        }
        self.failed(now, i);
    }

    /// Moves time on: renewals due, reserves or renewals that took too
    /// long, backoffs that ended.
    pub fn handle_timeout(&mut self, now: Time) {
        for i in 0..self.relays.len() {
            match self.relays[i].1 {
                Slot::Reserving { since } if now >= since + self.config.request_timeout => {
                    self.failed(now, i);
                }
                Slot::Held { expires, .. } if now >= expires => {
                    self.out
                        .push(ReservationCommand::Close(self.relays[i].0.clone()));
                    self.failed(now, i);
                }
                Slot::Held {
                    expires,
                    renew_at,
                    renewing: false,
                } if now >= renew_at => {
                    self.relays[i].1 = Slot::Held {
                        expires,
                        renew_at,
                        renewing: true,
                    };
                    self.out
                        .push(ReservationCommand::Renew(self.relays[i].0.clone()));
                }
                _ => {}
            }
        }
        self.fill(now);
    }

    /// The next command, if any.
    pub fn poll_command(&mut self) -> Option<ReservationCommand> {
        if self.out.is_empty() {
            None
        } else {
            Some(self.out.remove(0))
        }
    }

    /// When [`Self::handle_timeout`] must be called next.
    pub fn poll_timeout(&self) -> Option<Time> {
        let want_more = self.active() < self.config.want;
        self.relays
            .iter()
            .filter_map(|(_, s, _)| match *s {
                Slot::Idle { at } if want_more => Some(at),
                Slot::Idle { .. } => None,
                Slot::Reserving { since } => Some(since + self.config.request_timeout),
                Slot::Held {
                    expires,
                    renewing: true,
                    ..
                } => Some(expires),
                Slot::Held { renew_at, .. } => Some(renew_at),
            })
            .min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn fp(n: u8) -> Fingerprint {
        Fingerprint::parse(&format!("{n:02x}").repeat(20)).unwrap()
    }

    fn relay(n: u8) -> Contact<PeerAddress> {
        Contact::new(
            fp(n),
            PeerAddress::parse(&format!("10.0.0.{n}:8080")).unwrap(),
        )
    }

    #[test]
    fn set_relays_closes_the_dropped_and_keeps_the_held() {
        let cfg = ReservationConfig {
            want: 1,
            ..ReservationConfig::default()
        };
        let t0 = Time::ZERO;
        let mut r = Reservations::new(cfg, vec![], t0);
        assert_eq!(r.poll_command(), None);
        r.set_relays(t0, vec![relay(1), relay(2)]);
        assert_eq!(
            r.poll_command(),
            Some(ReservationCommand::Reserve(relay(1)))
        );
        assert_eq!(r.poll_command(), None);
        r.on_reserved(t0, &fp(1), Duration::from_secs(60));
        // Reordered: the held one is kept, nothing new asked (want = 1).
        r.set_relays(t0, vec![relay(2), relay(1)]);
        assert_eq!(r.poll_command(), None);
        assert_eq!(r.held(t0), vec![relay(1)]);
        // Dropped: closed, and the next one asked.
        r.set_relays(t0, vec![relay(2)]);
        assert_eq!(r.poll_command(), Some(ReservationCommand::Close(relay(1))));
        assert_eq!(
            r.poll_command(),
            Some(ReservationCommand::Reserve(relay(2)))
        );
        assert!(!r.is_listed(&fp(1)));
        // None needed any more.
        r.on_reserved(t0, &fp(2), Duration::from_secs(60));
        r.set_relays(t0, vec![]);
        assert_eq!(r.poll_command(), Some(ReservationCommand::Close(relay(2))));
        assert!(r.held(t0).is_empty());
        assert_eq!(r.poll_timeout(), None);
    }

    #[test]
    fn relayed_addresses_round_trip() {
        for addr in ["10.1.2.3:8080", "[2001:db8::1]:443", "relay.example.org:1"] {
            let r = Contact::new(fp(7), PeerAddress::parse(addr).unwrap());
            let a = relayed_address(&r).unwrap();
            assert!(a.host().ends_with(RELAYED_SUFFIX), "{a}");
            assert_eq!(relay_of(&a), Some(r));
        }
        let v6 = Fingerprint::parse(&"ab".repeat(32)).unwrap();
        let r = Contact::new(v6, PeerAddress::parse("10.0.0.1:9").unwrap());
        let a = relayed_address(&r).unwrap();
        assert!(a.host().split('.').all(|l| l.len() <= 63));
        assert_eq!(relay_of(&a), Some(r));
        assert_eq!(relay_of(&PeerAddress::parse("10.0.0.1:9").unwrap()), None);
        assert_eq!(
            relay_of(&PeerAddress::parse("x.mau-relay.invalid:9").unwrap()),
            None
        );
    }

    #[test]
    fn book_bounds_reservations_per_ip_and_total() {
        let limits = RelayLimits {
            max_reservations: 3,
            max_reservations_per_ip: 2,
            per_ip_scope: LimitScope::All,
            ..RelayLimits::default()
        };
        let mut b = RelayBook::new(limits);
        let (a, c) = ("127.0.0.9".parse().unwrap(), "127.0.0.2".parse().unwrap());
        let now = Time(0);
        assert!(b.reserve(now, fp(1), a).is_ok());
        assert!(b.reserve(now, fp(2), a).is_ok());
        assert_eq!(b.reserve(now, fp(3), a), Err(Refusal::ReservationsPerIp));
        // Renewing one's own is not a new slot.
        assert!(b.reserve(now, fp(1), a).is_ok());
        assert!(b.reserve(now, fp(4), c).is_ok());
        assert_eq!(b.reserve(now, fp(5), c), Err(Refusal::Reservations));
        b.release(&fp(1));
        assert!(b.reserve(now, fp(3), a).is_ok());
        // Unrenewed reservations expire.
        let later = now + b.limits().reservation_ttl;
        assert_eq!(b.expire(later).len(), 3);
        assert_eq!(b.reservations(), 0);
    }

    #[test]
    fn book_bounds_streams() {
        let limits = RelayLimits {
            max_streams: 3,
            max_streams_per_peer: 2,
            ..RelayLimits::default()
        };
        let mut b = RelayBook::new(limits);
        let now = Time(0);
        let ip = "10.0.0.1".parse().unwrap();
        assert_eq!(
            b.open_stream(now, fp(1), fp(2)),
            Err(Refusal::NoReservation)
        );
        b.reserve(now, fp(2), ip).unwrap();
        b.reserve(now, fp(3), ip).unwrap();
        assert_eq!(b.open_stream(now, fp(2), fp(2)), Err(Refusal::SelfRelay));
        assert!(b.open_stream(now, fp(1), fp(2)).is_ok());
        assert!(b.open_stream(now, fp(1), fp(2)).is_ok());
        assert_eq!(
            b.open_stream(now, fp(1), fp(3)),
            Err(Refusal::StreamsPerPeer)
        );
        assert_eq!(
            b.open_stream(now, fp(4), fp(2)),
            Err(Refusal::StreamsPerPeer)
        );
        assert!(b.open_stream(now, fp(4), fp(3)).is_ok());
        assert_eq!(b.open_stream(now, fp(5), fp(3)), Err(Refusal::Streams));
        b.close_stream(fp(1), fp(2));
        assert!(b.open_stream(now, fp(5), fp(3)).is_ok());
    }

    fn drain(r: &mut Reservations) -> Vec<ReservationCommand> {
        std::iter::from_fn(|| r.poll_command()).collect()
    }

    #[test]
    fn reserves_renews_and_fails_over() {
        let cfg = ReservationConfig {
            want: 1,
            ..ReservationConfig::default()
        };
        let mut r = Reservations::new(cfg, vec![relay(1), relay(2)], Time(0));
        assert_eq!(drain(&mut r), vec![ReservationCommand::Reserve(relay(1))]);
        r.on_reserved(Time(100), &fp(1), Duration::from_secs(60));
        assert_eq!(r.held(Time(100)), vec![relay(1)]);
        assert_eq!(r.poll_timeout(), Some(Time(30_100)));
        r.handle_timeout(Time(30_100));
        assert_eq!(drain(&mut r), vec![ReservationCommand::Renew(relay(1))]);
        r.on_reserved(Time(30_200), &fp(1), Duration::from_secs(60));
        // The connection drops: relay 2 takes over at once, relay 1 waits.
        r.on_failed(Time(40_000), &fp(1));
        assert_eq!(drain(&mut r), vec![ReservationCommand::Reserve(relay(2))]);
        r.on_failed(Time(40_100), &fp(2));
        // Both failed: the first retries after its backoff.
        r.handle_timeout(Time(41_000));
        assert_eq!(drain(&mut r), vec![ReservationCommand::Reserve(relay(1))]);
    }

    #[test]
    fn unrenewed_reservation_expires_and_is_closed() {
        let mut r = Reservations::new(ReservationConfig::default(), vec![relay(1)], Time(0));
        drain(&mut r);
        r.on_reserved(Time(0), &fp(1), Duration::from_secs(10));
        r.handle_timeout(Time(5_000));
        assert_eq!(drain(&mut r), vec![ReservationCommand::Renew(relay(1))]);
        assert_eq!(r.poll_timeout(), Some(Time(10_000)));
        r.handle_timeout(Time(10_000));
        assert_eq!(drain(&mut r), vec![ReservationCommand::Close(relay(1))]);
        assert!(r.held(Time(10_000)).is_empty());
    }

    #[derive(Clone, Debug)]
    enum Ev {
        Granted(u8, u16),
        Failed(u8),
        Tick(u16),
    }

    fn ev() -> impl Strategy<Value = Ev> {
        prop_oneof![
            (0u8..5, 1u16..600).prop_map(|(r, t)| Ev::Granted(r, t)),
            (0u8..5).prop_map(Ev::Failed),
            (0u16..5000).prop_map(Ev::Tick),
        ]
    }

    proptest! {
        /// Whatever happens, no more than `want` reservations are held or
        /// asked at once, a held one is always renewed before it expires or
        /// closed at expiry, and the machine always has a next deadline
        /// while it wants more than it holds.
        #[test]
        fn reservations_stay_bounded(evs in proptest::collection::vec(ev(), 1..200), want in 1usize..4) {
            let relays: Vec<_> = (0..5).map(relay).collect();
            let cfg = ReservationConfig { want, ..ReservationConfig::default() };
            let mut now = Time(0);
            let mut r = Reservations::new(cfg, relays, now);
            let mut asked = std::collections::BTreeSet::new();
            for e in evs {
                match e {
                    Ev::Granted(i, ttl) if asked.contains(&i) => r.on_reserved(now, &fp(i), Duration::from_secs(ttl.into())),
                    Ev::Granted(..) => {}
                    Ev::Failed(i) => { asked.remove(&i); r.on_failed(now, &fp(i)) }
                    Ev::Tick(ms) => {
                        now = now + Duration::from_millis(ms.into());
                        if let Some(t) = r.poll_timeout() {
                            if t <= now { r.handle_timeout(now); }
                        }
                    }
                }
                for c in drain(&mut r) {
                    match c {
                        ReservationCommand::Reserve(c) | ReservationCommand::Renew(c) => {
                            asked.insert(c.fingerprint.as_bytes()[0]);
                        }
                        ReservationCommand::Close(c) => { asked.remove(&c.fingerprint.as_bytes()[0]); }
                    }
                }
                prop_assert!(r.active() <= want);
                prop_assert!(r.held(now).len() <= want);
                if r.active() < want { prop_assert!(r.poll_timeout().is_some()); }
            }
        }
    }
}
