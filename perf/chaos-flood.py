#!/usr/bin/env python3
"""perf/chaos-flood.py - a paced SIP OPTIONS flood from one loopback source address.

Used by perf/chaos (scenario 3): one "attacker" IP sends OPTIONS requests at a fixed rate for a
bounded time while legitimate phones keep working. It counts what it sent and the responses it
got back, and prints one `RESULT k=v ...` line. Every request has a fresh Call-ID and branch,
so none of them is a retransmission the proxy could absorb.

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
    ap.add_argument("--domain", default="sipfront.test")
    a = ap.parse_args()
    host, port = a.dst.rsplit(":", 1)
    for ip in (a.src, host):
        if not ip.startswith("127."):
            sys.exit("chaos-flood: %s is not on 127.0.0.0/8" % ip)
    if not (0 < a.rate <= 1_000_000 and 0 < a.secs <= 600):
        sys.exit("chaos-flood: --rate must be in (0, 1e6] and --secs in (0, 600]")
    dst = (host, int(port))
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
    s.bind((a.src, 0))
    s.setblocking(False)
    me = "%s:%d" % s.getsockname()
    pid = os.getpid()
    head = ("OPTIONS sip:%s SIP/2.0\r\nVia: SIP/2.0/UDP %s;branch=z9hG4bKfl%d-%%d;rport\r\n"
            "Max-Forwards: 70\r\nFrom: <sip:flood@%s>;tag=fl%d\r\nTo: <sip:%s>\r\n"
            "Call-ID: flood-%d-%%d@%s\r\nCSeq: 1 OPTIONS\r\nUser-Agent: chaos-flood\r\n"
            "Content-Length: 0\r\n\r\n") % (a.domain, me, pid, a.src, pid, a.domain, pid, a.src)
    total = int(a.rate * a.secs)
    sent = send_err = answered = 0
    t0 = time.monotonic()
    end = t0 + a.secs + 1.0  # hard bound, even if sending falls behind
    while sent + send_err < total and time.monotonic() < end:
        due = int((time.monotonic() - t0) * a.rate) + 1
        n = min(due, total) - (sent + send_err)
        for _ in range(max(n, 0)):
            i = sent + send_err
            try:
                s.sendto((head % (i, i)).encode(), dst)
                sent += 1
            except (BlockingIOError, OSError):
                send_err += 1
        answered += drain(s)
        if n <= 0:
            select.select([s], [], [], 0.001)
    stop = time.monotonic() + 0.5  # late answers
    while time.monotonic() < stop:
        select.select([s], [], [], 0.05)
        answered += drain(s)
    wall = time.monotonic() - t0
    print("RESULT what=flood src=%s offered_rate=%.0f sent=%d send_errors=%d answered=%d "
          "achieved_rate=%.0f wall=%.2f" % (a.src, a.rate, sent, send_err, answered,
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
