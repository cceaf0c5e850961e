//! `mau server start`, and the commands that talk to a running server.

use std::io::IsTerminal;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::Args;
use mau_identity::{Account, IdentityError, KeyVersion, TlsIdentity};
use mau_net::control::{self, ControlError, ControlRequest, ControlResponse};
use mau_net::metrics::{self, Metrics, TableGauges};
use mau_net::reach::{Mapping, ReachState, ReachStatus};
use mau_net::{parse_peer_spec, NodeConfig, RunningNode, Runtime};
use mau_proto::{Contact, Fingerprint, PeerAddress};
use tracing::{info, warn};

use crate::lock::{self, Holder, ServerLock};
use crate::output::{self, outln, Failure, EXIT_NOT_FOUND, EXIT_NO_SERVER};
use crate::runtime::Exec;
use crate::{account, paths, table};

const UNEXPECTED: &str = "unexpected answer from the server";

/// Options of `mau server start`.
#[derive(Args)]
pub struct StartArgs {
    /// Where to listen (IP:PORT or HOST:PORT, e.g. localhost:8080). Use
    /// `0.0.0.0:PORT` or `[::]:PORT` to be reachable from other machines.
    #[arg(long, default_value = "127.0.0.1:8080", value_parser = parse_listen)]
    listen: SocketAddr,
    /// The host:port peers should use to reach this node (default: the listen address).
    #[arg(long)]
    advertise: Option<PeerAddress>,
    /// A peer to join through, FINGERPRINT@HOST:PORT (repeatable; also read,
    /// one per line, from bootstrap.txt in the state directory, DIR/.mau).
    #[arg(long = "bootstrap", value_name = "FINGERPRINT@HOST:PORT")]
    bootstrap: Vec<String>,
    /// Do not advertise or browse on the LAN (mDNS is on by default; it is
    /// also off while listening on loopback only).
    #[arg(long)]
    no_mdns: bool,
    /// Map the listening port on the router and advertise the external
    /// address (unless --advertise is given), trying PCP, NAT-PMP then UPnP
    /// IGD, or the protocols listed (e.g. `--port-map pcp,natpmp`); with
    /// PCP and an IPv6 --listen, also open an IPv6 pinhole. Renewed at half
    /// the lease, removed on exit. Failures are warnings.
    #[arg(long, value_name = "PROTOCOLS", num_args = 0..=1, default_missing_value = "pcp,natpmp,upnp",
          value_delimiter = ',')]
    port_map: Option<Vec<mau_proto::portmap::Protocol>>,
    /// Map the listening port with UPnP IGD only (`--port-map upnp`).
    #[arg(long, conflicts_with = "port_map")]
    upnp: bool,
    /// Serve Prometheus/OpenMetrics metrics over plain HTTP at
    /// http://ADDR/metrics (a listener of its own, never the peer port;
    /// keep it on loopback or a management network). Off by default.
    #[arg(long, value_name = "ADDR", value_parser = parse_listen)]
    metrics: Option<SocketAddr>,
    /// The port-mapping lease to ask for, in seconds; renewed at half of
    /// what the gateway grants.
    #[arg(long, alias = "upnp-lease", default_value_t = 3600, value_parser = clap::value_parser!(u64).range(2..=86400))]
    port_map_lease: u64,
    /// Peers of this many distinct networks (IPv4 /24, IPv6 /48; LAN and
    /// loopback peers each count alone) must agree before the server
    /// believes the public address they see and their dial-back verdict.
    /// Lower it for a small private network; 1 trusts any single peer.
    #[arg(long, value_name = "N", default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=20))]
    reach_quorum: u64,
    /// Relay streams between peers that cannot reach each other (only on a
    /// node others can reach; bounded, see docs/nat.md).
    #[arg(long)]
    relay: bool,
    /// This node cannot be reached: hold a reservation on this relay,
    /// FINGERPRINT@HOST:PORT (repeatable, in order of preference), and
    /// advertise an address through the first.
    #[arg(long = "relay-via", value_name = "FINGERPRINT@HOST:PORT")]
    relay_via: Vec<String>,
    /// Do not try direct connections (hole punching) to peers reached
    /// through a relay.
    #[arg(long)]
    no_punch: bool,
}

/// `--listen`: an IP address and port, or a host name (`localhost:8080`)
/// resolved here, IPv4 first.
fn parse_listen(s: &str) -> Result<SocketAddr, String> {
    if let Ok(a) = s.parse() {
        return Ok(a);
    }
    let all: Vec<SocketAddr> = s
        .to_socket_addrs()
        .map_err(|e| format!("{s:?}: expected IP:PORT or HOST:PORT ({e})"))?
        .collect();
    all.iter()
        .find(|a| a.is_ipv4())
        .or(all.first())
        .copied()
        .ok_or_else(|| format!("{s:?}: the name resolves to no address"))
}

