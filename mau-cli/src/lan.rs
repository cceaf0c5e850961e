//! `mau discover --local`: the peers seen on the LAN over mDNS.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use mau_net::control::{self, ControlRequest, ControlResponse};
use mau_net::mdns::{self, LanPeer, LanPeers, Mdns};
use mau_smol::SmolRuntime;

use crate::{paths, server, table};

/// Longest standalone browse.
const MAX_SECONDS: u64 = 3600;

/// The running server's LAN peers, if a server with mDNS answers.
fn from_server(dir: &Path) -> Option<Vec<LanPeer>> {
    let path = paths::control_socket(dir);
    if !path.exists() {
        return None;
    }
    let r = smol::block_on(control::call(
        &SmolRuntime,
        &path,
        &ControlRequest::LanPeers,
        Duration::from_secs(5),
    ));
    match r {
        Ok(ControlResponse::LanPeers { mdns: true, peers }) => Some(peers),
        _ => None,
    }
}

/// Browses `_mau._tcp.local.` for `seconds` without advertising.
fn browse(seconds: u64) -> Result<Vec<LanPeer>, String> {
    let (daemon, events) = Mdns::start(None).map_err(|e| e.to_string())?;
    let peers = Arc::new(LanPeers::default());
    let wait = Duration::from_secs(seconds.min(MAX_SECONDS));
    smol::block_on(mdns::browse(
        events,
        peers.clone(),
        None,
        |_| {},
        async move {
            smol::Timer::after(wait).await;
        },
    ));
    drop(daemon);
    Ok(peers.list())
}

pub fn discover_local(dir: &Path, seconds: u64, json: bool) -> Result<(), String> {
    let peers = match from_server(dir) {
        Some(p) => p,
        None => browse(seconds)?,
    };
    if json {
        crate::output::outln!(
            "{}",
            serde_json::to_string_pretty(&peers).map_err(|e| e.to_string())?
        );
        return Ok(());
    }
    crate::output::outln!("{} peers seen on the LAN", peers.len());
    let rows: Vec<Vec<String>> = peers
        .iter()
        .map(|p| {
            vec![
                p.fingerprint.to_string(),
                p.addresses
                    .iter()
                    .map(|a| a.as_str())
                    .collect::<Vec<_>>()
                    .join(","),
                server::age(p.first_seen_secs),
                server::age(p.last_seen_secs),
            ]
        })
        .collect();
    table::print(&["FINGERPRINT", "ADDRESSES", "AGE", "SEEN"], &rows);
    Ok(())
}
