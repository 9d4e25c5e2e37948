#!/usr/bin/env python3
"""Issue 20 item 15: a control client's Riemann TCP ack latency (p50/p99, one single-event Msg
every 20 ms) alone, then while READERS curl loops read GET /api/state of KEYS keys (8.5 MB at
50k) as fast as they can (sleeping Retry-After on a 503).

usage: bench/large-reads.py BINARY [extra statecast flags...]   env: KEYS (50000), READERS (16), SECS (15)
"""
import json, os, socket, struct, subprocess, sys, tempfile, time, http.client

binary, extra = sys.argv[1], sys.argv[2:]
KEYS = int(os.environ.get("KEYS", 50000)); READERS = int(os.environ.get("READERS", 16))
SECS = float(os.environ.get("SECS", 15))
tmp = tempfile.mkdtemp()
ready = os.path.join(tmp, "ready")
proc = subprocess.Popen([binary, "--data-dir", "off", "--tcp", "127.0.0.1:0", "--udp", "off",
                         "--http", "127.0.0.1:0", "--max-body-bytes", "64MiB", "--ready-file", ready,
                         *extra], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
try:
    for _ in range(200):
        if os.path.exists(ready):
            break
        time.sleep(0.05)
    info = json.load(open(ready))
    th, tp = info["tcp"].rsplit(":", 1); hh, hp = info["http"].rsplit(":", 1)
    for start in range(0, KEYS, 10000):
        body = json.dumps([{"host": f"host-{i:06d}.example", "service": "cpu load", "state": "ok",
                            "metric": i * 0.5, "description": "load average over one minute"}
                           for i in range(start, min(KEYS, start + 10000))])
        c = http.client.HTTPConnection(hh, int(hp)); c.request("POST", "/api/event", body)
        r = c.getresponse(); assert r.status == 200, r.read()[:200]; r.read()

    def field(n, b):  # length-delimited protobuf field
        out, l = bytes([n << 3 | 2]), len(b)
        while l >= 0x80: out += bytes([l & 0x7f | 0x80]); l >>= 7
        return out + bytes([l]) + b
    def msg(i):
        ev = field(2, b"ok") + field(3, f"c{i % 3}".encode()) + field(4, b"control")
        m = field(6, ev); return struct.pack(">I", len(m)) + m

    # Readers are separate processes (curl in a shell loop): threads in this process would
    # share the GIL with the control client and measure Python, not the server.
    url = f"http://{hh}:{hp}/api/state"
    loop = ('while :; do c=$(curl -s -o /dev/null -w "%{http_code} %{size_download}" "$0"); '
            'echo "$c"; case "$c" in 200*) ;; *) sleep 1 ;; esac; done')
    logs = [os.path.join(tmp, f"reader{i}") for i in range(READERS)]
    def control(secs):
        s = socket.create_connection((th, int(tp))); s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        lat = []; end = time.time() + secs; i = 0
        while time.time() < end:
            t = time.perf_counter(); s.sendall(msg(i)); i += 1
            hdr = b""
            while len(hdr) < 4: hdr += s.recv(4 - len(hdr))
            n = struct.unpack(">I", hdr)[0]; body = b""
            while len(body) < n: body += s.recv(n - len(body))
            lat.append(time.perf_counter() - t); time.sleep(0.02)
        s.close(); lat.sort()
        q = lambda p: lat[min(len(lat) - 1, int(p * len(lat)))] * 1000
        return f"n={len(lat)} p50={q(0.5):.1f}ms p99={q(0.99):.1f}ms max={lat[-1]*1000:.1f}ms"
    print("baseline:", control(5))
    readers = [subprocess.Popen(["sh", "-c", loop, url], stdout=open(log, "w")) for log in logs]
    time.sleep(1)
    print(f"{READERS} readers:", control(SECS))
    for r in readers: r.kill(); r.wait()
    statuses = {}; sizes = []
    for log in logs:
        for line in open(log):
            code, size = line.split()
            statuses[code] = statuses.get(code, 0) + 1
            if code == "200": sizes.append(int(size))
    print(f"responses: {statuses}; 200s of {(sum(sizes)/len(sizes)/1e6 if sizes else 0):.1f} MB")
finally:
    proc.kill(); proc.wait()
