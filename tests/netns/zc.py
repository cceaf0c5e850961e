#!/usr/bin/python3
"""python-zeroconf side of the LAN tests; run only inside a test namespace.

  zc.py resolve FPR SECONDS [IP]   resolve FPR._mau._tcp.local. (IPv4+IPv6; until IP is
                                   among its addresses), print JSON
  zc.py resolve6 FPR SECONDS       the same with zeroconf bound to IPv6 only
  zc.py publish NAME PORT IPS SECS publish NAME._mau._tcp.local. at IPS (comma list),
                                   print "published", unregister after SECS
  zc.py wait-removed FPR SECONDS   print "added" when FPR appears, "removed" when it leaves
  zc.py flood IFACE_IP SECONDS     send malformed/truncated/oversized mDNS packets

Every loop is bounded by SECONDS.
"""
import json
import random
import socket
import struct
import sys
import time

from zeroconf import IPVersion, ServiceBrowser, ServiceInfo, ServiceStateChange, Zeroconf

TYPE = "_mau._tcp.local."


def resolve(fpr, seconds, ipv, want=None):
    zc = Zeroconf(ip_version=ipv)
    name = f"{fpr}.{TYPE}"
    deadline = time.time() + seconds
    try:
        while time.time() < deadline:
            info = ServiceInfo(TYPE, name)
            if info.request(zc, 2000):
                addrs = info.parsed_addresses()
                if want is not None and want not in addrs:
                    time.sleep(0.3)
                    continue
                if ipv == IPVersion.All and not ("fd77::1" in addrs and any(":" not in a for a in addrs)):
                    time.sleep(0.3)
                    continue
                txt = {k.decode(): (v.decode() if v is not None else None) for k, v in info.properties.items()}
                print(json.dumps({"port": info.port, "server": info.server, "addresses": addrs, "txt": txt}))
                return 0
        print("not found", file=sys.stderr)
        return 1
    finally:
        zc.close()


def publish(name, port, ips, seconds):
    addrs = [socket.inet_pton(socket.AF_INET6 if ":" in ip else socket.AF_INET, ip) for ip in ips.split(",")]
    ipv = IPVersion.V6Only if all(":" in ip for ip in ips.split(",")) else IPVersion.All
    zc = Zeroconf(ip_version=ipv)
    info = ServiceInfo(TYPE, f"{name}.{TYPE}", addresses=addrs, port=port,
                       properties={"fpr": name}, server=f"zc-{name[:8]}.local.")
    zc.register_service(info)
    print("published", flush=True)
    time.sleep(seconds)
    zc.unregister_service(info)
    zc.close()
    return 0


def wait_removed(fpr, seconds):
    zc = Zeroconf(ip_version=IPVersion.All)
    wanted = f"{fpr}.{TYPE}"
    state = {"added": False, "removed": False}

    def handler(zeroconf, service_type, name, state_change):
        if name != wanted:
            return
        if state_change is ServiceStateChange.Added and not state["added"]:
            state["added"] = True
            print("added", flush=True)
        elif state_change is ServiceStateChange.Removed and state["added"]:
            state["removed"] = True
            print("removed", flush=True)

    ServiceBrowser(zc, TYPE, handlers=[handler])
    deadline = time.time() + seconds
    while time.time() < deadline and not state["removed"]:
        time.sleep(0.05)
    zc.close()
    return 0 if state["removed"] else 1


def flood(ip, seconds):
    """Hostile input: random, truncated, oversized and looping packets."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(ip))
    s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 255)
    rnd = random.Random(7)
    # A valid answer naming a _mau service, to truncate and mutate.
    def name(labels):
        return b"".join(bytes([len(l)]) + l for l in labels) + b"\0"
    inst = name([b"ef" * 20, b"_mau", b"_tcp", b"local"])
    ptr = name([b"_mau", b"_tcp", b"local"]) + struct.pack(">HHIH", 12, 1, 120, len(inst)) + inst
    srv = inst + struct.pack(">HHIH", 33, 0x8001, 120, 6 + 8) + struct.pack(">HHH", 0, 0, 7000) + name([b"x", b"local"])[:8]
    good = struct.pack(">HHHHHH", 0, 0x8400, 0, 2, 0, 0) + ptr + srv
    sent = 0
    deadline = time.time() + seconds
    i = 0
    while time.time() < deadline and sent < 20000:
        i += 1
        kind = i % 6
        if kind == 0:
            pkt = bytes(rnd.getrandbits(8) for _ in range(rnd.randrange(0, 600)))
        elif kind == 1:
            pkt = good[: rnd.randrange(0, len(good))]
        elif kind == 2:
            pkt = good + bytes(8000)  # oversized
        elif kind == 3:
            # compression pointer loop
            pkt = struct.pack(">HHHHHH", 0, 0x8400, 0, 1, 0, 0) + b"\xc0\x0c" + struct.pack(">HHIH", 12, 1, 120, 2) + b"\xc0\x0c"
        elif kind == 4:
            # header claims 65535 records
            pkt = struct.pack(">HHHHHH", 0, 0x8400, 65535, 65535, 65535, 65535) + good[12:]
        else:
            # many distinct fake services (memory growth); they never answer TLS
            fp = "%040x" % rnd.getrandbits(160)
            inst = name([fp.encode(), b"_mau", b"_tcp", b"local"])
            ptr = name([b"_mau", b"_tcp", b"local"]) + struct.pack(">HHIH", 12, 1, 120, len(inst)) + inst
            pkt = struct.pack(">HHHHHH", 0, 0x8400, 0, 1, 0, 0) + ptr
        try:
            s.sendto(pkt, ("224.0.0.251", 5353))
            sent += 1
        except OSError:
            pass
        if i % 200 == 0:
            time.sleep(0.01)
    print(json.dumps({"sent": sent}))
    return 0


def main():
    cmd = sys.argv[1]
    if cmd == "resolve":
        want = sys.argv[4] if len(sys.argv) > 4 else None
        return resolve(sys.argv[2], float(sys.argv[3]), IPVersion.All, want)
    if cmd == "resolve6":
        return resolve(sys.argv[2], float(sys.argv[3]), IPVersion.V6Only)
    if cmd == "publish":
        return publish(sys.argv[2], int(sys.argv[3]), sys.argv[4], float(sys.argv[5]))
    if cmd == "wait-removed":
        return wait_removed(sys.argv[2], float(sys.argv[3]))
    if cmd == "flood":
        return flood(sys.argv[2], float(sys.argv[3]))
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
