//! Keeps what the node advertises in line with what it learns: the direct
//! address (configured, mapped, or the public IP its peers agree on) and,
//! when the reachability verdict says nobody can dial it, relays picked
//! among the peers that offer to relay. The decisions are
//! [`mau_proto::advertise`]'s; this task feeds them and carries them out
//! (certificates reissued through [`crate::identity`], reservations through
//! [`crate::reservation`]).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use mau_proto::advertise::{direct_address, RelayChoice, RelayChoiceConfig};
use mau_proto::{PeerAddress, Reach as Verdict};
use tracing::{info, warn};

use crate::client::Client;
use crate::core::Core;
use crate::portmap::PortMapStatus;
use crate::reach::Reach;
use crate::reservation::ReservationService;
use crate::runtime::Runtime;

/// How often the inputs are looked at (they are cheap to read).
const EVERY: Duration = Duration::from_secs(1);

/// What the task needs.
pub(crate) struct AddressWatch<R: Runtime> {
    pub core: Arc<Core<R>>,
    pub client: Arc<Client<R>>,
    pub reach: Arc<Reach>,
    pub port_map: Arc<PortMapStatus>,
    pub configured: Option<PeerAddress>,
    pub local: SocketAddr,
    /// Picks relays itself (`None`: relays are configured, or none at all).
    pub auto_relay: Option<Arc<ReservationService<R>>>,
}

impl<R: Runtime> AddressWatch<R> {
    /// Runs until shutdown.
    pub(crate) async fn run(self) {
        let mut choice = RelayChoice::new(RelayChoiceConfig::default());
        let me = self.core.read(|node, _| node.table().local());
        let mut generation = self.client.identities().generation();
        let work = async {
            loop {
                futures_lite::future::or(self.core.rt.sleep(EVERY), self.reach.public_ip_changed())
                    .await;
                let mapped = self.port_map.ipv4().map(|m| m.external);
                let direct = direct_address(
                    self.configured.as_ref(),
                    mapped,
                    self.reach.public_ip(),
                    self.local,
                );
                if self.client.identities().set_direct(direct.clone()) {
                    // The verdict was about the old address.
                    self.reach.check_soon();
                }
                self.announce_if_reissued(me, &mut generation).await;
                let Some(reservations) = &self.auto_relay else {
                    continue;
                };
                let verdict = self.reach.verdict(self.core.now());
                let candidates: Vec<_> = self
                    .client
                    .known_relays()
                    .into_iter()
                    .filter(|c| c.fingerprint != me)
                    .collect();
                let was_needed = choice.needed();
                if let Some(relays) = choice.update(&verdict, &direct, &candidates) {
                    match (&verdict, relays.is_empty()) {
                        (_, false) => info!(
                            relays = relays.len(),
                            first = %relays[0].fingerprint,
                            "unreachable: holding reservations on relays that offer it"
                        ),
                        (Verdict::Reachable(a), true) => {
                            info!(address = %a, "reachable again: relay reservations released")
                        }
                        _ => {}
                    }
                    reservations.set_relays(relays);
                } else if choice.needed() && !was_needed && candidates.is_empty() {
                    warn!("unreachable and no peer offers to relay: staying unreachable");
                }
            }
        };
        futures_lite::future::or(work, self.core.shutdown.wait()).await;
    }

    /// After a reissue, a lookup of ourselves: the peers closest to us
    /// (those others ask about us) see the new certificate and store the
    /// new address (after probing it), as they did at the join.
    async fn announce_if_reissued(&self, me: mau_proto::Fingerprint, seen: &mut u64) {
        let now = self.client.identities().generation();
        if now == *seen || self.core.read(|node, _| node.table().is_empty()) {
            return;
        }
        *seen = now;
        match self.core.lookup(me).await {
            Ok(o) => info!(
                asked = o.requests,
                "new address announced to the closest peers"
            ),
            Err(e) => warn!(error = %e, "new address not announced"),
        }
    }
}
