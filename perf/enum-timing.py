#!/usr/bin/env python3
"""perf/enum-timing.py - user enumeration by timing: how long a wrong password takes to be
refused for a known user and for unknown ones.

An attacker who can tell the two apart learns which extensions exist without a single right
password (issue #16: an unknown user costs the proxy a database lookup). For each try the
script sends a REGISTER, answers the 401 with a wrong password (MD5 digest) and times the
second 401; known and unknown users alternate, each unknown name is new (a fresh database
miss). Try i comes from source address --src + i (two failures per address: below a ban,
as an attacker rotating addresses would do). Prints one `RESULT k=v ...` line with the
medians and their ratio.

    perf/enum-timing.py --src 127.0.0.70 --dst 127.0.0.1:25260 --known 1001 --tries 7
"""
import argparse
import hashlib
import os
import re
import socket
import statistics
import sys
import time


def md5(s):
    return hashlib.md5(s.encode()).hexdigest()


def register(me, dst, domain, user, call_id, cseq, auth=""):
    return ("REGISTER sip:%s SIP/2.0\r\nVia: SIP/2.0/UDP %s;branch=z9hG4bK%s.%d;rport\r\n"
            "Max-Forwards: 70\r\nFrom: <sip:%s@%s>;tag=t%s\r\nTo: <sip:%s@%s>\r\n"
            "Call-ID: %s\r\nCSeq: %d REGISTER\r\nContact: <sip:%s@%s>\r\nExpires: 60\r\n"
            "User-Agent: enum-timing\r\n%sContent-Length: 0\r\n\r\n") % (
        domain, me, call_id, cseq, user, domain, call_id, user, domain, call_id, cseq, user, me, auth)


def recv_final(s, cseq, limit):
    deadline = time.monotonic() + limit
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        s.settimeout(left)
        try:
            data = s.recv(65535).decode(errors="replace")
        except OSError:
            return None
        if re.search(r"(?im)^CSeq:\s*%d REGISTER" % cseq, data) and not data.startswith("SIP/2.0 1"):
            return data


def wrong_password_ms(s, me, dst, domain, user, call_id):
    s.sendto(register(me, dst, domain, user, call_id, 1).encode(), dst)
    ch = recv_final(s, 1, 5.0)
    if ch is None or not ch.startswith("SIP/2.0 401"):
        return None
    realm = re.search(r'realm="([^"]*)"', ch).group(1)
    nonce = re.search(r'nonce="([^"]*)"', ch).group(1)
    opaque = re.search(r'opaque="([^"]*)"', ch)
    uri = "sip:%s" % domain
    ha1 = md5("%s:%s:not-the-password" % (user, realm))
    ha2 = md5("REGISTER:%s" % uri)
    resp = md5("%s:%s:00000001:c0ffee:auth:%s" % (ha1, nonce, ha2))
    auth = ('Authorization: Digest username="%s", realm="%s", nonce="%s", uri="%s", '
            'response="%s", algorithm=MD5, qop=auth, nc=00000001, cnonce="c0ffee"%s\r\n') % (
        user, realm, nonce, uri, resp, ', opaque="%s"' % opaque.group(1) if opaque else "")
    t0 = time.monotonic()
    s.sendto(register(me, dst, domain, user, call_id, 2, auth).encode(), dst)
    again = recv_final(s, 2, 5.0)
    if again is None:
        return None
    return (time.monotonic() - t0) * 1000.0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    ap.add_argument("--src", default="127.0.0.70", help="source IP (loopback only)")
    ap.add_argument("--dst", required=True, help="proxy HOST:PORT (loopback only)")
    ap.add_argument("--known", default="1001", help="an existing user")
    ap.add_argument("--tries", type=int, default=7, help="tries per kind (1..50)")
    ap.add_argument("--domain", default="sipfront.test")
    a = ap.parse_args()
    host, port = a.dst.rsplit(":", 1)
    for ip in (a.src, host):
        if not ip.startswith("127."):
            sys.exit("enum-timing: %s is not on 127.0.0.0/8" % ip)
    if not 1 <= a.tries <= 50:
        sys.exit("enum-timing: --tries must be 1..50")
    dst = (host, int(port))
    pid = os.getpid()
    known, unknown = [], []
    base = a.src.rsplit(".", 1)
    if int(base[1]) + a.tries > 254:
        sys.exit("enum-timing: --src + --tries must stay below 127.x.y.255")
    for i in range(a.tries):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("%s.%d" % (base[0], int(base[1]) + i), 0))
        me = "%s:%d" % s.getsockname()
        k = wrong_password_ms(s, me, dst, a.domain, a.known, "k%d-%d" % (i, pid))
        u = wrong_password_ms(s, me, dst, a.domain, "9%05d" % (pid % 1000 * 50 + i), "u%d-%d" % (i, pid))
        if k is not None:
            known.append(k)
        if u is not None:
            unknown.append(u)
        s.close()
    if not known or not unknown:
        print("RESULT what=enum-timing answered_known=%d answered_unknown=%d (no answer: banned?)"
              % (len(known), len(unknown)))
        return
    mk, mu = statistics.median(known), statistics.median(unknown)
    print("RESULT what=enum-timing tries=%d known_median_ms=%.2f unknown_median_ms=%.2f ratio=%.2f"
          % (a.tries, mk, mu, max(mk, mu) / max(min(mk, mu), 1e-6)))
    print("known   ms: " + " ".join("%.2f" % x for x in known))
    print("unknown ms: " + " ".join("%.2f" % x for x in unknown))


if __name__ == "__main__":
    main()
