#!/usr/bin/env python3
"""Disk and memory per key-day of metric series.

Starts a statecast binary on a fresh data directory, posts KEYS keys × HOURS hours of points
(one every 10 s per key, with explicit event times ending now, in time order, 10,000 events per
POST), waits until the series thread took them all and pruning went once over every key, reads
RSS (/metrics), stops it cleanly (SIGTERM: open buckets are written too) and prints the size of
series.redb, the buckets it keeps by tier, and bytes per key and per key-day.

    bench/series-size.py target/release/statecast [KEYS] [HOURS]     # defaults: 200 keys, 24 h
"""
import json, os, shutil, signal, subprocess, sys, tempfile, time, urllib.request

BIN = sys.argv[1]
KEYS = int(sys.argv[2]) if len(sys.argv) > 2 else 200
HOURS = float(sys.argv[3]) if len(sys.argv) > 3 else 24.0
work = tempfile.mkdtemp(prefix="statecast-series-size.")
data = os.path.join(work, "data")
proc = subprocess.Popen([BIN, "--tcp", "off", "--udp", "off", "--http", "127.0.0.1:0",
                         "--data-dir", data], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
ready = json.loads(proc.stdout.readline())
base = "http://" + ready["http"]


def metric(name):
    with urllib.request.urlopen(base + "/metrics") as r:
        for line in r.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    return 0.0


try:
    now = int(time.time())
    start = now - int(HOURS * 3600)
    batch, sent = [], 0
    for t in range(start, now, 10):
        for k in range(KEYS):
            batch.append({"host": f"h{k}", "service": "cpu", "time": t, "metric": (t + k) % 97,
                          "ttl": 86400 * 2})
            if len(batch) == 10_000:
                req = urllib.request.Request(base + "/api/event", json.dumps(batch).encode())
                urllib.request.urlopen(req).read()
                sent += len(batch)
                batch = []
                # A backfill closes a bucket per point: let the series thread keep up, so no
                # point is dropped at its queue.
                while (metric("statecast_series_queue_points") > 0
                       or metric("statecast_series_pending_buckets") > 100_000):
                    time.sleep(0.05)
                # A backfill closes a bucket per point: let the series thread keep up, so no
                # point is dropped at its queue.
                while (metric("statecast_series_queue_points") > 0
                       or metric("statecast_series_pending_buckets") > 100_000):
                    time.sleep(0.05)
    if batch:
        urllib.request.urlopen(urllib.request.Request(base + "/api/event", json.dumps(batch).encode())).read()
        sent += len(batch)
    while metric("statecast_series_points_total") < sent:
        time.sleep(0.2)
    time.sleep(3)  # a few ticks: written, and pruned (10,000 keys a tick)
    rss = metric("process_resident_memory_bytes")
    dropped = metric('statecast_series_points_dropped_total{reason="queue-full"}')
    dropped = metric('statecast_series_points_dropped_total{reason="queue-full"}')
    written = metric("statecast_series_buckets_written_total")
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)
    size = os.path.getsize(os.path.join(data, "series.redb"))
    days = HOURS / 24
    print(json.dumps({
        "keys": KEYS, "hours": HOURS, "points": sent, "buckets_written": written,
        "series_redb_bytes": size, "bytes_per_key": round(size / KEYS),
        "bytes_per_key_day": round(size / KEYS / days), "rss_bytes": rss, "dropped": dropped, "dropped": dropped,
    }))
finally:
    if proc.poll() is None:
        proc.kill()
    shutil.rmtree(work, ignore_errors=True)
