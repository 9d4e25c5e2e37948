#!/usr/bin/env python3
"""Issue 12, Riemann TCP slice: replays each attack against a statecast binary and prints a figure.
Usage: tcp_attacks.py BINARY ATTACK [extra flags]; ATTACK is regex, pipeline, amplify, idle,
stuck-sigterm (WAIT=seconds before SIGTERM), tls or tcpquery. Debug builds were measured."""
import os, re, socket, struct, subprocess, sys, tempfile, threading, time

BIN, ATTACK = sys.argv[1], sys.argv[2]

def varint(n):
    out = b""
    while True:
        b = n & 0x7F; n >>= 7
        if n: out += bytes([b | 0x80])
        else: return out + bytes([b])
def ld(field, data): return varint(field << 3 | 2) + varint(len(data)) + data
def event(host, service, state):
    return ld(4, host.encode()) + ld(3, service.encode()) + ld(2, state.encode())
def msg_events(evs): return b"".join(ld(6, e) for e in evs)
def msg_query(q): return ld(5, ld(1, q.encode()))
def frame(body): return struct.pack(">I", len(body)) + body

def read_reply(s):
    hdr = b""
    while len(hdr) < 4:
        c = s.recv(4 - len(hdr))
        if not c: return None
        hdr += c
    n = struct.unpack(">I", hdr)[0]; body = b""
    while len(body) < n:
        c = s.recv(min(1 << 20, n - len(body)))
        if not c: return None
        body += c
    return body

def start(extra=(), data_dir=None):
    data_dir = data_dir or tempfile.mkdtemp(prefix="tcpm-")
    p = subprocess.Popen([BIN, "--tcp", "127.0.0.1:0", "--udp", "127.0.0.1:0", "--http", "127.0.0.1:0",
                          "--data-dir", data_dir, *extra], stderr=subprocess.PIPE, text=True,
                         env={**os.environ, "RUST_LOG": "info"})
    lines = []; port = None
    while port is None:
        line = p.stderr.readline(); lines.append(line)
        m = re.search(r"riemann tcp listening.*addr=127.0.0.1:(\d+)", line)
        if m: port = int(m.group(1))
    def drain():
        for l in p.stderr: lines.append(l)
    threading.Thread(target=drain, daemon=True).start()
    return p, port, lines, data_dir

def conn(port):
    s = socket.create_connection(("127.0.0.1", port)); s.settimeout(120); return s

def vm(pid, key):
    for l in open(f"/proc/{pid}/status"):
        if l.startswith(key): return int(l.split()[1]) // 1024
    return -1

def ack_latency(port, n=20):
    s = conn(port); worst = 0
    for i in range(n):
        t = time.time(); s.sendall(frame(msg_events([event("ctl", f"c{i%3}", "ok")]))); read_reply(s)
        worst = max(worst, time.time() - t); time.sleep(0.05)
    s.close(); return worst

def fill(port, keys):
    s = conn(port)
    for b in range(0, keys, 1000):
        s.sendall(frame(msg_events([event("h", f"svc{i}", "ok") for i in range(b, min(b + 1000, keys))])))
        read_reply(s)
    s.close()

if ATTACK == "regex":
    p, port, lines, _ = start()
    q = " or ".join(['service ~= "\\\\w{20}"'] * 800)
    print("query bytes", len(q))
    res = {}
    def attack():
        s = conn(port); t = time.time(); s.sendall(frame(msg_query(q))); r = read_reply(s)
        res["t"] = time.time() - t; res["reply"] = r[:120] if r else r
    th = threading.Thread(target=attack); th.start(); time.sleep(0.3)
    worst = ack_latency(port, 10)
    th.join()
    print(f"regex attack: reply after {res['t']:.2f}s, peak RSS {vm(p.pid,'VmHWM')} MiB, control worst ack {worst*1000:.0f} ms, reply {res['reply']!r}")
    p.kill()
