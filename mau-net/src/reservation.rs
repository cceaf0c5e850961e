//! The reservations of a node nobody can dial ([`crate::NodeConfig::relays`]):
//! the service that carries out [`mau_proto::relay::Reservations`]'
//! commands.
//!
//! Each reservation is a mutual-TLS connection to a relay, taken over
//! after `GET /relay/reserve` (see [`crate::relay`] for the protocol). When
//! the relay announces a caller (`CONNECT <id> <fingerprint>`), the service
//! opens `GET /relay/accept/<id>` and hands the upgraded stream to our own
//! server, which runs TLS on it as on any accepted connection: the caller
//! and we authenticate each other end to end.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_lite::AsyncWriteExt;
use mau_proto::relay::{ReservationCommand, ReservationConfig, Reservations};
use mau_proto::{Contact, Fingerprint, PeerAddress, Time};
use tracing::{debug, info, warn};

use crate::client::Client;
use crate::core::Shutdown;
use crate::lock::lock;
use crate::metrics::Metrics;
use crate::relay::{read_line, OBSERVED, TTL};
use crate::runtime::Runtime;
use crate::server::Incoming;

/// What a reservation's task is told.
enum Control {
    Renew,
}

/// The reservation service.
pub(crate) struct ReservationService<R: Runtime> {
    rt: R,
    client: Arc<Client<R>>,
    started: Instant,
    machine: Mutex<Reservations>,
    /// One control channel per held reservation.
    held: Mutex<BTreeMap<Fingerprint, async_channel::Sender<Control>>>,
    incoming: async_channel::Sender<Incoming>,
    /// Where the IP a relay saw us at goes (for hole punching).
    observed: Arc<crate::punch::PunchResponder<R>>,
    wake: (async_channel::Sender<()>, async_channel::Receiver<()>),
    shutdown: Shutdown,
    metrics: Option<Arc<Metrics>>,
    /// Advertised while no reservation is held: the first configured relay
    /// (the operator said nobody can dial us; `None` for relays picked at
    /// run time, which are advertised only once held).
    fallback: Option<PeerAddress>,
}

/// The relayed address to advertise while `held` (the first relay's).
fn relayed_of(held: &[Contact<PeerAddress>]) -> Option<PeerAddress> {
    held.iter().find_map(mau_proto::relay::relayed_address)
}

