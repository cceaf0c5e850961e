//! UPnP IGD, one of the three port-mapping protocols (`igd-next`, its
//! blocking API run off the executor through [`Runtime::run_blocking`]).
//!
//! [`map`] finds the gateway (SSDP), maps the listening TCP port, and learns
//! the external IP; [`PortMapping::renew`] refreshes the lease;
//! [`PortMapping::remove`] deletes the mapping. When to call them is the
//! mapper's decision (`mau_proto::portmap`, run by [`crate::portmap`]);
//! every failure goes back to it. All SSDP/HTTP/XML parsing is the crate's.

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::Duration;

use igd_next::{Gateway, PortMappingProtocol, SearchOptions};
use tracing::debug;

use crate::runtime::{timeout, Runtime};

/// The description the mapping carries on the gateway.
pub const DESCRIPTION: &str = "mau";

/// How long gateway discovery may take, all attempts together.
pub const SEARCH_TIMEOUT: Duration = Duration::from_secs(6);

/// SSDP searches tried (a bogus answer ends one search early).
const SEARCH_ATTEMPTS: u32 = 3;

/// How long one whole mapping step (search, map, query) may take.
const STEP_TIMEOUT: Duration = Duration::from_secs(20);

/// Why no port mapping was made or kept.
#[derive(Debug, thiserror::Error)]
pub enum UpnpError {
    /// No gateway answered the SSDP search.
    #[error("no UPnP gateway found: {0}")]
    Search(String),
    /// The gateway did not tell its external address.
    #[error("gateway {gateway}: external IP: {reason}")]
    ExternalIp {
        /// The gateway's control address.
        gateway: SocketAddr,
        /// What it said.
        reason: String,
    },
    /// The gateway refused the mapping.
    #[error("gateway {gateway}: mapping refused: {reason}")]
    Refused {
        /// The gateway's control address.
        gateway: SocketAddr,
        /// What it said.
        reason: String,
    },
    /// Our own address towards the gateway is unknown.
    #[error("local address towards the gateway: {0}")]
    Local(std::io::Error),
    /// The blocking step did not finish in time (or panicked).
    #[error("UPnP step timed out")]
    Timeout,
}

/// A port mapping held on a gateway.
pub struct PortMapping {
    gateway: Gateway,
    /// Where the gateway forwards to (our address on its LAN).
    pub internal: SocketAddr,
    /// The gateway's external address and mapped port.
    pub external: SocketAddr,
    /// The lease asked for.
    pub lease: Duration,
}

impl std::fmt::Debug for PortMapping {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PortMapping")
            .field("gateway", &self.gateway.addr)
            .field("internal", &self.internal)
            .field("external", &self.external)
            .field("lease", &self.lease)
            .finish()
    }
}

fn search(search_timeout: Duration) -> Result<Gateway, UpnpError> {
    let per = search_timeout / SEARCH_ATTEMPTS;
    let mut last = String::from("no answer");
    for attempt in 1..=SEARCH_ATTEMPTS {
        let options = SearchOptions {
            timeout: Some(per),
            single_search_timeout: Some(per),
            ..SearchOptions::default()
        };
        match igd_next::search_gateway(options) {
            Ok(g) => return Ok(g),
            Err(e) => {
                debug!(attempt, error = %e, "UPnP: gateway search failed");
                last = e.to_string();
            }
        }
    }
    Err(UpnpError::Search(last))
}

/// Our IP on the route to `gateway`.
fn local_ip_towards(gateway: SocketAddr) -> Result<IpAddr, UpnpError> {
    let bind: SocketAddr = match gateway {
        SocketAddr::V4(_) => (IpAddr::from([0u8, 0, 0, 0]), 0).into(),
        SocketAddr::V6(_) => (IpAddr::from([0u16; 8]), 0).into(),
    };
    let s = UdpSocket::bind(bind).map_err(UpnpError::Local)?;
    s.connect(gateway).map_err(UpnpError::Local)?;
    Ok(s.local_addr().map_err(UpnpError::Local)?.ip())
}

