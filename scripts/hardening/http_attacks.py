#!/usr/bin/env python3
"""Before/after figures for the HTTP hardening of issue 12 (one attack per line of output).

Usage: scripts/hardening/http_attacks.py PATH/TO/statecast [attack ...]
Attacks: state, empty_objects, attributes, slowloris, idle_cap, csrf, host, referrer.
Each starts its own server on loopback ports with --data-dir off and prints one line.
Peak RSS is VmHWM, reset (clear_refs 5) just before the attack.
"""

import json
import os
import re
import socket
import subprocess
import sys
import time

BIN = sys.argv[1]


def start(extra=()):
    proc = subprocess.Popen(
        [BIN, "--tcp", "127.0.0.1:0", "--udp", "127.0.0.1:0", "--http", "127.0.0.1:0",
         "--data-dir", "off", *extra],
        stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, env={**os.environ, "RUST_LOG": "info"},
        text=True)
    addrs = {}
    while len(addrs) < 3:
        line = proc.stderr.readline()
        if not line:
            raise SystemExit("server exited")
        m = re.search(r"(riemann tcp|riemann udp|http) listening.*addr=(\S+)", line)
        m = m or re.search(r"addr=(\S+).*?(riemann tcp|riemann udp|http) listening", line)
        if "listening" in line:
            addr = re.search(r"addr=(\S+)", line).group(1)
            kind = "tcp" if "riemann tcp" in line else "udp" if "riemann udp" in line else "http"
            host, port = addr.rsplit(":", 1)
            addrs[kind] = (host, int(port))
    proc.addrs = addrs
    return proc


def rss(proc, field="VmHWM"):
    with open(f"/proc/{proc.pid}/status") as f:
        for line in f:
            if line.startswith(field):
                return int(line.split()[1]) // 1024  # MiB


def reset_peak(proc):
    with open(f"/proc/{proc.pid}/clear_refs", "w") as f:
        f.write("5")


def request(addr, method, path, body=b"", headers=(), host=None, timeout=120):
    s = socket.create_connection(addr, timeout=timeout)
    head = f"{method} {path} HTTP/1.1\r\nHost: {host or '%s:%d' % addr}\r\nConnection: close\r\n" \
           f"Content-Length: {len(body)}\r\n"
    for k, v in headers:
        head += f"{k}: {v}\r\n"
    s.sendall(head.encode() + b"\r\n" + body)
    data = b""
    try:
        while True:
            chunk = s.recv(1 << 20)
            if not chunk:
                break
            data += chunk
    except (ConnectionResetError, socket.timeout):
        pass
    s.close()
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split()[1]) if head else 0
    return status, head.decode(errors="replace"), body


def stop(proc):
    proc.kill()
    proc.wait()


def attack_state():
    """/api/state over 50k keys with 10 attributes each: peak RSS rise during one GET."""
    p = start(["--max-body-bytes", str(64 << 20)])
    http = p.addrs["http"]
    for chunk in range(5):
        events = [{"host": f"h{chunk}-{i}", "service": "svc", "state": "ok",
                   **{f"attr{a}": "v" * 20 for a in range(10)}} for i in range(10_000)]
        st, _, b = request(http, "POST", "/api/event", json.dumps(events).encode())
        assert st == 200, b
    time.sleep(0.5)
    before = rss(p, "VmRSS")
    reset_peak(p)
    t = time.time()
    st, _, body = request(http, "GET", "/api/state")
    took = time.time() - t
    peak = rss(p)
    print(f"state: GET /api/state 50k keys x 10 attrs -> {st}, {len(body) / 1e6:.1f} MB, "
          f"{took:.2f} s; RSS {before} MiB, peak during request {peak} MiB (+{peak - before})")
    stop(p)


def attack_empty_objects():
    """A 4 MiB body of `{}` (1.4M empty events): peak RSS rise."""
    p = start()
    http = p.addrs["http"]
    n = (4 * 1024 * 1024 - 2) // 3
    body = b"[" + b",".join([b"{}"] * n) + b"]"
    body = body[: 4 * 1024 * 1024]
    if not body.endswith(b"]"):
        body = body[: body.rfind(b",")] + b"]"
    time.sleep(0.3)
    before = rss(p, "VmRSS")
    reset_peak(p)
    st, _, resp = request(http, "POST", "/api/event", body)
    peak = rss(p)
    print(f"empty_objects: POST {len(body)} bytes of {{}} ({body.count(b'{')} events) -> {st} "
          f"{resp[:90]!r}; RSS {before} MiB, peak {peak} MiB (+{peak - before})")
    stop(p)