impl<R: Runtime> ReservationService<R> {
    /// A service holding reservations on `relays`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        rt: R,
        client: Arc<Client<R>>,
        config: ReservationConfig,
        relays: Vec<Contact<PeerAddress>>,
        incoming: async_channel::Sender<Incoming>,
        observed: Arc<crate::punch::PunchResponder<R>>,
        shutdown: Shutdown,
        metrics: Option<Arc<Metrics>>,
    ) -> Arc<Self> {
        let fallback = relays.first().and_then(mau_proto::relay::relayed_address);
        client.identities().set_relayed(fallback.clone());
        Arc::new(ReservationService {
            fallback,
            started: rt.now(),
            rt,
            client,
            machine: Mutex::new(Reservations::new(config, relays, Time::ZERO)),
            held: Mutex::new(BTreeMap::new()),
            incoming,
            observed,
            wake: async_channel::bounded(1),
            shutdown,
            metrics,
        })
    }

    fn now(&self) -> Time {
        Time::from_duration(self.rt.now().saturating_duration_since(self.started))
    }

    fn event(&self, e: &'static str) {
        if let Some(m) = &self.metrics {
            m.relay_event(e);
        }
    }

    /// Relays holding a reservation for us now.
    pub(crate) fn held(&self) -> Vec<Contact<PeerAddress>> {
        lock(&self.machine).held(self.now())
    }

    /// Keeps reservations on `relays` from now on (empty: none).
    pub(crate) fn set_relays(&self, relays: Vec<Contact<PeerAddress>>) {
        self.tell(|m, now| m.set_relays(now, relays));
    }

    /// Runs the machine until shutdown.
    pub(crate) async fn run(self: Arc<Self>) {
        loop {
            let commands: Vec<_> = {
                let mut m = lock(&self.machine);
                std::iter::from_fn(|| m.poll_command()).collect()
            };
            for c in commands {
                match c {
                    ReservationCommand::Reserve(relay) => {
                        let this = self.clone();
                        self.rt.spawn(async move { this.hold(relay).await });
                    }
                    ReservationCommand::Renew(relay) => {
                        if let Some(tx) = lock(&self.held).get(&relay.fingerprint) {
                            let _ = tx.try_send(Control::Renew);
                        }
                    }
                    ReservationCommand::Close(relay) => {
                        lock(&self.held).remove(&relay.fingerprint);
                    }
                }
            }
            let next = lock(&self.machine).poll_timeout();
            let wait = next.map_or(Duration::from_secs(3600), |t| t.since(self.now()));
            let sleep = self.rt.sleep(wait);
            let stop = futures_lite::future::or(
                futures_lite::future::or(
                    async {
                        sleep.await;
                        false
                    },
                    async {
                        let _ = self.wake.1.recv().await;
                        false
                    },
                ),
                async {
                    self.shutdown.wait().await;
                    true
                },
            )
            .await;
            if stop {
                lock(&self.held).clear();
                return;
            }
            lock(&self.machine).handle_timeout(self.now());
        }
    }

    fn tell(&self, f: impl FnOnce(&mut Reservations, Time)) {
        let held = {
            let mut m = lock(&self.machine);
            f(&mut m, self.now());
            m.held(self.now())
        };
        // The certificate names a relay we hold a reservation on, or none.
        let relayed = relayed_of(&held).or_else(|| self.fallback.clone());
        self.client.identities().set_relayed(relayed);
        let _ = self.wake.0.try_send(());
    }

    /// Reserves on `relay` and serves the reservation until it ends.
    async fn hold(self: Arc<Self>, relay: Contact<PeerAddress>) {
        let fp = relay.fingerprint;
        let (io, headers, _) = match self.client.upgrade(&relay, "/relay/reserve").await {
            Ok(x) => x,
            Err(e) => {
                warn!(relay = %fp, address = %relay.address, error = %e, "relay reservation failed");
                self.tell(|m, now| m.on_failed(now, &fp));
                return;
            }
        };
        if !lock(&self.machine).is_listed(&fp) {
            debug!(relay = %fp, "reservation no longer wanted: closed");
            return;
        }
        let ttl = header_secs(&headers, TTL).unwrap_or(Duration::from_secs(60));
        if let Some(ip) = headers
            .get(OBSERVED)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<std::net::SocketAddr>().ok())
        {
            *lock(&self.observed.observed) = Some(ip.ip());
        }
        info!(relay = %fp, address = %relay.address, ?ttl, "relay reservation held");
        self.event("reservation_held");
        self.tell(|m, now| m.on_reserved(now, &fp, ttl));
        let (tx, rx) = async_channel::bounded(4);
        lock(&self.held).insert(fp, tx);
        self.serve(&relay, io, rx).await;
        lock(&self.held).remove(&fp);
        if self.shutdown.is_down() {
        } else if lock(&self.machine).is_listed(&fp) {
            info!(relay = %fp, "relay reservation lost");
            self.event("reservation_lost");
            self.tell(|m, now| m.on_failed(now, &fp));
        } else {
            info!(relay = %fp, "relay reservation released (no longer needed)");
            self.event("reservation_released");
        }
    }

    async fn serve(
        &self,
        relay: &Contact<PeerAddress>,
        io: crate::upgraded::UpgradedIo,
        control: async_channel::Receiver<Control>,
    ) {
        enum Step {
            Line(std::io::Result<Option<String>>),
            Renew,
            Stop,
        }
        let (mut reader, mut writer) = futures_lite::io::split(io);
        let mut reader = futures_lite::io::BufReader::new(&mut reader);
        loop {
            let step = futures_lite::future::or(
                futures_lite::future::or(
                    async { Step::Line(read_line(&mut reader).await) },
                    async {
                        match control.recv().await {
                            Ok(Control::Renew) => Step::Renew,
                            Err(_) => Step::Stop,
                        }
                    },
                ),
                async {
                    self.shutdown.wait().await;
                    Step::Stop
                },
            )
            .await;
            match step {
                Step::Stop | Step::Line(Ok(None)) | Step::Line(Err(_)) => return,
                Step::Renew => {
                    if writer.write_all(b"RENEW\n").await.is_err() || writer.flush().await.is_err()
                    {
                        return;
                    }
                }
                Step::Line(Ok(Some(line))) => {
                    let mut words = line.split(' ');
                    match (words.next(), words.next(), words.next()) {
                        (Some("CONNECT"), Some(id), Some(caller)) => {
                            debug!(relay = %relay.fingerprint, %caller, "relayed caller announced");
                            self.accept(relay.clone(), id.to_owned());
                        }
                        (Some("RENEWED"), Some(secs), _) => {
                            let ttl = Duration::from_secs(secs.parse().unwrap_or(60));
                            let fp = relay.fingerprint;
                            self.tell(|m, now| m.on_reserved(now, &fp, ttl));
                        }
                        _ => {
                            debug!(relay = %relay.fingerprint, %line, "relay refused or spoke nonsense: reservation closed");
                            return;
                        }
                    }
                }
            }
        }
    }

    /// Takes the announced stream and hands it to our server.
    fn accept(&self, relay: Contact<PeerAddress>, id: String) {
        let (client, incoming) = (self.client.clone(), self.incoming.clone());
        self.rt.spawn(async move {
            let Ok(id) = id.parse::<u64>() else { return };
            match client.upgrade(&relay, &format!("/relay/accept/{id}")).await {
                Ok((io, _, reached)) => {
                    let _ = incoming
                        .send(Incoming {
                            stream: Box::new(io),
                            remote: reached,
                            relayed: true,
                        })
                        .await;
                }
                Err(e) => {
                    debug!(relay = %relay.fingerprint, error = %e, "relayed stream not taken")
                }
            }
        });
    }
}

fn header_secs(headers: &hyper::HeaderMap, name: &str) -> Option<Duration> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .map(Duration::from_secs)
}
