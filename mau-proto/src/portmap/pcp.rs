//! PCP messages (RFC 6887): the MAP request a client sends and the decoding
//! of answers, hostile bytes included.
//!
//! PCP shares NAT-PMP's server port (5351). Addresses are 16 bytes, IPv4 as
//! IPv4-mapped IPv6 (`::ffff:a.b.c.d`). A MAP request from an IPv6 address
//! asks for a firewall pinhole to that address (no translation); from an
//! IPv4 address, for a NAT mapping. Lifetime 0 deletes. A MAP answer echoes
//! the request's nonce; a client ignores answers whose nonce is not its own.

use core::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use super::DecodeError;

/// The protocol version byte.
pub const VERSION: u8 = 2;

/// Initial retransmission time (§8.1.1, IRT).
pub const IRT: Duration = Duration::from_secs(3);

/// Maximum retransmission time (§8.1.1, MRT).
pub const MRT: Duration = Duration::from_secs(1024);

/// IANA protocol number of TCP.
pub const PROTOCOL_TCP: u8 = 6;

const OP_MAP: u8 = 1;
const RESPONSE: u8 = 0x80;
/// Request and answer size of MAP without options.
pub const MAP_LEN: usize = 60;

/// A result code (§7.4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResultCode {
    /// 0.
    Success,
    /// 1: the server speaks another version.
    UnsupportedVersion,
    /// 2: refused by policy.
    NotAuthorized,
    /// 3..=6, 9, 12: the request (or an option) was not understood or
    /// does not match our address: a client bug, or a middlebox rewrote it.
    Malformed(u8),
    /// 7, 8, 10, 11, 13: a temporary shortage (no external address, no
    /// ports, quota).
    Unavailable(u8),
    /// Anything else.
    Other(u8),
}

impl From<u8> for ResultCode {
    fn from(v: u8) -> Self {
        match v {
            0 => ResultCode::Success,
            1 => ResultCode::UnsupportedVersion,
            2 => ResultCode::NotAuthorized,
            3..=6 | 9 | 12 => ResultCode::Malformed(v),
            7 | 8 | 10 | 11 | 13 => ResultCode::Unavailable(v),
            _ => ResultCode::Other(v),
        }
    }
}

/// A MAP request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MapRequest {
    /// Random, kept for the mapping's whole life (renewals, deletion).
    pub nonce: [u8; 12],
    /// Our address as the server sees it (the packet's source).
    pub client: IpAddr,
    /// Our port.
    pub internal_port: u16,
    /// The external address and port we would like (unspecified and 0: any;
    /// renewals repeat the assigned ones).
    pub suggested: SocketAddr,
    /// Seconds asked for; 0 deletes.
    pub lifetime: u32,
}

fn v6(ip: IpAddr) -> Ipv6Addr {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    }
}

fn from_v6(ip: Ipv6Addr) -> IpAddr {
    ip.to_ipv4_mapped().map_or(IpAddr::V6(ip), IpAddr::V4)
}

impl MapRequest {
    /// "Any external address" in the family of `client`.
    pub fn any_external(client: IpAddr) -> SocketAddr {
        match client {
            IpAddr::V4(_) => SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)),
            IpAddr::V6(_) => SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0)),
        }
    }

    /// The wire form (no options).
    pub fn encode(&self) -> [u8; MAP_LEN] {
        let mut b = [0u8; MAP_LEN];
        b[0] = VERSION;
        b[1] = OP_MAP;
        b[4..8].copy_from_slice(&self.lifetime.to_be_bytes());
        b[8..24].copy_from_slice(&v6(self.client).octets());
        b[24..36].copy_from_slice(&self.nonce);
        b[36] = PROTOCOL_TCP;
        b[40..42].copy_from_slice(&self.internal_port.to_be_bytes());
        b[42..44].copy_from_slice(&self.suggested.port().to_be_bytes());
        b[44..60].copy_from_slice(&v6(self.suggested.ip()).octets());
        b
    }
}

/// A decoded answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Response {
    /// An answer to MAP (success or not).
    Map {
        /// Why not, or success.
        result: ResultCode,
        /// Seconds granted; on an error, how long not to ask again.
        lifetime: u32,
        /// Seconds since the server's state was (re)started.
        epoch: u32,
        /// The request's nonce, echoed (absent from a short error answer).
        nonce: Option<[u8; 12]>,
        /// Our port, echoed.
        internal_port: u16,
        /// The external address and port assigned (the pinhole's own
        /// address for IPv6).
        external: SocketAddr,
    },
    /// The server speaks another version: a NAT-PMP-only gateway answers
    /// a PCP request so (RFC 6887 §9).
    UnsupportedVersion {
        /// The version it speaks.
        version: u8,
    },
    /// An answer to another opcode (ANNOUNCE, PEER): not ours to use.
    OtherOpcode(u8),
}

