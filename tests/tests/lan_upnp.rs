//! UPnP IGD port mapping against miniupnpd (an independent implementation)
//! acting as the router between two network namespaces:
//!
//! ```text
//!  [lan ns] node 192.168.77.2 -- 192.168.77.1 [router ns: miniupnpd, nftables] 11.77.0.1 -- 11.77.0.2 [wan ns] peer
//! ```
//!
//! (11.77.0.0/24 only exists inside these namespaces; miniupnpd refuses
//! reserved ranges such as TEST-NET on its external interface.)
//!
//! Every test skips (with a message) when not root or without `ip netns`.

#[path = "../netns/mod.rs"]
mod netns;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use netns::{init_account, mau_bin, require, Lab, PASSPHRASE};

/// The firewall structure miniupnpd fills in (its default names).
const NFT_RULES: &str = "
table inet filter {
    chain forward { type filter hook forward priority 0; policy accept; jump miniupnpd; }
    chain miniupnpd { }
    chain prerouting { type nat hook prerouting priority -100; policy accept; jump prerouting_miniupnpd; }
    chain postrouting { type nat hook postrouting priority 100; policy accept; jump postrouting_miniupnpd; }
    chain prerouting_miniupnpd { }
    chain postrouting_miniupnpd { }
}
";

struct Net {
    lab: Lab,
    lan: String,
    router: String,
    wan: String,
}

