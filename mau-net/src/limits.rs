//! Bookkeeping of the server's resource limits: connections per source IP,
//! requests in flight per peer, one connection's deadlines, and a throttle
//! for the warnings they log. (The request rate per peer is
//! [`mau_proto::ratelimit::KeyedLimiter`], the one token bucket.)
//!
//! The per-IP cap exempts loopback sources by default (a devnet on one
//! machine is not one host); its scope says which: see [`per_ip_key`].
//!
//! Pure data structures: the caller passes the time in, so they are tested
//! without clocks or sockets. `server.rs` holds them and applies them.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::lock::lock;
use mau_proto::LimitScope;

/// The key connections are counted under: an IPv4 address as is (loopback
/// too, so 127.0.0.2 is not 127.0.0.1), an IPv6 address by its /64 (one
/// subscriber usually holds a whole /64). IPv4-mapped IPv6 counts as IPv4.
pub(crate) fn ip_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) if !v6.is_loopback() => {
            let s = v6.segments();
            IpAddr::from([s[0], s[1], s[2], s[3], 0, 0, 0, 0])
        }
        other => other,
    }
}

/// The key a connection from `ip` counts under for the per-IP cap, or
/// `None` if `scope` exempts it ([`LimitScope::counts`]; the default,
/// [`LimitScope::AllButLoopback`], exempts only loopback). The total
/// connection cap applies either way.
pub(crate) fn per_ip_key(ip: IpAddr, scope: LimitScope) -> Option<IpAddr> {
    let ip = ip.to_canonical();
    scope.counts(ip).then(|| ip_key(ip))
}

/// Counts holders per key with a cap per key. An entry lives only while
/// someone holds it, so the map is never larger than what is held.
pub(crate) struct Counter<K: Eq + Hash + Clone> {
    held: Arc<Mutex<HashMap<K, usize>>>,
}

/// One unit of a [`Counter`], given back on drop.
pub(crate) struct Held<K: Eq + Hash + Clone> {
    held: Arc<Mutex<HashMap<K, usize>>>,
    key: K,
}

impl<K: Eq + Hash + Clone> Counter<K> {
    pub(crate) fn new() -> Self {
        Counter {
            held: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// One more for `key`, unless `max` are held already.
    pub(crate) fn try_acquire(&self, key: &K, max: usize) -> Option<Held<K>> {
        let mut held = lock(&self.held);
        let n = held.entry(key.clone()).or_insert(0);
        if *n >= max {
            if *n == 0 {
                held.remove(key);
            }
            return None;
        }
        *n += 1;
        Some(Held {
            held: self.held.clone(),
            key: key.clone(),
        })
    }

    /// Keys with at least one holder.
    #[cfg(test)]
    fn keys(&self) -> usize {
        lock(&self.held).len()
    }
}

impl<K: Eq + Hash + Clone> Drop for Held<K> {
    fn drop(&mut self) {
        let mut held = lock(&self.held);
        if let Some(n) = held.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                held.remove(&self.key);
            }
        }
    }
}

/// At most one log line per key per `every`; the lines suppressed in
/// between are counted and reported with the next one. Bounded: when
/// `capacity` keys are remembered, stale ones are forgotten, and if none is
/// stale a new key is suppressed (and counted) instead.
pub(crate) struct LogThrottle<K: Eq + Hash + Clone> {
    every: Duration,
    capacity: usize,
    last: HashMap<K, (Instant, u64)>,
    /// Suppressed because the map was full; reported with the next line.
    overflow: u64,
}

impl<K: Eq + Hash + Clone> LogThrottle<K> {
    pub(crate) fn new(every: Duration, capacity: usize) -> Self {
        LogThrottle {
            every,
            capacity: capacity.max(1),
            last: HashMap::new(),
            overflow: 0,
        }
    }

