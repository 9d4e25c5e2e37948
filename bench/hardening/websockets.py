#!/usr/bin/env python3
"""Measurements for issue 20 items 2, 8, 9: start a statecast binary, attack, report server RSS."""
import base64, json, os, socket, struct, subprocess, sys, threading, time, http.client, tempfile

def start(binary, extra=()):
    d = tempfile.mkdtemp(prefix="wsq-measure-")
    p = subprocess.Popen([binary, "--tcp", "127.0.0.1:0", "--udp", "127.0.0.1:0", "--http", "127.0.0.1:0",
                          "--data-dir", d, *extra], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    for line in p.stdout:
        try:
            r = json.loads(line)
        except ValueError:
            continue
        if r.get("ready"):
            host, port = r["http"].rsplit(":", 1)
            return p, (host, int(port))
    raise SystemExit("no ready line")

def rss(pid, key="VmRSS"):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) // 1024
    return -1

def post(addr, path, body):
    c = http.client.HTTPConnection(*addr, timeout=120)
    c.request("POST", path, body=body, headers={"Content-Type": "application/json"})
    r = c.getresponse(); data = r.read(); c.close()
    return r.status, data

def ws_open(addr, path="/events"):
    s = socket.create_connection(addr)
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall((f"GET {path} HTTP/1.1\r\nHost: {addr[0]}:{addr[1]}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = s.recv(4096)
        if not chunk: raise SystemExit("upgrade refused")
        head += chunk
    assert b" 101 " in head.split(b"\r\n")[0], head
    return s

def frame(opcode, payload, fin=True):
    n = len(payload)
    b0 = (0x80 if fin else 0) | opcode
    if n < 126: hdr = struct.pack("!BB", b0, 0x80 | n)
    elif n < 65536: hdr = struct.pack("!BBH", b0, 0x80 | 126, n)
    else: hdr = struct.pack("!BBQ", b0, 0x80 | 127, n)
    return hdr + b"\0\0\0\0" + payload  # zero mask: payload unchanged

def unfinished(binary, conns=200, size=4 * 1024 * 1024 - 16):
    p, addr = start(binary)
    base = rss(p.pid)
    socks = []
    payload = b" " * size
    closed = 0
    for i in range(conns):
        s = ws_open(addr)
        try:
            s.sendall(frame(0x1, payload, fin=False))
            s.sendall(frame(0x9, b"p"))
        except OSError:
            closed += 1
        socks.append(s)
    time.sleep(3)
    peak = rss(p.pid, "VmHWM"); now = rss(p.pid)
    print(f"item 9: {conns} connections x {size>>20} MiB unfinished + ping: server RSS {base} -> {now} MiB (peak {peak}); send failures {closed}")
    p.kill()

def acks(binary, keys=50000, readers=8):
    p, addr = start(binary, ["--data-dir", "off"] if False else [])
    for start_i in range(0, keys, 2000):
        batch = [{"host": f"h{i % 1000}", "service": f"s{i}", "state": "critical", "ttl": 86400} for i in range(start_i, min(keys, start_i + 2000))]
        st, _ = post(addr, "/api/event", json.dumps(batch))
        assert st == 200
    def acker(lo, hi):
        c = http.client.HTTPConnection(*addr, timeout=120)
        for i in range(lo, hi):
            body = json.dumps({"host": f"h{i % 1000}", "service": f"s{i}", "note": "on it, looking at the disk", "by": "ann"})
            c.request("POST", "/api/ack", body=body, headers={"Content-Type": "application/json"})
            r = c.getresponse(); r.read(); assert r.status == 200, r.status
        c.close()
    ts = [threading.Thread(target=acker, args=(k * keys // 16, (k + 1) * keys // 16)) for k in range(16)]
    t0 = time.time()
    [t.start() for t in ts]; [t.join() for t in ts]
    base = rss(p.pid)
    sizes = []
    def reader():
        c = http.client.HTTPConnection(*addr, timeout=300)
        c.request("GET", "/api/acks"); r = c.getresponse(); sizes.append(len(r.read())); c.close()
    ts = [threading.Thread(target=reader) for _ in range(readers)]
    [t.start() for t in ts]; [t.join() for t in ts]
    peak = rss(p.pid, "VmHWM")
    print(f"item 2: {keys} acks (acking took {time.time()-t0:.0f}s), {readers} concurrent GET /api/acks of {sizes[0]>>20} MiB: RSS {base} MiB before the reads, peak {peak} MiB")
    p.kill()

if __name__ == "__main__":
    what, binary = sys.argv[1], sys.argv[2]
    if what in ("unfinished", "acks"):
        {"unfinished": unfinished, "acks": acks}[what](binary)

def metric(addr, name):
    c = http.client.HTTPConnection(*addr, timeout=60)
    c.request("GET", "/metrics"); body = c.getresponse().read().decode(); c.close()
    for line in body.splitlines():
        k, _, v = line.partition(" ")
        if k == name:
            return int(float(v))
    return -1

def dashboards(binary, keys=100000, rate=100, readers=10, seconds=30):
    p, addr = start(binary)
    desc = "x" * 50
    for start_i in range(0, keys, 5000):
        batch = [{"host": f"h{i % 1000}", "service": f"s{i}", "state": "critical", "description": desc, "ttl": 86400} for i in range(start_i, min(keys, start_i + 5000))]
        st, _ = post(addr, "/api/event", json.dumps(batch)); assert st == 200
    n_acks = int(os.environ.get("ACKS", "0"))
    def acker(lo, hi):
        c = http.client.HTTPConnection(*addr, timeout=120)
        for i in range(lo, hi):
            body = json.dumps({"host": f"h{i % 1000}", "service": f"s{i}", "note": "on it, looking at the disk", "by": "ann"})
            c.request("POST", "/api/ack", body=body, headers={"Content-Type": "application/json"})
            r = c.getresponse(); r.read(); assert r.status == 200, r.status
        c.close()
    aths = [threading.Thread(target=acker, args=(k * n_acks // 16, (k + 1) * n_acks // 16)) for k in range(16)]
    [t.start() for t in aths]; [t.join() for t in aths]
    stop = threading.Event()
    got = [0] * readers
    def reader(k):
        s = ws_open(addr, "/ws")
        s.settimeout(1)
        while not stop.is_set():
            try:
                d = s.recv(1 << 20)
                if not d: break
                got[k] += len(d)
            except socket.timeout:
                pass
            except OSError:
                break
    ts = [threading.Thread(target=reader, args=(k,)) for k in range(readers)]
    [t.start() for t in ts]
    c = http.client.HTTPConnection(*addr, timeout=60)
    t0 = time.time(); n = 0
    while time.time() - t0 < seconds:
        body = json.dumps({"host": "stream", "service": "flip", "state": "ok" if n % 2 else "warning"})
        c.request("POST", "/api/event", body=body, headers={"Content-Type": "application/json"})
        r = c.getresponse(); r.read(); n += 1
        time.sleep(max(0, t0 + n / rate - time.time()))
    stop.set(); [t.join() for t in ts]
    print(f"item 1: {keys} keys, {n_acks} acks, {n} changes in {seconds}s, {readers} reading dashboards: resyncs {metric(addr, 'statecast_ws_resyncs_total')}, slow-closed {metric(addr, 'statecast_ws_slow_closed_total')}, MB read per dashboard {[g >> 20 for g in got]}")
    p.kill()

if __name__ == "__main__" and sys.argv[1] == "dashboards":
    dashboards(sys.argv[2], keys=int(sys.argv[3]) if len(sys.argv) > 3 else 100000)

def ids(binary, conns=8, batches=70, id_bytes=1 << 20):
    p, addr = start(binary)
    base = rss(p.pid)
    socks = []
    big = json.dumps({"id": "i" * id_bytes, "events": []}).encode()
    def flood(s):
        try:
            for _ in range(batches):
                s.sendall(frame(0x1, big))
        except OSError:
            pass
    ts = []
    for _ in range(conns):
        s = ws_open(addr)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        socks.append(s)
        t = threading.Thread(target=flood, args=(s,)); t.start(); ts.append(t)
    deadline = time.time() + 60
    while time.time() < deadline and any(t.is_alive() for t in ts):
        time.sleep(1)
    time.sleep(2)
    print(f"item 8: {conns} connections x {batches} batches with {id_bytes >> 20} MiB ids, acks unread: server RSS {base} -> {rss(p.pid)} MiB (peak {rss(p.pid, 'VmHWM')})")
    p.kill()

if __name__ == "__main__" and sys.argv[1] == "ids":
    ids(sys.argv[2])
