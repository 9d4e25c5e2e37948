#!/usr/bin/env python3
"""Websocket/SSE attacks of issue 12, measured against a statecast binary (stdlib only).

Usage: scripts/hardening/ws_attacks.py BINARY ATTACK
ATTACK: ping_flood | subscribe_flood | utf8 | sse_limit | sse_cors | resume_gap

Each attack starts its own server on ephemeral loopback ports and prints one line of figures:
the server's peak RSS (VmHWM) and what the attacking client saw.
"""
import base64, json, os, re, socket, struct, subprocess, sys, tempfile, threading, time

def start(binary, extra):
    data = tempfile.mkdtemp(prefix="statecast-attack-")
    p = subprocess.Popen([binary, "--tcp", "127.0.0.1:0", "--udp", "127.0.0.1:0", "--http",
                          "127.0.0.1:0", "--data-dir", data] + extra,
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                         env=dict(os.environ, RUST_LOG="info"))
    http = None
    while http is None:
        line = p.stderr.readline()
        if not line:
            raise SystemExit("server exited")
        m = re.search(r"http listening.*addr=(\S+)", line)
        if m:
            host, port = m.group(1).rsplit(":", 1)
            http = (host, int(port))
    threading.Thread(target=lambda: [None for _ in p.stderr], daemon=True).start()
    return p, http

def rss_kib(p, key="VmRSS"):
    for line in open(f"/proc/{p.pid}/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0

def http(addr, method, path, body=b"", headers=()):
    s = socket.create_connection(addr, timeout=30)
    head = f"{method} {path} HTTP/1.1\r\nHost: {addr[0]}:{addr[1]}\r\nConnection: close\r\n" \
           f"Content-Length: {len(body)}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers) + "\r\n"
    s.sendall(head.encode() + body)
    out = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        out += chunk
    s.close()
    return out

def post_events(addr, events):
    for i in range(0, len(events), 2000):
        r = http(addr, "POST", "/api/event", json.dumps(events[i:i + 2000]).encode(),
                 [("Content-Type", "application/json")])
        assert b" 200 " in r.split(b"\r\n", 1)[0], r[:300]

def ws_connect(addr, path="/ws", rcvbuf=None):
    s = socket.socket()
    if rcvbuf:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.settimeout(30)
    s.connect(addr)
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall(f"GET {path} HTTP/1.1\r\nHost: {addr[0]}:{addr[1]}\r\nUpgrade: websocket\r\n"
              f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
              .encode())
    buf = b""
    while b"\r\n\r\n" not in buf:
        buf += s.recv(1)
    assert b" 101 " in buf.split(b"\r\n", 1)[0], buf
    return s

def frame(opcode, payload):
    mask = os.urandom(4)
    n = len(payload)
    head = bytes([0x80 | opcode])
    if n < 126:
        head += bytes([0x80 | n])
    elif n < 65536:
        head += bytes([0x80 | 126]) + struct.pack(">H", n)
    else:
        head += bytes([0x80 | 127]) + struct.pack(">Q", n)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))

def read_frames(s, limit_s=10):
    """Reads frames until close/EOF/silence (at most 60 s); returns [(opcode, first 100 bytes)]."""
    s.settimeout(limit_s)
    buf = bytearray()
    pos = 0
    out = []
    stop = time.monotonic() + 60
    try:
        while time.monotonic() < stop:
            chunk = s.recv(1 << 20)
            if not chunk:
                break
            buf += chunk
            while len(buf) - pos >= 2:
                n = buf[pos + 1] & 0x7f
                off = 2
                if n == 126:
                    if len(buf) - pos < 4: break
                    n = struct.unpack(">H", buf[pos + 2:pos + 4])[0]; off = 4
                elif n == 127:
                    if len(buf) - pos < 10: break
                    n = struct.unpack(">Q", buf[pos + 2:pos + 10])[0]; off = 10
                if len(buf) - pos < off + n:
                    break
                body = buf[pos + off:pos + off + n]
                out.append((buf[pos] & 0x0f, bytes(body[:100]) + bytes(body[-60:]) if n > 160 else bytes(body)))
                pos += off + n
                if out[-1][0] == 8:
                    return out
            if pos > (1 << 22):
                del buf[:pos]
                pos = 0
    except (socket.timeout, ConnectionResetError):
        pass
    return out

def control_latency(addr, rounds=20):
    """Worst round trip of a small POST /api/event, in ms."""
    worst = 0
    for i in range(rounds):
        t = time.monotonic()
        http(addr, "POST", "/api/event", json.dumps({"host": "ctl", "service": "c", "state": "ok",
                                                     "metric": i}).encode())
        worst = max(worst, (time.monotonic() - t) * 1000)
    return worst

