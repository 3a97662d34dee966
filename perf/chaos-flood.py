#!/usr/bin/env python3
"""perf/chaos-flood.py - a paced SIP OPTIONS flood from loopback source addresses.

Used by perf/chaos (scenario 3): one "attacker" IP sends OPTIONS requests at a fixed rate for a
bounded time while legitimate phones keep working. It counts what it sent and the responses it
got back, and prints one `RESULT k=v ...` line. Every request has a fresh Call-ID and branch,
so none of them is a retransmission the proxy could absorb. With --sources N the flood is
spread round-robin over N consecutive addresses from --src (each under a per-source limit
that one address would hit).

    perf/chaos-flood.py --src 127.0.0.50 --dst 127.0.0.1:25160 --rate 10000 --secs 30
"""
import argparse
import os
import select
import socket
import sys
import time


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    ap.add_argument("--src", default="127.0.0.50", help="source IP (loopback only)")
    ap.add_argument("--dst", required=True, help="proxy HOST:PORT (loopback only)")
    ap.add_argument("--rate", type=float, default=10000.0, help="requests per second")
    ap.add_argument("--secs", type=float, default=30.0, help="how long to flood")
    ap.add_argument("--sources", type=int, default=1, help="source addresses (1..100)")
    ap.add_argument("--domain", default="sipfront.test")
    a = ap.parse_args()
    host, port = a.dst.rsplit(":", 1)
    for ip in (a.src, host):
        if not ip.startswith("127."):
            sys.exit("chaos-flood: %s is not on 127.0.0.0/8" % ip)
    if not (0 < a.rate <= 1_000_000 and 0 < a.secs <= 600 and 1 <= a.sources <= 100):
        sys.exit("chaos-flood: --rate must be in (0, 1e6], --secs in (0, 600], --sources 1..100")
    net, last = a.src.rsplit(".", 1)
    if int(last) + a.sources > 255:
        sys.exit("chaos-flood: --src + --sources must stay within 127.x.y.0/24")
    dst = (host, int(port))
    pid = os.getpid()
    socks, heads = [], []
    for k in range(a.sources):
        ip = "%s.%d" % (net, int(last) + k)
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
        s.bind((ip, 0))
        s.setblocking(False)
        me = "%s:%d" % s.getsockname()
        socks.append(s)
        heads.append(("OPTIONS sip:%s SIP/2.0\r\nVia: SIP/2.0/UDP %s;branch=z9hG4bKfl%d-%%d;rport\r\n"
                      "Max-Forwards: 70\r\nFrom: <sip:flood@%s>;tag=fl%d\r\nTo: <sip:%s>\r\n"
                      "Call-ID: flood-%d-%%d@%s\r\nCSeq: 1 OPTIONS\r\nUser-Agent: chaos-flood\r\n"
                      "Content-Length: 0\r\n\r\n") % (a.domain, me, pid, ip, pid, a.domain, pid, ip))
    total = int(a.rate * a.secs)
    sent = send_err = answered = 0
    t0 = time.monotonic()
    end = t0 + a.secs + 1.0  # hard bound, even if sending falls behind
    while sent + send_err < total and time.monotonic() < end:
        due = int((time.monotonic() - t0) * a.rate) + 1
        n = min(due, total) - (sent + send_err)
        for _ in range(max(n, 0)):
            i = sent + send_err
            k = i % a.sources
            try:
                socks[k].sendto((heads[k] % (i, i)).encode(), dst)
                sent += 1
            except (BlockingIOError, OSError):
                send_err += 1
        answered += sum(drain(s) for s in socks)
        if n <= 0:
            select.select(socks, [], [], 0.001)
    stop = time.monotonic() + 0.5  # late answers
    while time.monotonic() < stop:
        select.select(socks, [], [], 0.05)
        answered += sum(drain(s) for s in socks)
    wall = time.monotonic() - t0
    src = a.src if a.sources == 1 else "%s+%d" % (a.src, a.sources - 1)
    print("RESULT what=flood src=%s offered_rate=%.0f sent=%d send_errors=%d answered=%d "
          "achieved_rate=%.0f wall=%.2f" % (src, a.rate, sent, send_err, answered,
                                             sent / max(wall, 1e-9), wall))


def drain(s):
    n = 0
    for _ in range(10000):
        try:
            s.recv(65535)
            n += 1
        except (BlockingIOError, InterruptedError):
            break
    return n


if __name__ == "__main__":
    main()
