#!/usr/bin/python3
"""A hostile UPnP "gateway" for the LAN tests; run only inside a test namespace.

  ssdp_bogus.py SECONDS

Answers every SSDP M-SEARCH with junk (random bytes, no LOCATION, a huge
header, a LOCATION whose description is garbage XML) and serves that garbage
over HTTP on port 5000. Prints "ready", stops after SECONDS.
"""
import http.server
import random
import socket
import struct
import sys
import threading
import time


class Junk(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = b"<root><device><serviceList><service><controlURL>" + b"A" * 200000
        self.send_response(200)
        self.send_header("Content-Type", "text/xml")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_POST = do_GET

    def log_message(self, *args):
        pass


def main():
    seconds = float(sys.argv[1])
    httpd = http.server.HTTPServer(("0.0.0.0", 5000), Junk)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("", 1900))
    mreq = struct.pack("4s4s", socket.inet_aton("239.255.255.250"), socket.inet_aton("0.0.0.0"))
    s.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreq)
    s.settimeout(0.2)
    rnd = random.Random(3)
    answers = [
        lambda: bytes(rnd.getrandbits(8) for _ in range(rnd.randrange(1, 1400))),
        lambda: b"HTTP/1.1 200 OK\r\nST: urn:schemas-upnp-org:device:InternetGatewayDevice:1\r\n\r\n",
        lambda: b"HTTP/1.1 200 OK\r\nLOCATION: " + b"h" * 60000 + b"\r\n\r\n",
        lambda: b"HTTP/1.1 200 OK\r\nLOCATION: http://%s:5000/desc.xml\r\nST: urn:schemas-upnp-org:device:InternetGatewayDevice:1\r\n\r\n",
        lambda: b"\xff\xfe\x00LOCATION: \x00\r\n",
    ]
    print("ready", flush=True)
    deadline = time.time() + seconds
    n = 0
    while time.time() < deadline:
        try:
            data, peer = s.recvfrom(2048)
        except socket.timeout:
            continue
        if b"M-SEARCH" not in data:
            continue
        for a in answers:
            pkt = a()
            if b"%s" in pkt:
                pkt = pkt.replace(b"%s", s.getsockname()[0].encode() if s.getsockname()[0] != "0.0.0.0" else b"10.77.0.2")
            try:
                s.sendto(pkt[:65000], peer)
                n += 1
            except OSError:
                pass
    print("answered", n, flush=True)
    httpd.shutdown()


if __name__ == "__main__":
    main()
