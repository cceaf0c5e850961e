//! Self-test of the NAT lab (tests/netns/nat_lab.rs): hosts behind each
//! kind of router reach the public segment, and the NAT behaves as named,
//! seen by UDP probes on the public side that report the source address
//! they saw.

#[path = "../netns/mod.rs"]
mod netns;

use std::time::Duration;

use netns::nat_lab::{NatKind, NatLab, PCP_PORT};
use netns::{require, scripts_dir};

/// The external `ip:port`s the public probes saw for one socket (source
/// port 40000) of `host` asking each of `dests`.
fn seen(nat: &NatLab, host: &netns::nat_lab::Host, dests: &[String]) -> Vec<String> {
    let script = scripts_dir().join("nat_probe.py");
    let mut args = vec![
        "/usr/bin/python3",
        script.to_str().expect("utf-8"),
        "ask",
        "40000",
    ];
    args.extend(dests.iter().map(String::as_str));
    let out = netns::ok(nat.run_on(host, &args), "nat_probe ask");
    out.lines().map(str::to_string).collect()
}

#[test]
fn each_router_kind_translates_as_named() {
    if !require("nat_lab", "python3", "python3") {
        return;
    }
    let Some(mut nat) = NatLab::builder("natlab")
        .public_hosts(2)
        .home_with_miniupnpd(NatKind::EndpointIndependent, 1)
        .home(NatKind::Symmetric, 1)
        .build()
    else {
        return;
    };
    let script = scripts_dir().join("nat_probe.py");
    let script = script.to_str().expect("utf-8");
    for (i, host) in nat.public.clone().iter().enumerate() {
        let log = nat.path(&format!("probe{i}.log"));
        let p = nat.spawn(
            &host.ns,
            &["/usr/bin/python3", script, "serve", "3478,3479", "30"],
            &[],
            &log,
        );
        assert_eq!(
            nat.read_line(p, Duration::from_secs(10)).as_deref(),
            Some("ready\n"),
            "probe server did not start"
        );
    }
    let dests: Vec<String> = [(0, 3478), (1, 3478), (0, 3479)]
        .iter()
        .map(|&(i, port)| nat.public[i].addr(port).to_string())
        .collect();

    // Endpoint-independent: the home's address, one port for all three.
    let eim = seen(&nat, &nat.homes[0].hosts[0], &dests);
    let wan = nat.wan_ip(0).to_string();
    assert_eq!(eim.len(), 3, "{eim:?}");
    for s in &eim {
        assert_eq!(s, &format!("{wan}:40000"), "EIM router: {eim:?}");
    }

    // Symmetric: the home's address, a new port per destination.
    let sym = seen(&nat, &nat.homes[1].hosts[0], &dests);
    let wan = nat.wan_ip(1).to_string();
    assert_eq!(sym.len(), 3, "{sym:?}");
    let ports: Vec<&str> = sym
        .iter()
        .map(|s| {
            let (ip, port) = s.rsplit_once(':').expect("ip:port");
            assert_eq!(ip, wan, "symmetric router: {sym:?}");
            port
        })
        .collect();
    assert!(
        ports.iter().any(|p| *p != ports[0]),
        "symmetric router kept one port: {sym:?}"
    );

    // IPv6 is routed, not translated, and firewalled: the home host gets
    // out with its own address; a public host cannot get in.
    let home = nat.homes[0].hosts[0].clone();
    let log = nat.path("probe-home.log");
    let p = nat.spawn(
        &home.ns,
        &["/usr/bin/python3", script, "serve", "3478", "30"],
        &[],
        &log,
    );
    assert!(nat.read_line(p, Duration::from_secs(10)).is_some());
    let out = seen(&nat, &home, &[format!("[{}]:3478", nat.public[0].ip6)]);
    assert_eq!(
        out,
        [format!("[{}]:40000", home.ip6)],
        "home -> public over IPv6"
    );
    let inbound = seen(&nat, &nat.public[0], &[format!("[{}]:3478", home.ip6)]);
    assert_eq!(inbound, ["none"], "unsolicited IPv6 got into the home");
    let inbound = seen(&nat, &nat.public[0], &[format!("{}:3478", nat.wan_ip(0))]);
    assert_eq!(inbound, ["none"], "unsolicited IPv4 got into the home");

    // The router with miniupnpd serves NAT-PMP/PCP on its LAN side.
    let ss = nat.sh(&nat.homes[0].router, &["ss", "-lnu"]);
    let gw = format!("{}:{PCP_PORT}", nat.homes[0].gateway);
    assert!(String::from_utf8_lossy(&ss.stdout).contains(&gw));
    assert!(nat.homes[1].miniupnpd.is_none());
}