    /// `Some(suppressed)` if a line for `key` may be logged now (with how
    /// many were suppressed since the last one), `None` if not.
    pub(crate) fn allow(&mut self, key: &K, now: Instant) -> Option<u64> {
        if let Some((at, suppressed)) = self.last.get_mut(key) {
            if now.saturating_duration_since(*at) < self.every {
                *suppressed += 1;
                return None;
            }
            let n = std::mem::take(suppressed) + std::mem::take(&mut self.overflow);
            *at = now;
            return Some(n);
        }
        if self.last.len() >= self.capacity {
            let every = self.every;
            let mut dropped = 0;
            self.last.retain(|_, (at, s)| {
                let keep = now.saturating_duration_since(*at) < every;
                if !keep {
                    dropped += *s;
                }
                keep
            });
            self.overflow += dropped;
            if self.last.len() >= self.capacity {
                self.overflow += 1;
                return None;
            }
        }
        self.last.insert(key.clone(), (now, 0));
        Some(std::mem::take(&mut self.overflow))
    }
}

/// Why a connection's deadline passed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Expiry {
    /// A request head was started (or the first one awaited) and did not
    /// complete in time: a slow or silent client.
    Header,
    /// No request on a keep-alive connection for the idle timeout.
    Idle,
    /// The peer took no byte of an answer for the send timeout.
    Send,
}

/// The deadlines of one HTTP connection. While a request is being answered
/// there is none; between requests the idle timeout runs; once bytes of a
/// new request arrive (or right after the handshake, for the first one) the
/// head must be complete within the header timeout.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ConnClock {
    busy: bool,
    since: Instant,
    head_started: bool,
    /// Set when a deadline passed (the connection is then closed).
    pub(crate) expired: Option<Expiry>,
}

impl ConnClock {
    /// A connection that just finished its handshake: its first request
    /// is due within the header timeout.
    pub(crate) fn new(now: Instant) -> Self {
        ConnClock {
            busy: false,
            since: now,
            head_started: true,
            expired: None,
        }
    }

    /// Request bytes arrived.
    pub(crate) fn on_read(&mut self, now: Instant) {
        if !self.busy && !self.head_started {
            self.head_started = true;
            self.since = now;
        }
    }

    /// A complete request head was handed to the service.
    pub(crate) fn request_started(&mut self) {
        self.busy = true;
    }

    /// The answer was sent (or dropped): the connection is idle again.
    pub(crate) fn request_finished(&mut self, now: Instant) {
        self.busy = false;
        self.head_started = false;
        self.since = now;
    }