/// Decodes an answer. Never panics; options after the MAP data are ignored.
pub fn decode(b: &[u8]) -> Result<Response, DecodeError> {
    if b.len() < 4 {
        return Err(DecodeError::Short(b.len()));
    }
    if b[0] != VERSION {
        // NAT-PMP's "unsupported version": version 0, result (u16) 1.
        if b[0] == 0 && b[1] >= RESPONSE && b[2..4] == [0, 1] {
            return Ok(Response::UnsupportedVersion { version: 0 });
        }
        return Err(DecodeError::Version(b[0]));
    }
    if b[1] & RESPONSE == 0 {
        return Err(DecodeError::NotAResponse(b[1]));
    }
    let opcode = b[1] & !RESPONSE;
    if b.len() < 24 {
        return Err(DecodeError::Short(b.len()));
    }
    let result = ResultCode::from(b[3]);
    if result == ResultCode::UnsupportedVersion {
        return Ok(Response::UnsupportedVersion { version: b[0] });
    }
    if opcode != OP_MAP {
        return Ok(Response::OtherOpcode(opcode));
    }
    let lifetime = u32::from_be_bytes([b[4], b[5], b[6], b[7]]);
    let epoch = u32::from_be_bytes([b[8], b[9], b[10], b[11]]);
    if b.len() < MAP_LEN {
        if result == ResultCode::Success {
            return Err(DecodeError::Short(b.len()));
        }
        return Ok(Response::Map {
            result,
            lifetime,
            epoch,
            nonce: None,
            internal_port: 0,
            external: SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)),
        });
    }
    if b[36] != PROTOCOL_TCP {
        return Err(DecodeError::Protocol(b[36]));
    }
    let mut nonce = [0u8; 12];
    nonce.copy_from_slice(&b[24..36]);
    let mut ip = [0u8; 16];
    ip.copy_from_slice(&b[44..60]);
    Ok(Response::Map {
        result,
        lifetime,
        epoch,
        nonce: Some(nonce),
        internal_port: u16::from_be_bytes([b[40], b[41]]),
        external: SocketAddr::new(
            from_v6(Ipv6Addr::from(ip)),
            u16::from_be_bytes([b[42], b[43]]),
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> MapRequest {
        MapRequest {
            nonce: [7; 12],
            client: "192.168.1.10".parse().unwrap(),
            internal_port: 7000,
            suggested: MapRequest::any_external("192.168.1.10".parse().unwrap()),
            lifetime: 120,
        }
    }

    #[test]
    fn a_map_request_is_laid_out_as_the_rfc_says() {
        let b = request().encode();
        assert_eq!(&b[..8], &[2, 1, 0, 0, 0, 0, 0, 120]);
        assert_eq!(
            &b[8..24],
            &Ipv4Addr::new(192, 168, 1, 10).to_ipv6_mapped().octets()
        );
        assert_eq!(&b[24..36], &[7; 12]);
        assert_eq!(&b[36..44], &[6, 0, 0, 0, 0x1b, 0x58, 0, 0]);
        assert_eq!(&b[44..60], &Ipv4Addr::UNSPECIFIED.to_ipv6_mapped().octets());
    }

    /// What a server answers to `request()`, as RFC 6887 §7.2 lays it out.
    fn answer(result: u8, external: SocketAddr) -> Vec<u8> {
        let mut b = request().encode().to_vec();
        b[1] = 0x81;
        b[2] = 0;
        b[3] = result;
        b[8..12].copy_from_slice(&77u32.to_be_bytes());
        b[12..24].fill(0);
        b[42..44].copy_from_slice(&external.port().to_be_bytes());
        b[44..60].copy_from_slice(&v6(external.ip()).octets());
        b
    }

    #[test]
    fn decodes_a_map_answer() {
        let ext: SocketAddr = "11.19.0.100:7000".parse().unwrap();
        assert_eq!(
            decode(&answer(0, ext)),
            Ok(Response::Map {
                result: ResultCode::Success,
                lifetime: 120,
                epoch: 77,
                nonce: Some([7; 12]),
                internal_port: 7000,
                external: ext
            })
        );
        let pinhole: SocketAddr = "[2001:db8:19:1::10]:7000".parse().unwrap();
        let Ok(Response::Map { external, .. }) = decode(&answer(0, pinhole)) else {
            panic!("not a MAP answer");
        };
        assert_eq!(external, pinhole);
        let Ok(Response::Map { result, .. }) = decode(&answer(2, ext)) else {
            panic!("not a MAP answer");
        };
        assert_eq!(result, ResultCode::NotAuthorized);
    }

    #[test]
    fn a_nat_pmp_gateway_says_unsupported_version() {
        assert_eq!(
            decode(&[0, 129, 0, 1, 0, 0, 0, 5]),
            Ok(Response::UnsupportedVersion { version: 0 })
        );
        assert_eq!(decode(&[0, 129, 0, 0]), Err(DecodeError::Version(0)));
    }
}