def attack_attributes():
    """One event with as many attributes as fit in 4 MiB: size of /api/state afterwards."""
    p = start()
    http = p.addrs["http"]
    parts = []
    size = 0
    i = 0
    while size < 4 * 1024 * 1024 - 64:
        part = f'"{i:x}":0'
        parts.append(part)
        size += len(part) + 1
        i += 1
    parts.pop()
    body = ('{"host":"h","service":"s",' + ",".join(parts) + "}").encode()
    st, _, resp = request(http, "POST", "/api/event", body)
    st2, _, snap = request(http, "GET", "/api/state")
    print(f"attributes: POST one event with {len(parts) - 1} attributes ({len(body)} bytes) -> {st} "
          f"{resp[:100]!r}; GET /api/state afterwards: {len(snap) / 1e6:.1f} MB")
    stop(p)


def attack_slowloris():
    """A client trickling one header byte per second: how long the server keeps it."""
    p = start(["--http-header-timeout", "3"] if "--after" in sys.argv else [])
    http = p.addrs["http"]
    s = socket.create_connection(http)
    s.settimeout(1.0)
    t = time.time()
    line = b"GET / HTTP/1.1\r\nX-Slow: " + b"a" * 1000
    closed_after = None
    for b in line:
        try:
            s.send(bytes([b]))
            data = s.recv(4096)
            if data == b"" or data:
                closed_after = time.time() - t
                break
        except socket.timeout:
            pass
        except (BrokenPipeError, ConnectionResetError):
            closed_after = time.time() - t
            break
        if time.time() - t > 40:
            break
    verdict = f"closed after {closed_after:.1f} s" if closed_after else "still open after 40 s"
    print(f"slowloris: 1 header byte/s -> {verdict}"
          + (" (with --http-header-timeout 3)" if "--after" in sys.argv else ""))
    stop(p)


def attack_idle_cap():
    """2,000 idle HTTP connections: how many are held open; does Riemann TCP still connect?"""
    extra = ["--max-http-connections", "1000"] if "--after" in sys.argv else []
    p = start(extra)
    http = p.addrs["http"]
    socks = []
    failed = 0
    for _ in range(2000):
        try:
            socks.append(socket.create_connection(http, timeout=2))
        except OSError:
            failed = 2000 - len(socks)  # the server stopped accepting: the rest would too
            break
    time.sleep(1.0)
    open_ = 0
    for s in socks:
        s.setblocking(False)
        try:
            data = s.recv(1)
            if data:
                open_ += 0  # an answer (503) then close
        except BlockingIOError:
            open_ += 1
        except OSError:
            pass
    fds = len(os.listdir(f"/proc/{p.pid}/fd"))
    riemann = riemann_send(p.addrs["tcp"])
    try:
        st, _, _ = request(http, "GET", "/metrics", timeout=5)
    except OSError as e:
        st = f"failed ({e})"
    limit = open(f"/proc/{p.pid}/limits").read().split("Max open files")[1].split()[0]
    print(f"idle_cap: 2000 idle HTTP connections ({failed} connects failed) -> {open_} held open, server fds {fds} "
          f"(soft fd limit in force {limit}); riemann tcp event: {riemann}; GET /metrics {st}"
          + (" (--max-http-connections 1000)" if extra else ""))
    for s in socks:
        s.close()
    stop(p)


def riemann_send(addr):
    """One event over Riemann TCP; 'ok' when the reply says ok within 5 s."""
    event = b"\x22\x01h"  # Event{host: "h"}
    msg = b"\x32" + bytes([len(event)]) + event  # Msg{events: [event]}
    try:
        t = socket.create_connection(addr, timeout=5)
        t.sendall(len(msg).to_bytes(4, "big") + msg)
        reply = t.recv(64)
        t.close()
        return "ok" if b"\x10\x01" in reply else f"reply {reply!r}"
    except OSError as e:
        return f"failed ({e})"


def attack_csrf():
    p = start()
    st, _, body = request(p.addrs["http"], "POST", "/api/event", b'{"host":"h","service":"csrf"}',
                          headers=[("Content-Type", "text/plain"), ("Origin", "http://evil.example")])
    print(f"csrf: text/plain POST with Origin: http://evil.example -> {st} {body[:80]!r}")
    stop(p)


def attack_host():
    p = start()
    st, _, body = request(p.addrs["http"], "GET", "/api/state", host="evil.example")
    st2, _, _ = request(p.addrs["http"], "GET", "/", host="evil.example")
    print(f"host: GET /api/state with Host: evil.example -> {st}; GET / -> {st2}")
    stop(p)


def attack_referrer():
    p = start()
    st, head, _ = request(p.addrs["http"], "GET", "/")
    ref = [l for l in head.split("\r\n") if l.lower().startswith("referrer-policy")]
    print(f"referrer: GET / -> {st}, {ref or 'no Referrer-Policy'}")
    stop(p)


attacks = [a for a in sys.argv[2:] if not a.startswith("--")] or [
    "state", "empty_objects", "attributes", "slowloris", "idle_cap", "csrf", "host", "referrer"]
for name in attacks:
    globals()["attack_" + name]()