    /// When the connection expires, and why; `None` while busy.
    pub(crate) fn deadline(&self, header: Duration, idle: Duration) -> Option<(Instant, Expiry)> {
        if self.busy {
            None
        } else if self.head_started {
            Some((self.since + header, Expiry::Header))
        } else {
            Some((self.since + idle, Expiry::Idle))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ip_keys() {
        let k = |s: &str| ip_key(s.parse().unwrap()).to_string();
        assert_eq!(k("127.0.0.2"), "127.0.0.2");
        assert_ne!(k("127.0.0.1"), k("127.0.0.2"));
        assert_eq!(k("::1"), "::1");
        assert_eq!(k("::ffff:10.0.0.1"), "10.0.0.1");
        assert_eq!(k("2001:db8:1:2:aaaa::1"), "2001:db8:1:2::");
        assert_eq!(k("2001:db8:1:2:bbbb::9"), k("2001:db8:1:2:aaaa::1"));
    }

    #[test]
    fn per_ip_scope_exempts_non_public_sources_unless_all() {
        let k = |s: &str, scope| per_ip_key(s.parse().unwrap(), scope).map(|k| k.to_string());
        for exempt in [
            "127.0.0.1",
            "127.0.0.2",
            "::1",
            "::ffff:127.0.0.1",
            "10.1.2.3",
            "192.168.1.9",
        ] {
            assert_eq!(k(exempt, LimitScope::PublicOnly), None, "{exempt}");
        }
        assert_eq!(
            k("127.0.0.2", LimitScope::All).as_deref(),
            Some("127.0.0.2")
        );
        assert_eq!(
            k("::ffff:127.0.0.1", LimitScope::All).as_deref(),
            Some("127.0.0.1")
        );
        assert_eq!(k("::1", LimitScope::All).as_deref(), Some("::1"));
        assert_eq!(k("10.1.2.3", LimitScope::All).as_deref(), Some("10.1.2.3"));
        for loopback in ["127.0.0.1", "127.0.0.2", "::1", "::ffff:127.0.0.1"] {
            assert_eq!(k(loopback, LimitScope::AllButLoopback), None, "{loopback}");
        }
        assert_eq!(
            k("192.168.1.9", LimitScope::AllButLoopback).as_deref(),
            Some("192.168.1.9")
        );
        for scope in [
            LimitScope::PublicOnly,
            LimitScope::AllButLoopback,
            LimitScope::All,
        ] {
            assert_eq!(k("8.8.8.8", scope).as_deref(), Some("8.8.8.8"));
            assert_eq!(k("::ffff:8.8.4.4", scope).as_deref(), Some("8.8.4.4"));
            assert_eq!(
                k("2a00:1450:1:2:aaaa::1", scope).as_deref(),
                Some("2a00:1450:1:2::")
            );
        }
    }

    #[test]
    fn counter_caps_per_key_and_forgets_released_keys() {
        let c = Counter::new();
        let a1 = c.try_acquire(&"a", 2).unwrap();
        let a2 = c.try_acquire(&"a", 2).unwrap();
        assert!(c.try_acquire(&"a", 2).is_none());
        let b = c.try_acquire(&"b", 2).unwrap();
        assert_eq!(c.keys(), 2);
        drop(a1);
        let a3 = c.try_acquire(&"a", 2).unwrap();
        drop((a2, a3, b));
        assert_eq!(c.keys(), 0);
        assert!(c.try_acquire(&"z", 0).is_none());
        assert_eq!(c.keys(), 0);
    }

    #[test]
    fn log_throttle_once_per_period_with_counts() {
        let t0 = Instant::now();
        let mut l = LogThrottle::new(Duration::from_secs(10), 2);
        assert_eq!(l.allow(&"a", t0), Some(0));
        assert_eq!(l.allow(&"a", t0 + Duration::from_secs(1)), None);
        assert_eq!(l.allow(&"a", t0 + Duration::from_secs(2)), None);
        assert_eq!(l.allow(&"b", t0), Some(0));
        // Full, nothing stale: a new key is suppressed and counted.
        assert_eq!(l.allow(&"c", t0 + Duration::from_secs(3)), None);
        assert_eq!(l.allow(&"a", t0 + Duration::from_secs(10)), Some(3));
        // After the period, stale keys make room.
        assert_eq!(l.allow(&"c", t0 + Duration::from_secs(25)), Some(0));
    }

    #[test]
    fn connection_deadlines() {
        let t0 = Instant::now();
        let (h, i) = (Duration::from_secs(2), Duration::from_secs(60));
        let mut c = ConnClock::new(t0);
        assert_eq!(c.deadline(h, i), Some((t0 + h, Expiry::Header)));
        c.on_read(t0 + Duration::from_secs(1));
        // Trickled bytes do not extend the head's deadline.
        assert_eq!(c.deadline(h, i), Some((t0 + h, Expiry::Header)));
        c.request_started();
        assert_eq!(c.deadline(h, i), None);
        let t1 = t0 + Duration::from_secs(30);
        c.on_read(t1); // pipelined bytes while busy
        assert_eq!(c.deadline(h, i), None);
        c.request_finished(t1);
        assert_eq!(c.deadline(h, i), Some((t1 + i, Expiry::Idle)));
        let t2 = t1 + Duration::from_secs(5);
        c.on_read(t2);
        assert_eq!(c.deadline(h, i), Some((t2 + h, Expiry::Header)));
    }
}