elif ATTACK == "pipeline":
    extra = sys.argv[3:] 
    p, port, lines, _ = start(extra)
    fill(port, 20000)
    base = vm(p.pid, "VmRSS")
    socks = []
    for c in range(3):
        s = conn(port); s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        data = frame(msg_query("true")) * 10000
        def w(s=s, data=data):
            try: s.sendall(data)
            except Exception as e: pass
        threading.Thread(target=w, daemon=True).start(); socks.append(s)
    peak = 0
    for _ in range(60):
        time.sleep(0.5); peak = max(peak, vm(p.pid, "VmRSS"))
    print(f"pipeline attack: RSS after 20k keys {base} MiB, peak RSS over 30 s with 3x10k unread 'true' queries {peak} MiB (VmHWM {vm(p.pid,'VmHWM')} MiB)")
    p.kill()
elif ATTACK == "amplify":
    p, port, lines, _ = start()
    base = vm(p.pid, "VmRSS")
    body = b"\x32\x00" * (8 * 1024 * 1024)
    f = frame(body)
    res = []
    def one():
        s = conn(port); t = time.time(); s.sendall(f); r = read_reply(s); res.append((time.time() - t, r[:100] if r else r))
    ths = [threading.Thread(target=one) for _ in range(3)]
    [t.start() for t in ths]; [t.join() for t in ths]
    print(f"amplify attack: base RSS {base} MiB, peak VmHWM {vm(p.pid,'VmHWM')} MiB, replies {res}")
    p.kill()
elif ATTACK == "idle":
    # --max-tcp-connections 20; 20 idle sockets; can a 21st client get an ack within 15 s?
    p, port, lines, _ = start(["--max-tcp-connections", "20", *sys.argv[3:]])
    idle = [conn(port) for _ in range(20)]
    time.sleep(0.5); t = time.time(); got = None
    while time.time() - t < 15:
        try:
            s = conn(port); s.settimeout(1); s.sendall(frame(msg_events([event("h", "s", "ok")])))
            if read_reply(s): got = time.time() - t; break
        except Exception: time.sleep(0.2)
    print(f"idle attack: 20 idle conns on limit 20; new client acked after {got if got is None else round(got,2)} s (None = not within 15 s)")
    p.kill()
elif ATTACK == "stuck-sigterm":
    p, port, lines, d = start(list(sys.argv[3:]))
    fill(port, 20000)
    s = conn(port); s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    def w():
        try: s.sendall(frame(msg_query("true")) * 200)
        except Exception: pass
    threading.Thread(target=w, daemon=True).start(); time.sleep(float(os.environ.get("WAIT", "1")))
    c = conn(port); c.sendall(frame(msg_events([event("h", "marker", "critical")]))); print("marker ack", read_reply(c) is not None); c.close()
    t = time.time(); p.terminate(); rc = p.wait(60); took = time.time() - t
    p2, port2, _, _ = start(data_dir=d); q = conn(port2); q.sendall(frame(msg_query('service = "marker"'))); r = read_reply(q)
    print(f"stuck-sigterm: exit {rc} after {took:.2f}s; marker present after restart: {b'marker' in r}")
    print("".join(l for l in lines if "shut" in l or "grace" in l or "stop" in l))
    p2.kill()
elif ATTACK == "tls":
    p, port, lines, _ = start()
    s = conn(port); s.sendall(bytes.fromhex("160301020001") + b"\x00" * 100); time.sleep(1.5)
    s2 = conn(port); s2.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"); time.sleep(1.5)
    print("tls/http log:", [l.strip()[-200:] for l in lines if "WARN" in l or "INFO" in l and "peer" in l])
    print("alive:", p.poll() is None)
    p.kill()
elif ATTACK == "tcpquery":
    p, port, lines, _ = start(["--dashboard-token", "secret", *sys.argv[3:]])
    fill(port, 10)
    out = subprocess.run(["riemann-client", "query", "true", "127.0.0.1", str(port)], capture_output=True, text=True, timeout=20, stdin=subprocess.DEVNULL)
    print("tcp query with --dashboard-token:", out.returncode, out.stdout.count("service"), "events;", out.stderr.strip()[:200])
    p.kill()
