//! Shared test helpers: in-memory handshakes and cached fixtures.
#![allow(dead_code)]

use std::sync::{Arc, OnceLock};

use mau_identity::{Account, KeyVersion};
use rustls::{ClientConfig, ClientConnection, ServerConfig, ServerConnection};

/// Moves TLS records between the two sides until neither has anything to
/// send or one fails. Returns each side's error, if any.
pub fn handshake(
    client: &mut ClientConnection,
    server: &mut ServerConnection,
) -> (Option<rustls::Error>, Option<rustls::Error>) {
    let mut client_err = None;
    let mut server_err = None;
    for _ in 0..20 {
        let mut moved = false;
        let mut buf = Vec::new();
        while client.wants_write() {
            if client.write_tls(&mut buf).unwrap_or(0) == 0 {
                break;
            }
        }
        if !buf.is_empty() && server_err.is_none() {
            moved = true;
            let mut rd = &buf[..];
            while !rd.is_empty() {
                if server.read_tls(&mut rd).unwrap_or(0) == 0 {
                    break;
                }
                if let Err(e) = server.process_new_packets() {
                    server_err = Some(e);
                    break;
                }
            }
        }
        let mut buf = Vec::new();
        while server.wants_write() {
            if server.write_tls(&mut buf).unwrap_or(0) == 0 {
                break;
            }
        }
        if !buf.is_empty() && client_err.is_none() {
            moved = true;
            let mut rd = &buf[..];
            while !rd.is_empty() {
                if client.read_tls(&mut rd).unwrap_or(0) == 0 {
                    break;
                }
                if let Err(e) = client.process_new_packets() {
                    client_err = Some(e);
                    break;
                }
            }
        }
        if !moved {
            break;
        }
    }
    (client_err, server_err)
}

/// Runs one handshake between fresh connections of the two configs.
pub fn connect(
    client: Arc<ClientConfig>,
    server: Arc<ServerConfig>,
) -> (
    ClientConnection,
    ServerConnection,
    Option<rustls::Error>,
    Option<rustls::Error>,
) {
    let mut c = ClientConnection::new(client, mau_identity::server_name()).expect("client");
    let mut s = ServerConnection::new(server).expect("server");
    let (ce, se) = handshake(&mut c, &mut s);
    (c, s, ce, se)
}

/// Accounts are slow to generate in debug builds: make each kind once.
pub fn account(version: KeyVersion, index: usize) -> &'static Account {
    static V4: OnceLock<Vec<Account>> = OnceLock::new();
    static V6: OnceLock<Vec<Account>> = OnceLock::new();
    let make = |v| {
        (0..2)
            .map(|i| {
                Account::generate_in_memory(&format!("peer {i}"), "peer@example.org", v)
                    .expect("generate")
            })
            .collect()
    };
    match version {
        KeyVersion::V4 => &V4.get_or_init(|| make(KeyVersion::V4))[index],
        KeyVersion::V6 => &V6.get_or_init(|| make(KeyVersion::V6))[index],
    }
}
