#!/usr/bin/env python3
"""UDP probe for the NAT lab self-test (tests/netns/nat_lab.rs).

serve PORTS SECONDS: on each of PORTS (comma-separated) answers every
  datagram with the source "ip:port" it saw; prints "ready" once bound;
  exits after SECONDS.
ask SRC_PORT DEST... : from one socket bound to SRC_PORT (one per family),
  asks each DEST ("ip:port" or "[ip6]:port") and prints the address each one saw, one line per DEST.
"""
import select
import socket
import sys
import time


def serve(ports, seconds):
    socks = []
    for port in ports:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("0.0.0.0", port))
        socks.append(s)
        s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        s.bind(("::", port))
        socks.append(s)
    print("ready", flush=True)
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        readable, _, _ = select.select(socks, [], [], 0.2)
        for s in readable:
            _, src = s.recvfrom(64)
            ip = f"[{src[0]}]" if ":" in src[0] else src[0]
            s.sendto(f"{ip}:{src[1]}".encode(), src)


def ask(src_port, dests):
    v4 = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    v4.bind(("0.0.0.0", src_port))
    v6 = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    v6.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    v6.bind(("::", src_port))
    for dest in dests:
        host, port = dest.rsplit(":", 1)
        s = v6 if host.startswith("[") else v4
        host = host.strip("[]")
        s.settimeout(0.5)
        seen = "none"
        for _ in range(6):
            s.sendto(b"?", (host, int(port)))
            try:
                data, _ = s.recvfrom(64)
                seen = data.decode()
                break
            except socket.timeout:
                continue
        print(seen, flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "serve":
        serve([int(p) for p in sys.argv[2].split(",")], float(sys.argv[3]))
    else:
        ask(int(sys.argv[2]), sys.argv[3:])