/// The peers listed in bootstrap.txt; a bad line is named by file and line.
fn bootstrap_file(dir: &Path) -> Result<Vec<Contact<PeerAddress>>, String> {
    let path = paths::bootstrap_file(dir);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    text.lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim()))
        .filter(|(_, l)| !l.is_empty() && !l.starts_with('#'))
        .map(|(n, l)| parse_peer_spec(l).map_err(|e| format!("{}:{n}: {e}", path.display())))
        .collect()
}

/// Loads the account, or offers to create one on a terminal.
fn account_or_create(dir: &Path) -> Result<Account, String> {
    // Without an account, load says how to create one.
    if paths::account_file(dir).exists() || !std::io::stdin().is_terminal() {
        return account::load(dir);
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
    // Before anything binds: a second server must not touch the first's
    // control socket or saved table.
    mau_identity::StateDir::new(dir)
        .ensure()
        .map_err(|e| e.to_string())?;
    let mut lock = ServerLock::acquire(&paths::server_lock(dir))?;
    let mut config = NodeConfig::new(args.listen);
    config.advertise = args.advertise;
    config.bootstrap = args
        .bootstrap
        .iter()
        .map(|s| parse_peer_spec(s).map_err(|e| format!("--bootstrap {e}")))
        .collect::<Result<_, _>>()?;
    config.bootstrap.extend(bootstrap_file(dir)?);
    config.table_file = Some(paths::routing_table(dir));
    config.control_socket = Some(paths::control_socket(dir));
    config.content = Some(std::sync::Arc::new(
        mau_store::Store::new(account.clone()).map_err(|e| e.to_string())?,
    ));
    config.mdns = !args.no_mdns;
    config.port_mapping = match (&args.port_map, args.upnp) {
        (Some(list), _) => list.clone(),
        (None, true) => vec![mau_proto::portmap::Protocol::Upnp],
        (None, false) => Vec::new(),
    };
    config.port_mapping_lease = Duration::from_secs(args.port_map_lease);
    config.reach.votes.quorum = args.reach_quorum as usize;
    config.reach.verdict.quorum = args.reach_quorum as usize;
    if args.relay {
        config.relay = Some(mau_proto::relay::RelayLimits::default());
    }
    config.relays = args
        .relay_via
        .iter()
        .map(|s| parse_peer_spec(s).map_err(|e| format!("--relay-via {e}")))
        .collect::<Result<_, _>>()?;
    if args.no_punch {
        config.punch = None;
    }
    if args.metrics == Some(args.listen) && args.listen.port() != 0 {
        return Err("--metrics must not be the peer port: give it an address of its own".into());
    }
    let metrics = args.metrics.map(|_| Arc::new(Metrics::new()));
    config.metrics = metrics.clone();
    let (stop_tx, stop_rx) = async_channel::bounded::<()>(1);
    config.stop_requests = Some(stop_tx.clone());
    ctrlc::set_handler(move || {
        let _ = stop_tx.try_send(());
    })
    .map_err(|e| format!("cannot install the Ctrl-C handler: {e}"))?;
    E::run(|rt| async move {
        // Reissued whenever the node's address changes.
        let identity = move |addr: Option<&str>| -> Result<TlsIdentity, IdentityError> {
            TlsIdentity::from_account(&account, addr)
        };
        let mut node = RunningNode::start_reissuing(rt.clone(), config, identity)
            .await
            .map_err(|e| e.to_string())?;
        let scrape = match (args.metrics, &metrics) {
            (Some(addr), Some(m)) => {
                let listener = rt
                    .bind_tcp(addr)
                    .await
                    .map_err(|e| format!("--metrics {addr}: {e}"))?;
                let bound = E::R::tcp_local_addr(&listener).map_err(|e| e.to_string())?;
                m.set_mdns(node.mdns_running());
                m.set_upnp(node.port_mapping().is_some());
                info!(address = %bound, "metrics at http://{bound}/metrics");
                Some((listener, m.clone(), bound))
            }
            _ => None,
        };
        lock.write(&Holder {
            pid: std::process::id(),
            listen: Some(node.local_addr().to_string()),
            advertised: Some(node.advertised().to_string()),
            started: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            upnp: node
                .port_mapping()
                .map(|m| format!("{} ({})", m.external, m.protocol)),
            metrics: scrape.as_ref().map(|s| s.2.to_string()),
        })?;
        if node.snapshot().peers.is_empty() {
            warn!(
                "no peers known: this node cannot join the network until one finds it; \
                 pass --bootstrap FINGERPRINT@HOST:PORT or list peers in {}{}",
                paths::bootstrap_file(dir).display(),
                if node.mdns_running() {
                    " (mDNS may still find peers on the LAN)"
                } else {
                    ""
                }
            );
        }
        outln!(
            "mau server {} listening on {} (advertised as {})",
            node.fingerprint(),
            node.local_addr(),
            node.advertised()
        );
        match node.reachability().mapping {
            Some(m) => info!(mapping = %mapping_text(&m), "port mapping held"),
            None => info!("no port mapping: reachable only if the advertised address is"),
        }
        info!(
            "reachability: peers will be asked to dial back once some are known \
             (the verdict is logged; `mau status` shows it)"
        );
        let stopped = async {
            let _ = stop_rx.recv().await;
        };
        match &scrape {
            // Served here, not spawned: the scrape reads the table through
            // `node`, which this function owns.
            Some((listener, m, _)) => {
                let gauges = || {
                    let t = node.snapshot();
                    TableGauges {
                        peers: t.peers.len(),
                        buckets: t
                            .buckets
                            .iter()
                            .map(|b| (b.index, b.peers, b.replacements))
                            .collect(),
                    }
                };
                smol::future::or(stopped, metrics::serve(&rt, listener, m, gauges)).await
            }
            None => stopped.await,
        }
        info!("shutting down");
        node.shutdown().await;
        Ok(())
    })
}

fn ask<E: Exec>(
    dir: &Path,
    request: ControlRequest,
    wait: Duration,
) -> Result<ControlResponse, Failure> {
    let path = paths::control_socket(dir);
    let response = E::run(|rt| async move { control::call(&rt, &path, &request, wait).await })
        .map_err(|e| match e {
            ControlError::NotRunning(..) => Failure::new(EXIT_NO_SERVER, e.to_string()),
            e => Failure::from(e.to_string()),
        })?;
    match response {
        ControlResponse::Error { message } => Err(message.into()),
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

pub fn peers<E: Exec>(dir: &Path, json: bool, buckets: bool) -> Result<(), Failure> {
    let ControlResponse::Table(t) = ask::<E>(dir, ControlRequest::Table, Duration::from_secs(10))?
    else {
        return Err(UNEXPECTED.into());
    };
    if json {
        let v = if buckets {
            serde_json::to_string_pretty(&t.buckets)
        } else {
            serde_json::to_string_pretty(&t.peers)
        };
        outln!("{}", v.map_err(|e| e.to_string())?);
        return Ok(());
    }
    outln!(
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

pub fn discover<E: Exec>(dir: &Path, fingerprint: Fingerprint, json: bool) -> Result<(), Failure> {
    let ControlResponse::Lookup(r) = ask::<E>(
        dir,
        ControlRequest::Lookup { fingerprint },
        Duration::from_secs(120),
    )?
    else {
        return Err(UNEXPECTED.into());
    };
    if json {
        output::json(&r)?;
    } else {
        match &r.found {
            Some(p) => outln!(
                "{} is at {} ({} hops, {} requests)",
                p.fingerprint,
                p.address,
                r.hops,
                r.requests
            ),
            None => outln!(
                "{} not found ({} requests, {} failed); closest peers that answered: {}",
                r.target,
                r.requests,
                r.failures,
                r.closest.len()
            ),
        }
    }
    if r.found.is_none() {
        return Err(Failure::new(
            EXIT_NOT_FOUND,
            format!("{fingerprint} not found"),
        ));
    }
    Ok(())
}

/// `mau status` / `mau server status`: what the lock file, the control
/// channel and the sync state say about the server running here.
pub fn status<E: Exec>(dir: &Path, json: bool, check: bool) -> Result<(), Failure> {
    let Some(holder) = lock::holder(&paths::server_lock(dir)) else {
        return Err(Failure::new(
            EXIT_NO_SERVER,
            format!("no server runs in {}", dir.display()),
        ));
    };
    let table = match ask::<E>(dir, ControlRequest::Table, Duration::from_secs(10))? {
        ControlResponse::Table(t) => t,
        _ => return Err(UNEXPECTED.into()),
    };
    // A check asks up to 5 peers in turn, each bounded by the RPC timeout.
    let wait = Duration::from_secs(if check { 70 } else { 10 });
    let reach = match ask::<E>(dir, ControlRequest::Reachability { check }, wait)? {
        ControlResponse::Reachability(r) => r,
        _ => return Err(UNEXPECTED.into()),
    };
    let uptime = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
        .saturating_sub(holder.started);
    // The sync state is plain JSON: no passphrase needed.
    let synced = mau_store::SyncState::load(dir).map_err(|e| e.to_string())?;
    let mut friends: Vec<(String, Option<String>)> = Account::friend_key_files(dir)
        .map_err(|e| e.to_string())?
        .into_iter()
        .map(|(f, _)| (f.to_string(), synced.last_sync(&f).map(output::time)))
        .collect();
    friends.dedup();
    let filled = table.buckets.iter().filter(|b| b.peers > 0).count();
    if json {
        let v = serde_json::json!({
            "fingerprint": table.fingerprint,
            "pid": holder.pid,
            "listen": holder.listen,
            "advertised": table.address,
            "uptime_secs": uptime,
            "peers": table.peers.len(),
            "buckets": table.buckets.len(),
            "buckets_with_peers": filled,
            "port_mapping": holder.upnp,
            "reachability": reach,
            "metrics": holder.metrics,
            "last_sync": friends.iter().map(|(f, t)| serde_json::json!({"fingerprint": f, "last_sync": t})).collect::<Vec<_>>(),
        });
        return Ok(output::json(&v)?);
    }
    outln!("server:     {} (pid {})", table.fingerprint, holder.pid);
    outln!(
        "listening:  {}",
        holder.listen.as_deref().unwrap_or("(starting)")
    );
    outln!("advertised: {}", table.address);
    outln!("uptime:     {}", age(uptime));
    outln!(
        "peers:      {} in {} buckets ({} with peers)",
        table.peers.len(),
        table.buckets.len(),
        filled
    );
    for line in reach_lines(&reach) {
        outln!("{line}");
    }
    if let Some(m) = &holder.metrics {
        outln!("metrics:    http://{m}/metrics");
    }
    if friends.is_empty() {
        outln!("last sync:  never");
    }
    for (f, t) in &friends {
        outln!("last sync:  {f} {}", t.as_deref().unwrap_or("never"));
    }
    Ok(())
}

/// What `mau status` says of reachability, public address and mapping.
fn reach_lines(r: &ReachStatus) -> Vec<String> {
    let at = r
        .address
        .as_ref()
        .map_or_else(|| r.advertised.to_string(), |a| a.to_string());
    let verdict = match r.state {
        ReachState::Reachable => format!(
            "yes, at {at} (dialed back by peers of {} networks, {} could not)",
            r.reached_by, r.unreached_by
        ),
        ReachState::Unreachable => format!(
            "no, not at {at} (peers of {} networks could not dial back, {} could)",
            r.unreached_by, r.reached_by
        ),
        ReachState::Unknown => {
            "unknown (no quorum of dial-backs yet; `mau status --check` asks now)".to_string()
        }
    };
    let public = match (r.public_ip, r.observed.first()) {
        (Some(ip), _) => {
            let n = r
                .observed
                .iter()
                .find(|o| o.ip == ip)
                .map_or(0, |o| o.networks);
            format!("{ip} (seen by peers of {n} networks)")
        }
        (None, Some(o)) => format!(
            "unknown (best: {}, seen by peers of {} networks)",
            o.ip, o.networks
        ),
        (None, None) => "unknown (no peer said yet)".to_string(),
    };
    let mapping = match &r.mapping {
        Some(m) => mapping_text(m),
        None => "none".to_string(),
    };
    vec![
        format!("reachable:  {verdict}"),
        format!("public IP:  {public}"),
        format!("mapping:    {mapping}"),
    ]
}

/// `pcp 1.2.3.4:8080 -> 192.168.1.5:8080 (lease 29m left)`.
fn mapping_text(m: &Mapping) -> String {
    format!(
        "{} {} -> {} (lease {} left)",
        m.protocol,
        m.external,
        m.internal,
        age(m.lease_left_secs)
    )
}

/// `mau server stop`: asks the server over its control socket, then waits
/// for it to release the directory (its table saved).
pub fn stop<E: Exec>(dir: &Path) -> Result<(), Failure> {
    let lock_path = paths::server_lock(dir);
    let holder = lock::holder(&lock_path);
    match ask::<E>(dir, ControlRequest::Stop, Duration::from_secs(10))? {
        ControlResponse::Stopping => {}
        _ => return Err(UNEXPECTED.into()),
    }
    let started = Instant::now();
    while lock::holder(&lock_path).is_some() {
        if started.elapsed() > Duration::from_secs(30) {
            return Err("the server was asked to stop but still runs after 30 s".into());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    match holder {
        Some(h) => outln!("stopped the server ({})", h.describe()),
        None => outln!("stopped the server"),
    }
    Ok(())
}
