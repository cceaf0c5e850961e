//! `mau server start`, and the commands that talk to a running server.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;
use mau_identity::{Account, IdentityError, KeyVersion, StateDir, TlsIdentity, MAU_DIR};
use mau_net::control::{self, ControlRequest, ControlResponse};
use mau_net::{parse_peer_spec, NodeConfig, RunningNode};
use mau_proto::{Fingerprint, PeerAddress};
use tracing::info;

use crate::runtime::Exec;
use crate::{account, table};

/// Options of `mau server start`.
#[derive(Args)]
pub struct StartArgs {
    /// Where to listen. Use 0.0.0.0:PORT to be reachable from other machines.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: std::net::SocketAddr,
    /// The host:port peers should use to reach this node (default: the listen address).
    #[arg(long)]
    advertise: Option<PeerAddress>,
    /// A peer to join through, FINGERPRINT@HOST:PORT (repeatable; also read,
    /// one per line, from DIR/.mau-rs/bootstrap.txt).
    #[arg(long = "bootstrap", value_name = "FINGERPRINT@HOST:PORT")]
    bootstrap: Vec<String>,
    /// Do not advertise or browse on the LAN (mDNS is on by default; it is
    /// also off while listening on loopback only).
    #[arg(long)]
    no_mdns: bool,
    /// Map the listening port on the router with UPnP IGD and advertise the
    /// external address (unless --advertise is given). Failures are warnings.
    #[arg(long)]
    upnp: bool,
    /// The UPnP lease to ask for, in seconds; renewed at half of it.
    #[arg(long, default_value_t = 3600, value_parser = clap::value_parser!(u64).range(2..=86400))]
    upnp_lease: u64,
}

pub(crate) fn control_socket(dir: &Path) -> PathBuf {
    StateDir::new(dir).control_socket()
}

fn bootstrap_file(dir: &Path) -> Result<Vec<String>, String> {
    let path = StateDir::new(dir).bootstrap();
    match std::fs::read_to_string(&path) {
        Ok(text) => Ok(text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(String::from)
            .collect()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

/// Loads the account, or offers to create one on a terminal.
fn account_or_create(dir: &Path) -> Result<Account, String> {
    let exists = dir.join(MAU_DIR).join(mau_identity::ACCOUNT_FILE).exists();
    if exists || !std::io::stdin().is_terminal() {
        return account::load(dir).map_err(|e| {
            if exists {
                e
            } else {
                format!(
                    "no account in {}: create one with `mau init --name NAME`",
                    dir.display()
                )
            }
        });
    }
    eprint!(
        "No account in {}. Create one now? Name (empty to cancel): ",
        dir.display()
    );
    let mut name = String::new();
    std::io::stdin()
        .read_line(&mut name)
        .map_err(|e| e.to_string())?;
    let name = name.trim();
    if name.is_empty() {
        return Err("no account; nothing started".into());
    }
    let p = account::passphrase(true)?;
    let a = Account::create(dir, name, "", &p, KeyVersion::V4).map_err(|e| e.to_string())?;
    eprintln!("created account {}", a.fingerprint());
    Ok(a)
}

pub fn start<E: Exec>(dir: &Path, args: StartArgs) -> Result<(), String> {
    let account = account_or_create(dir)?;
    let mut config = NodeConfig::new(args.listen);
    config.advertise = args.advertise;
    let specs = args.bootstrap.into_iter().chain(bootstrap_file(dir)?);
    config.bootstrap = specs
        .map(|s| parse_peer_spec(&s))
        .collect::<Result<_, _>>()?;
    let state = StateDir::new(dir);
    state.ensure().map_err(|e| e.to_string())?;
    config.table_file = Some(state.routing_table());
    config.control_socket = Some(control_socket(dir));
    config.content = Some(std::sync::Arc::new(
        mau_store::Store::new(account.clone()).map_err(|e| e.to_string())?,
    ));
    config.mdns = !args.no_mdns;
    config.upnp = args.upnp;
    config.upnp_lease = Duration::from_secs(args.upnp_lease);
    let (stop_tx, stop_rx) = async_channel::bounded::<()>(1);
    ctrlc::set_handler(move || {
        let _ = stop_tx.try_send(());
    })
    .map_err(|e| format!("cannot install the Ctrl-C handler: {e}"))?;
    E::run(|rt| async move {
        let identity = |addr: Option<&str>| -> Result<TlsIdentity, IdentityError> {
            TlsIdentity::from_account(&account, addr)
        };
        let mut node = RunningNode::start(rt, config, identity)
            .await
            .map_err(|e| e.to_string())?;
        println!(
            "mau server {} listening on {} (advertised as {})",
            node.fingerprint(),
            node.local_addr(),
            node.advertised()
        );
        let _ = stop_rx.recv().await;
        info!("shutting down");
        node.shutdown().await;
        Ok(())
    })
}

fn ask<E: Exec>(
    dir: &Path,
    request: ControlRequest,
    wait: Duration,
) -> Result<ControlResponse, String> {
    let path = control_socket(dir);
    let response = E::run(|rt| async move { control::call(&rt, &path, &request, wait).await })
        .map_err(|e| e.to_string())?;
    match response {
        ControlResponse::Error { message } => Err(message),
        r => Ok(r),
    }
}

pub(crate) fn age(secs: u64) -> String {
    match secs {
        0..60 => format!("{secs}s"),
        60..3600 => format!("{}m", secs / 60),
        _ => format!("{}h", secs / 3600),
    }
}

pub fn peers<E: Exec>(dir: &Path, json: bool, buckets: bool) -> Result<(), String> {
    let ControlResponse::Table(t) = ask::<E>(dir, ControlRequest::Table, Duration::from_secs(10))?
    else {
        return Err("unexpected answer from the server".into());
    };
    if json {
        let v = if buckets {
            serde_json::to_string_pretty(&t.buckets)
        } else {
            serde_json::to_string_pretty(&t.peers)
        };
        println!("{}", v.map_err(|e| e.to_string())?);
        return Ok(());
    }
    println!(
        "node {} at {}: {} peers in {} buckets",
        t.fingerprint,
        t.address,
        t.peers.len(),
        t.buckets.len()
    );
    if buckets {
        let rows: Vec<Vec<String>> = t
            .buckets
            .iter()
            .map(|b| {
                vec![
                    b.index.to_string(),
                    b.common_prefix_len.to_string(),
                    b.peers.to_string(),
                    b.replacements.to_string(),
                    age(b.last_lookup_secs),
                ]
            })
            .collect();
        table::print(
            &["BUCKET", "PREFIX", "PEERS", "WAITING", "LAST LOOKUP"],
            &rows,
        );
    } else {
        table::print_peers(&t.peers);
    }
    Ok(())
}

pub fn discover<E: Exec>(dir: &Path, fingerprint: Fingerprint, json: bool) -> Result<(), String> {
    let ControlResponse::Lookup(r) = ask::<E>(
        dir,
        ControlRequest::Lookup { fingerprint },
        Duration::from_secs(120),
    )?
    else {
        return Err("unexpected answer from the server".into());
    };
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&r).map_err(|e| e.to_string())?
        );
    } else {
        match &r.found {
            Some(p) => println!(
                "{} is at {} ({} hops, {} requests)",
                p.fingerprint, p.address, r.hops, r.requests
            ),
            None => println!(
                "{} not found ({} requests, {} failed); closest peers that answered: {}",
                r.target,
                r.requests,
                r.failures,
                r.closest.len()
            ),
        }
    }
    if r.found.is_none() {
        return Err(format!("{fingerprint} not found"));
    }
    Ok(())
}