/// The three namespaces, routing, nftables and miniupnpd (`allow`: whether
/// it grants mappings to the LAN).
fn setup(tag: &str, allow: bool) -> Option<Net> {
    let mut lab = Lab::new(tag)?;
    let tools = [
        ("miniupnpd", "miniupnpd miniupnpd-nftables"),
        ("upnpc", "miniupnpc"),
        ("nft", "nftables"),
    ];
    if !tools.iter().all(|(tool, pkg)| require(tag, tool, pkg)) {
        return None;
    }
    let lan = lab.add_ns("lan");
    let router = lab.add_ns("rtr");
    let wan = lab.add_ns("wan");
    lab.veth(&lan, "eth0", &router, "lan0");
    lab.veth(&wan, "eth0", &router, "wan0");
    lab.addr(&lan, "eth0", "192.168.77.2/24");
    lab.addr(&router, "lan0", "192.168.77.1/24");
    lab.addr(&router, "wan0", "11.77.0.1/24");
    lab.addr(&wan, "eth0", "11.77.0.2/24");
    lab.sh(
        &lan,
        &["ip", "route", "add", "default", "via", "192.168.77.1"],
    );
    lab.sh(
        &wan,
        &["ip", "route", "add", "192.168.77.0/24", "via", "11.77.0.1"],
    );
    lab.sh(&router, &["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"]);
    let nft = lab.path("router.nft");
    std::fs::write(&nft, NFT_RULES).expect("nft file");
    lab.sh(&router, &["nft", "-f", nft.to_str().expect("utf-8")]);
    let rules = if allow {
        "allow 1024-65535 192.168.77.0/24 1024-65535\ndeny 0-65535 0.0.0.0/0 0-65535\n"
    } else {
        "deny 0-65535 0.0.0.0/0 0-65535\n"
    };
    let conf = lab.path("miniupnpd.conf");
    std::fs::write(
        &conf,
        format!(
            "ext_ifname=wan0\nlistening_ip=lan0\nhttp_port=5555\nenable_natpmp=no\nenable_upnp=yes\n\
             secure_mode=yes\nsystem_uptime=yes\nupnp_table_name=filter\nupnp_nat_table_name=filter\n\
             upnp_forward_chain=miniupnpd\nupnp_nat_chain=prerouting_miniupnpd\n\
             upnp_nat_postrouting_chain=postrouting_miniupnpd\nmin_lifetime=1\n\
             uuid=3d3cec3a-8cf0-11e0-98ee-001a6bd2d07d\n{rules}"
        ),
    )
    .expect("miniupnpd.conf");
    let pid = lab.path("miniupnpd.pid");
    let log = lab.path("miniupnpd.log");
    lab.spawn(
        &router,
        &[
            "miniupnpd",
            "-d",
            "-f",
            conf.to_str().expect("utf-8"),
            "-P",
            pid.to_str().expect("utf-8"),
        ],
        &[],
        &log,
    );
    // Wait until it serves its description.
    let start = Instant::now();
    loop {
        let out = lab.try_sh(&lan, &["upnpc", "-s"]);
        if String::from_utf8_lossy(&out.stdout).contains("ExternalIPAddress = 11.77.0.1") {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "miniupnpd did not come up: {} {}",
            String::from_utf8_lossy(&out.stdout),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    Some(Net {
        lab,
        lan,
        router,
        wan,
    })
}

/// Starts a server in `ns`; returns its index and banner.
fn server(lab: &mut Lab, ns: &str, dir: &Path, args: &[&str]) -> (usize, String) {
    let bin = mau_bin();
    let mut a: Vec<&str> = vec![
        bin.to_str().expect("utf-8"),
        "--dir",
        dir.to_str().expect("utf-8"),
    ];
    a.extend(["server", "start", "--no-mdns"]);
    a.extend(args);
    let log = dir.join("server.log");
    let i = lab.spawn(
        ns,
        &a,
        &[("MAU_PASSPHRASE", PASSPHRASE), ("MAU_LOG_LEVEL", "debug")],
        &log,
    );
    let banner = lab
        .read_line(i, Duration::from_secs(60))
        .unwrap_or_default();
    assert!(
        banner.contains("listening"),
        "no banner: {banner:?}; log: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    (i, banner)
}

fn mappings(net: &Net) -> String {
    String::from_utf8_lossy(&net.lab.try_sh(&net.lan, &["upnpc", "-l"]).stdout).to_string()
}

fn table(lab: &Lab, ns: &str, dir: &Path) -> String {
    let bin = mau_bin();
    let out = lab.try_sh(
        ns,
        &[
            bin.to_str().expect("utf-8"),
            "--dir",
            dir.to_str().expect("utf-8"),
            "peers",
            "list",
            "--json",
        ],
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

fn log_of(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("server.log")).unwrap_or_default()
}

#[test]
fn maps_the_port_is_reachable_from_outside_and_removes_it() {
    let Some(mut net) = setup("upnp", true) else {
        return;
    };
    let node_dir: PathBuf = net.lab.path("node");
    let peer_dir: PathBuf = net.lab.path("peer");
    let node_fp = init_account(&node_dir, "node");
    let peer_fp = init_account(&peer_dir, "peer");
    let lan = net.lan.clone();
    let node_start = Instant::now();
    let (node, banner) = server(
        &mut net.lab,
        &lan,
        &node_dir,
        &["--listen", "0.0.0.0:7000", "--upnp", "--upnp-lease", "4"],
    );
    assert!(
        banner.contains("advertised as 11.77.0.1:7000"),
        "not advertising the external address: {banner}; log: {}",
        log_of(&node_dir)
    );
    let listed = mappings(&net);
    assert!(
        listed.contains("7000->192.168.77.2:7000") && listed.contains("'mau'"),
        "upnpc -l does not list our mapping: {listed}"
    );
    // A peer on the Internet side joins through the mapped port.
    let wan = net.wan.clone();
    let spec = format!("{node_fp}@11.77.0.1:7000");
    let (_peer, _) = server(
        &mut net.lab,
        &wan,
        &peer_dir,
        &["--listen", "11.77.0.2:7000", "--bootstrap", &spec],
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    let (mut a, mut b) = (String::new(), String::new());
    while Instant::now() < deadline {
        a = table(&net.lab, &wan, &peer_dir);
        b = table(&net.lab, &lan, &node_dir);
        if a.contains(&node_fp) && b.contains(&peer_fp) {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        a.contains(&node_fp) && a.contains("11.77.0.1:7000"),
        "the outside peer did not reach the node through the mapping: {a}; log: {}",
        log_of(&peer_dir)
    );
    assert!(
        b.contains(&peer_fp),
        "the node did not verify the outside peer: {b}"
    );
    // The 4 s lease is renewed every 2 s: the mapping outlives it.
    let wait = Duration::from_secs(9).saturating_sub(node_start.elapsed());
    std::thread::sleep(wait);
    let listed = mappings(&net);
    assert!(
        listed.contains("7000->192.168.77.2:7000"),
        "the mapping expired (not renewed): {listed}"
    );
    assert!(log_of(&node_dir).contains("UPnP: lease renewed"));
    // Shutdown deletes the mapping.
    assert!(
        net.lab.interrupt(node, Duration::from_secs(20)),
        "node did not stop cleanly"
    );
    let listed = mappings(&net);
    assert!(
        !listed.contains("7000->192.168.77.2:7000"),
        "mapping left behind: {listed}"
    );
    assert!(log_of(&node_dir).contains("UPnP: mapping removed"));
    let _ = &net.router;
}

#[test]
fn a_refusing_gateway_leaves_the_node_running_with_a_warning() {
    let Some(mut net) = setup("upnpno", false) else {
        return;
    };
    let dir = net.lab.path("node");
    init_account(&dir, "node");
    let lan = net.lan.clone();
    let (node, banner) = server(
        &mut net.lab,
        &lan,
        &dir,
        &["--listen", "0.0.0.0:7000", "--upnp"],
    );
    assert!(banner.contains("advertised as 0.0.0.0:7000"), "{banner}");
    std::thread::sleep(Duration::from_secs(1));
    assert!(net.lab.running(node), "node died: {}", log_of(&dir));
    let log = log_of(&dir);
    assert!(log.contains("UPnP: no port mapping"), "no warning: {log}");
    assert!(!mappings(&net).contains("->192.168.77.2:7000"));
    // It still serves: a local peer can ping it (mutual TLS) on its LAN address.
    assert!(net.lab.interrupt(node, Duration::from_secs(20)));
}

#[test]
fn bogus_ssdp_answers_leave_the_node_running() {
    let Some(mut lab) = Lab::new("ssdpbad") else {
        return;
    };
    let nss = lab.bridged_lan(2);
    // A hostile "gateway" answering every M-SEARCH with junk.
    let script = netns::scripts_dir().join("ssdp_bogus.py");
    let log = lab.path("bogus.log");
    let b = lab.spawn(
        &nss[1],
        &["/usr/bin/python3", script.to_str().expect("utf-8"), "40"],
        &[],
        &log,
    );
    assert!(
        lab.read_line(b, Duration::from_secs(10)).is_some(),
        "bogus responder did not start"
    );
    let dir = lab.path("node");
    init_account(&dir, "node");
    let start = Instant::now();
    let (node, banner) = server(
        &mut lab,
        &nss[0],
        &dir,
        &["--listen", "0.0.0.0:7000", "--upnp"],
    );
    assert!(
        start.elapsed() < Duration::from_secs(40),
        "UPnP step not bounded"
    );
    assert!(banner.contains("advertised as 0.0.0.0:7000"), "{banner}");
    std::thread::sleep(Duration::from_secs(1));
    assert!(lab.running(node), "node died: {}", log_of(&dir));
    assert!(log_of(&dir).contains("UPnP: no port mapping"));
    assert!(lab.interrupt(node, Duration::from_secs(20)));
}