def ping_flood(binary):
    p, addr = start(binary, [])
    s = ws_connect(addr, rcvbuf=4096)
    ping = frame(9, b"x" * 125)
    burst = ping * 256
    sent = 0
    closed = "no"
    deadline = time.monotonic() + 7
    s.settimeout(2)
    while time.monotonic() < deadline:
        try:
            s.sendall(burst)
            sent += 256
        except (BrokenPipeError, ConnectionResetError, socket.timeout) as e:
            closed = type(e).__name__
            break
    print(f"ping_flood: pings sent={sent} client closed={closed} server VmHWM={rss_kib(p, 'VmHWM') // 1024} MiB "
          f"VmRSS={rss_kib(p) // 1024} MiB")
    p.kill()

def subscribe_flood(binary):
    p, addr = start(binary, [])
    post_events(addr, [{"host": f"h{i}", "service": f"service-{i}", "state": "ok"} for i in range(10000)])
    base = rss_kib(p)
    s = ws_connect(addr, rcvbuf=4096)
    msg = frame(1, b'{"type":"subscribe"}') * 100
    sent = 0
    s.settimeout(5)
    try:
        for _ in range(10):
            s.sendall(msg)
            sent += 100
    except (BrokenPipeError, ConnectionResetError, socket.timeout) as e:
        print("send stopped:", type(e).__name__)
    time.sleep(float(os.environ.get("WAIT", "30")))  # the client does not read meanwhile
    peak = rss_kib(p, "VmHWM")
    frames = read_frames(s, 10)
    snaps = sum(1 for op, b in frames if op == 1 and b'"type":"snapshot"' in b)
    errors = [b[:120] for op, b in frames if op == 1 and b'"type":"error"' in b]
    close = [struct.unpack(">H", b[:2])[0] for op, b in frames if op == 8 and len(b) >= 2]
    print(f"subscribe_flood: sent={sent} rss before={base // 1024} MiB peak={peak // 1024} MiB "
          f"snapshots read={snaps} errors={len(errors)} {errors[:1]} close={close}")
    p.kill()

def utf8(binary):
    p, addr = start(binary, [])
    s = ws_connect(addr)
    s.sendall(frame(1, b"\xff\xfe\xfd"))
    frames = read_frames(s, 5)
    close = [(struct.unpack(">H", b[:2])[0] if len(b) >= 2 else None) for op, b in frames if op == 8]
    print(f"utf8: close frames={close} (frames seen {len(frames)})")
    p.kill()

def sse_limit(binary):
    p, addr = start(binary, ["--max-ws-connections", "5"])
    socks, statuses = [], []
    for _ in range(8):
        s = socket.create_connection(addr, timeout=5)
        s.sendall(f"GET /index HTTP/1.1\r\nHost: {addr[0]}:{addr[1]}\r\n\r\n".encode())
        head = s.recv(4096).split(b"\r\n", 1)[0]
        statuses.append(int(head.split()[1]))
        socks.append(s)
    print(f"sse_limit (limit 5, 8 streams): statuses={statuses}")
    p.kill()

def sse_cors(binary):
    p, addr = start(binary, ["--allowed-origin", "https://dash\\.example"])
    for origin in ["https://dash.example", "https://evil.example"]:
        s = socket.create_connection(addr, timeout=5)
        s.sendall(f"GET /index HTTP/1.1\r\nHost: {addr[0]}:{addr[1]}\r\nOrigin: {origin}\r\n\r\n".encode())
        head = s.recv(4096).split(b"\r\n\r\n", 1)[0].decode()
        acao = [l for l in head.split("\r\n") if l.lower().startswith(("access-control", "vary"))]
        print(f"sse_cors origin={origin}: {head.split(chr(13))[0]} {acao}")
        s.close()
    p.kill()

def resume_gap(binary):
    p, addr = start(binary, [])
    # 90k changes on 10 keys (state flips), then resume from seq 0 several times at once.
    states = ["ok", "critical"]
    for r in range(9000):
        pass
    batch = []
    for i in range(90000):
        batch.append({"host": "h", "service": f"s{i % 1000}", "state": states[(i // 1000) % 2]})
    post_events(addr, batch)
    s0 = ws_connect(addr)
    first = read_frames_one(s0)
    snap = json.loads(first)
    seq, epoch = snap["seq"], snap["epoch"]
    base = control_latency(addr, 10)
    results = {}
    def resume(i):
        t = time.monotonic()
        s = ws_connect(addr, f"/ws?since={max(seq - 99000, 0)}&epoch={epoch}")
        results[i] = time.monotonic() - t
    threads = [threading.Thread(target=resume, args=(i,)) for i in range(4)]
    for t in threads: t.start()
    worst = control_latency(addr, 20)
    for t in threads: t.join()
    print(f"resume_gap: seq={seq} control worst latency idle={base:.0f} ms during 4 resumes={worst:.0f} ms")
    p.kill()

def read_frames_one(s):
    s.settimeout(10)
    buf = b""
    while True:
        buf += s.recv(1 << 20)
        if len(buf) < 2: continue
        n = buf[1] & 0x7f; off = 2
        if n == 126: n = struct.unpack(">H", buf[2:4])[0]; off = 4
        elif n == 127: n = struct.unpack(">Q", buf[2:10])[0]; off = 10
        if len(buf) >= off + n:
            return buf[off:off + n]

if __name__ == "__main__":
    globals()[sys.argv[2]](sys.argv[1])