fn map_blocking(
    listen: SocketAddr,
    lease: Duration,
    search_timeout: Duration,
) -> Result<PortMapping, UpnpError> {
    let gateway = search(search_timeout)?;
    let gw = gateway.addr;
    let ip = if listen.ip().is_unspecified() {
        local_ip_towards(gw)?
    } else {
        listen.ip()
    };
    let internal = SocketAddr::new(ip, listen.port());
    let external_ip = gateway
        .get_external_ip()
        .map_err(|e| UpnpError::ExternalIp {
            gateway: gw,
            reason: e.to_string(),
        })?;
    let secs = lease.as_secs().clamp(1, u64::from(u32::MAX)) as u32;
    let port = match gateway.add_port(
        PortMappingProtocol::TCP,
        listen.port(),
        internal,
        secs,
        DESCRIPTION,
    ) {
        Ok(()) => listen.port(),
        Err(e) => {
            debug!(error = %e, "UPnP: same-port mapping refused, asking for any port");
            gateway
                .add_any_port(PortMappingProtocol::TCP, internal, secs, DESCRIPTION)
                .map_err(|e2| UpnpError::Refused {
                    gateway: gw,
                    reason: format!("{e}; {e2}"),
                })?
        }
    };
    Ok(PortMapping {
        gateway,
        internal,
        external: SocketAddr::new(external_ip, port),
        lease,
    })
}

/// Finds the gateway, maps `listen`'s TCP port for `lease` and learns the
/// external address. Runs off the executor; bounded in time.
pub async fn map<R: Runtime>(
    rt: &R,
    listen: SocketAddr,
    lease: Duration,
) -> Result<PortMapping, UpnpError> {
    let m = timeout(
        rt,
        STEP_TIMEOUT,
        rt.run_blocking(move || map_blocking(listen, lease, SEARCH_TIMEOUT)),
    )
    .await
    .map_err(|_| UpnpError::Timeout)?
    .ok_or(UpnpError::Timeout)??;
    debug!(gateway = %m.gateway.addr, internal = %m.internal, external = %m.external,
          lease_secs = m.lease.as_secs(), "UPnP: gateway found");
    Ok(m)
}

impl PortMapping {
    /// The gateway's control address.
    pub fn gateway(&self) -> SocketAddr {
        self.gateway.addr
    }

    fn renew_blocking(&self) -> Result<(), UpnpError> {
        let secs = self.lease.as_secs().clamp(1, u64::from(u32::MAX)) as u32;
        self.gateway
            .add_port(
                PortMappingProtocol::TCP,
                self.external.port(),
                self.internal,
                secs,
                DESCRIPTION,
            )
            .map_err(|e| UpnpError::Refused {
                gateway: self.gateway.addr,
                reason: e.to_string(),
            })
    }

    /// Refreshes the lease (asks for the same port again).
    pub async fn renew<R: Runtime>(self: &Arc<Self>, rt: &R) -> Result<(), UpnpError> {
        let m = self.clone();
        timeout(
            rt,
            STEP_TIMEOUT,
            rt.run_blocking(move || m.renew_blocking()),
        )
        .await
        .map_err(|_| UpnpError::Timeout)?
        .ok_or(UpnpError::Timeout)?
    }

    /// Deletes the mapping, waiting at most `wait` for the gateway (on the
    /// runtime's blocking pool, not the executor).
    pub async fn remove<R: Runtime>(
        self: &Arc<Self>,
        rt: &R,
        wait: Duration,
    ) -> Result<(), UpnpError> {
        let m = self.clone();
        timeout(
            rt,
            wait,
            rt.run_blocking(move || {
                m.gateway
                    .remove_port(PortMappingProtocol::TCP, m.external.port())
                    .map_err(|e| UpnpError::Refused {
                        gateway: m.gateway.addr,
                        reason: e.to_string(),
                    })
            }),
        )
        .await
        .map_err(|_| UpnpError::Timeout)?
        .ok_or(UpnpError::Timeout)?
    }
}
