import json, os, resource, socket, struct, subprocess, sys, tempfile, time
# Issue 20 item 16: 1,100 Riemann TCP sockets that send nothing, then 8 plain probes, at 1 s and at 34 s.
# usage: python3 bench/hardening/silent-tcp.py BINARY
resource.setrlimit(resource.RLIMIT_NOFILE, (4096, 4096))
binary = sys.argv[1]; tmp = tempfile.mkdtemp(); ready = os.path.join(tmp, "r")
p = subprocess.Popen([binary, "--data-dir", "off", "--tcp", "127.0.0.1:0", "--udp", "off", "--http", "127.0.0.1:0",
    "--ready-file", ready], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
while not os.path.exists(ready): time.sleep(0.05)
info = json.load(open(ready)); ph, pp = info["tcp"].rsplit(":", 1)
silent = [socket.create_connection((ph, int(pp))) for _ in range(1100)]
def field(n, b): return bytes([n << 3 | 2, len(b)]) + b
ev = field(2, b"ok") + field(3, b"probe") + field(4, b"h"); m = field(6, ev); frame = struct.pack(">I", len(m)) + m
def probes():
    ok = 0
    for i in range(8):
        try:
            s = socket.create_connection((ph, int(pp)), timeout=5); s.sendall(frame)
            if len(s.recv(4)) == 4: ok += 1
            s.close()
        except Exception: pass
    return ok
print("probes answered at 1 s:", probes(), "/8"); time.sleep(1)
time.sleep(32)
print("probes answered at 34 s:", probes(), "/8")
p.kill()
