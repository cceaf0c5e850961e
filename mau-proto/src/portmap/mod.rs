//! Port mapping on the home gateway, sans-IO: PCP (RFC 6887), NAT-PMP
//! (RFC 6886) and UPnP IGD, tried in that order.
//!
//! - [`pcp`], [`natpmp`]: the messages, encoded and decoded (any bytes in,
//!   never a panic);
//! - [`epoch`]: whether the gateway lost its mappings (rebooted) since its
//!   previous answer;
//! - [`mapper`]: the state machine that picks a protocol, falls back, renews
//!   before the lease ends, notices a rebooted gateway and deletes the
//!   mapping on shutdown. It is fed datagrams, UPnP results and the time;
//!   it answers with datagrams to send and UPnP operations to run. The
//!   sockets and the UPnP client live in `mau-net`.

pub mod epoch;
pub mod mapper;
pub mod natpmp;
pub mod pcp;
mod retry;

pub use mapper::{Action, Event, Mapper, MapperConfig, Mapping, UpnpOp};

/// A port-mapping protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    /// Port Control Protocol (RFC 6887): NAT mappings and IPv6 pinholes.
    Pcp,
    /// NAT Port Mapping Protocol (RFC 6886), PCP's predecessor.
    NatPmp,
    /// UPnP Internet Gateway Device (SSDP, SOAP over HTTP).
    Upnp,
}

impl Protocol {
    /// The default order: PCP (the standard, one round trip, carries the
    /// external address), NAT-PMP (same port, older gateways), UPnP
    /// (discovery by multicast and HTTP: slowest, most widespread).
    pub const ALL: [Protocol; 3] = [Protocol::Pcp, Protocol::NatPmp, Protocol::Upnp];

    /// True for the protocols spoken over UDP to the gateway's port 5351.
    pub fn uses_port_5351(self) -> bool {
        matches!(self, Protocol::Pcp | Protocol::NatPmp)
    }
}

impl std::fmt::Display for Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Protocol::Pcp => "PCP",
            Protocol::NatPmp => "NAT-PMP",
            Protocol::Upnp => "UPnP",
        })
    }
}

impl std::str::FromStr for Protocol {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "pcp" => Ok(Protocol::Pcp),
            "natpmp" | "nat-pmp" | "pmp" => Ok(Protocol::NatPmp),
            "upnp" | "igd" => Ok(Protocol::Upnp),
            _ => Err(format!(
                "{s:?}: not a port-mapping protocol (pcp, natpmp, upnp)"
            )),
        }
    }
}

/// Why a gateway's datagram was not understood.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Fewer bytes than the message needs.
    #[error("{0} bytes: too short")]
    Short(usize),
    /// Another protocol version.
    #[error("version {0}")]
    Version(u8),
    /// A request, not an answer.
    #[error("opcode {0} is not an answer")]
    NotAResponse(u8),
    /// A mapping for another transport protocol than TCP.
    #[error("transport protocol {0} is not TCP")]
    Protocol(u8),
}
