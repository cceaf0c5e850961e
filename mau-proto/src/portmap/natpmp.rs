//! NAT-PMP messages (RFC 6886): encoding the two requests a client sends and
//! decoding whatever comes back, hostile bytes included.
//!
//! A client asks the gateway (UDP port [`SERVER_PORT`]) for its external
//! address (opcode 0) and for a TCP mapping (opcode 2); a lifetime of 0
//! deletes a mapping. Every field is big-endian.

use core::net::Ipv4Addr;
use std::time::Duration;

use super::DecodeError;

/// The protocol version byte.
pub const VERSION: u8 = 0;

/// The gateway's NAT-PMP (and PCP) port.
pub const SERVER_PORT: u16 = 5351;

/// The first retransmission interval (§3.1); it doubles after each try.
pub const INITIAL_RETRANSMIT: Duration = Duration::from_millis(250);

/// Tries before a client concludes the gateway does not speak NAT-PMP
/// (§3.1: 9, about 64 s of silence).
pub const RFC_MAX_ATTEMPTS: u32 = 9;

const OP_EXTERNAL_ADDRESS: u8 = 0;
const OP_MAP_TCP: u8 = 2;
const RESPONSE: u8 = 128;

/// A result code (§3.5).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResultCode {
    /// 0.
    Success,
    /// 1: the gateway speaks another version (a PCP-only server, say).
    UnsupportedVersion,
    /// 2: mappings are turned off or refused.
    NotAuthorized,
    /// 3: the gateway has no external address (its uplink is down).
    NetworkFailure,
    /// 4: no port or table entry left.
    OutOfResources,
    /// 5: the opcode is unknown to it.
    UnsupportedOpcode,
    /// Anything else.
    Other(u16),
}

impl From<u16> for ResultCode {
    fn from(v: u16) -> Self {
        match v {
            0 => ResultCode::Success,
            1 => ResultCode::UnsupportedVersion,
            2 => ResultCode::NotAuthorized,
            3 => ResultCode::NetworkFailure,
            4 => ResultCode::OutOfResources,
            5 => ResultCode::UnsupportedOpcode,
            n => ResultCode::Other(n),
        }
    }
}

/// A decoded gateway answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Response {
    /// The external address (opcode 128).
    ExternalAddress {
        /// Seconds since the gateway's mapping table was (re)started.
        epoch: u32,
        /// The gateway's external IPv4 address.
        ip: Ipv4Addr,
    },
    /// A TCP mapping granted, renewed or (lifetime 0) deleted (opcode 130).
    MapTcp {
        /// Seconds since the gateway's mapping table was (re)started.
        epoch: u32,
        /// Our port.
        internal_port: u16,
        /// The port the gateway opened.
        external_port: u16,
        /// Seconds the mapping lasts.
        lifetime: u32,
    },
    /// A refusal, or an answer we did not ask for (a UDP mapping).
    Error {
        /// The response opcode.
        opcode: u8,
        /// Why.
        code: ResultCode,
    },
}

/// The external-address request.
pub fn external_address_request() -> [u8; 2] {
    [VERSION, OP_EXTERNAL_ADDRESS]
}

/// A TCP mapping request: `lifetime` 0 with `suggested_port` 0 deletes.
pub fn map_tcp_request(internal_port: u16, suggested_port: u16, lifetime: u32) -> [u8; 12] {
    let mut b = [0u8; 12];
    b[0] = VERSION;
    b[1] = OP_MAP_TCP;
    b[4..6].copy_from_slice(&internal_port.to_be_bytes());
    b[6..8].copy_from_slice(&suggested_port.to_be_bytes());
    b[8..12].copy_from_slice(&lifetime.to_be_bytes());
    b
}

fn u16_at(b: &[u8], i: usize) -> u16 {
    u16::from_be_bytes([b[i], b[i + 1]])
}

fn u32_at(b: &[u8], i: usize) -> u32 {
    u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]])
}

/// Decodes a gateway answer. Never panics; trailing bytes are ignored.
pub fn decode(b: &[u8]) -> Result<Response, DecodeError> {
    if b.len() < 4 {
        return Err(DecodeError::Short(b.len()));
    }
    if b[0] != VERSION {
        return Err(DecodeError::Version(b[0]));
    }
    let opcode = b[1];
    if opcode < RESPONSE {
        return Err(DecodeError::NotAResponse(opcode));
    }
    let code = ResultCode::from(u16_at(b, 2));
    if code != ResultCode::Success {
        return Ok(Response::Error { opcode, code });
    }
    let need = match opcode - RESPONSE {
        OP_EXTERNAL_ADDRESS => 12,
        OP_MAP_TCP => 16,
        _ => {
            return Ok(Response::Error {
                opcode,
                code: ResultCode::UnsupportedOpcode,
            })
        }
    };
    if b.len() < need {
        return Err(DecodeError::Short(b.len()));
    }
    let epoch = u32_at(b, 4);
    Ok(if opcode - RESPONSE == OP_EXTERNAL_ADDRESS {
        Response::ExternalAddress {
            epoch,
            ip: Ipv4Addr::new(b[8], b[9], b[10], b[11]),
        }
    } else {
        Response::MapTcp {
            epoch,
            internal_port: u16_at(b, 8),
            external_port: u16_at(b, 10),
            lifetime: u32_at(b, 12),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_laid_out_as_the_rfc_says() {
        assert_eq!(external_address_request(), [0, 0]);
        assert_eq!(
            map_tcp_request(7000, 7001, 3600),
            [0, 2, 0, 0, 0x1b, 0x58, 0x1b, 0x59, 0, 0, 0x0e, 0x10]
        );
    }

    #[test]
    fn decodes_the_rfc_responses() {
        let addr = [0, 128, 0, 0, 0, 0, 0, 9, 11, 19, 0, 100];
        assert_eq!(
            decode(&addr),
            Ok(Response::ExternalAddress {
                epoch: 9,
                ip: Ipv4Addr::new(11, 19, 0, 100)
            })
        );
        let map = [
            0, 130, 0, 0, 0, 0, 1, 0, 0x1b, 0x58, 0x1b, 0x59, 0, 0, 0, 60,
        ];
        assert_eq!(
            decode(&map),
            Ok(Response::MapTcp {
                epoch: 256,
                internal_port: 7000,
                external_port: 7001,
                lifetime: 60
            })
        );
        assert_eq!(
            decode(&[0, 130, 0, 2, 0, 0, 0, 1]),
            Ok(Response::Error {
                opcode: 130,
                code: ResultCode::NotAuthorized
            })
        );
    }

    #[test]
    fn rejects_what_is_not_a_nat_pmp_answer() {
        assert_eq!(decode(&[0, 128, 0]), Err(DecodeError::Short(3)));
        assert_eq!(decode(&[2, 129, 0, 0]), Err(DecodeError::Version(2)));
        assert_eq!(decode(&[0, 2, 0, 0]), Err(DecodeError::NotAResponse(2)));
        assert_eq!(
            decode(&[0, 130, 0, 0, 0, 0, 0, 1]),
            Err(DecodeError::Short(8))
        );
    }
}
