#!/usr/bin/env python3
"""Issue 20 items 3, 4, 5: silence-change cost, regex-silence RSS, data-dir growth.

usage: python3 bench/hardening/silences.py BIN item3|item4|item5
"""
import http.client, json, os, random, shutil, statistics, subprocess, sys, tempfile, threading, time

BIN = sys.argv[1]
WHAT = sys.argv[2]


def start(extra=()):
    d = tempfile.mkdtemp(prefix="silbench-")
    p = subprocess.Popen([BIN, "--tcp", "off", "--udp", "off", "--http", "127.0.0.1:0",
                          "--data-dir", d, "--max-body-bytes", "64MiB", *extra],
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    ready = json.loads(p.stdout.readline())
    host, port = ready["http"].rsplit(":", 1)
    return p, d, (host, int(port))


def req(addr, method, path, body=None, timeout=120):
    c = http.client.HTTPConnection(*addr, timeout=timeout)
    data = None if body is None else json.dumps(body).encode()
    c.request(method, path, body=data, headers={"Content-Type": "application/json"})
    r = c.getresponse()
    out = r.read()
    c.close()
    return r.status, out


def ok(addr, method, path, body=None):
    s, out = req(addr, method, path, body)
    assert s == 200, (s, out[:300])
    return json.loads(out)


def rss_kib(p):
    for line in open(f"/proc/{p.pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])


def du(d):
    total = 0
    for root, _, files in os.walk(d):
        for f in files:
            total += os.path.getsize(os.path.join(root, f))
    return total


def item3():
    p, d, a = start()
    try:
        # silences first (cheap while the index is empty): their ids are seqs 1..1000
        for i in range(1000):
            ok(a, "POST", "/api/silence", {"query": f"host = \"h{i * 50}\" or service = \"nomatch{i}\"",
                                           "by": "bench", "duration": "10h"})
        for chunk in range(50):
            ok(a, "POST", "/api/event", [{"host": f"h{chunk * 1000 + i}", "service": f"s{i % 50}",
                                          "state": "critical", "ttl": 36000} for i in range(1000)])
        # control client: one event per request, back to back, while silences change
        lat, stop = [], threading.Event()

        def control():
            while not stop.is_set():
                t = time.perf_counter()
                ok(a, "POST", "/api/event", [{"host": "control", "service": "c", "metric": 1, "ttl": 3600}])
                lat.append(time.perf_counter() - t)

        baseline = []
        for _ in range(200):
            t = time.perf_counter()
            ok(a, "POST", "/api/event", [{"host": "control", "service": "c", "metric": 1, "ttl": 3600}])
            baseline.append(time.perf_counter() - t)
        th = threading.Thread(target=control)
        th.start()
        create, delete = [], []
        for i in range(40):
            # keep 1,000: delete one, create one
            t = time.perf_counter()
            ans = ok(a, "DELETE", f"/api/silence/{first_ids[i]}?by=b")
            delete.append(time.perf_counter() - t)
            t = time.perf_counter()
            ans = ok(a, "POST", "/api/silence", {"query": f"host = \"h{i * 7}\" or service = \"x{i}\"",
                                                 "by": "b", "duration": "10h"})
            create.append(time.perf_counter() - t)
        stop.set()
        th.join()
        ms = lambda xs: f"p50 {statistics.median(xs) * 1000:.1f} ms, max {max(xs) * 1000:.1f} ms"
        print(f"control baseline {ms(baseline)}; during silence changes {ms(lat)} (n={len(lat)})")
        print(f"create {ms(create)}; delete {ms(delete)}")
    finally:
        p.kill(); p.wait(); shutil.rmtree(d, ignore_errors=True)


first_ids = []


def item3_ids():
    # silence ids are seqs: 50 event batches of 1000 changes take seqs 1..50000; silences follow
    global first_ids
    first_ids = [1 + i for i in range(1000)]


def item4():
    p, d, a = start()
    try:
        rnd = random.Random(7)
        alphabet = "abcdefghijklmnopqrstuvwxyz0123456789é"
        descs = ["".join(rnd.choice(alphabet) for _ in range(64 * 1024)) for _ in range(8)]
        ok(a, "POST", "/api/event", [{"host": f"h{n}", "service": "s", "state": "critical",
                                      "description": descs[n], "ttl": 36000} for n in range(8)])
        firsts = ["[0-9]", "[a-f]", "[g-m]", "[n-t]"]
        base = rss_kib(p)
        for s in range(6):
            clauses = [f"description ~= \"{firsts[(k + s) % 4]}[a-z0-9]{{{8 + k // 4}}}[^a-z0-9é]\"" for k in range(64)]
            t = time.perf_counter()
            ok(a, "POST", "/api/silence", {"query": " or ".join(clauses), "by": "m", "duration": "1h"})
            created = time.perf_counter() - t
            t = time.perf_counter()
            state = "warning" if s % 2 == 0 else "critical"
            ok(a, "POST", "/api/event", [{"host": f"h{n}", "service": "s", "state": state,
                                          "description": descs[n], "ttl": 36000} for n in range(8)])
            changed = time.perf_counter() - t
            print(f"after silence {s + 1}: RSS +{(rss_kib(p) - base) / 1024:.0f} MiB "
                  f"(create {created * 1000:.0f} ms, 8 changes judged {changed * 1000:.0f} ms)")
    finally:
        p.kill(); p.wait(); shutil.rmtree(d, ignore_errors=True)


def item5():
    p, d, a = start()
    try:
        ok(a, "POST", "/api/event", [{"host": f"h{n}", "service": "s", "state": "critical", "ttl": 36000}
                                     for n in range(1000)])
        time.sleep(2)
        base = du(d)
        t0 = time.perf_counter()
        for i in range(1000):
            q = f"host = \"h{i}\" or description = \"{'x' * (4096 - 40)}\""
            q = q[:4096]
            if q.count('"') % 2:
                q = q[:-1] + '"'
            ok(a, "POST", "/api/silence", {"query": q, "comment": "c" * 1024, "by": "b" * 128, "duration": "10h"})
        took = time.perf_counter() - t0
        grown = du(d) - base
        s, body = req(a, "GET", "/api/history?since=1000&limit=100")
        print(f"1,000 max-size silences in {took:.1f} s: data dir +{grown / 1e6:.1f} MB; "
              f"one /api/history page of 100: {len(body) / 1e6:.1f} MB")
    finally:
        p.kill(); p.wait(); shutil.rmtree(d, ignore_errors=True)


if WHAT == "item3":
    item3_ids(); item3()
elif WHAT == "item4":
    item4()
else:
    item5()
