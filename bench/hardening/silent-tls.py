import json, os, resource, socket, struct, subprocess, sys, tempfile, time
# Issue 20 item 12: 1,100 silent TLS sockets on --tls-tcp, then 32 plain Riemann probes; WARN lines counted.
# usage: python3 bench/hardening/silent-tls.py BINARY CERT.pem KEY.pem
resource.setrlimit(resource.RLIMIT_NOFILE, (4096, 4096))
binary = sys.argv[1]; tmp = tempfile.mkdtemp(); ready = os.path.join(tmp, "r")
p = subprocess.Popen([binary, "--data-dir", "off", "--tcp", "127.0.0.1:0", "--udp", "off", "--http", "127.0.0.1:0",
    "--tls-tcp", "127.0.0.1:0", "--tls-cert", sys.argv[2], "--tls-key", sys.argv[3], "--ready-file", ready],
    stdout=subprocess.DEVNULL, stderr=open(os.path.join(tmp, "log"), "w"))
while not os.path.exists(ready): time.sleep(0.05)
info = json.load(open(ready)); th, tp = info["tls_tcp"].rsplit(":", 1); ph, pp = info["tcp"].rsplit(":", 1)
silent = [socket.create_connection((th, int(tp))) for _ in range(1100)]
time.sleep(1)
def field(n, b): return bytes([n << 3 | 2, len(b)]) + b
ev = field(2, b"ok") + field(3, b"probe") + field(4, b"h"); m = field(6, ev); frame = struct.pack(">I", len(m)) + m
ok = 0
for i in range(32):
    try:
        s = socket.create_connection((ph, int(pp)), timeout=5); s.sendall(frame)
        if len(s.recv(4)) == 4: ok += 1
        s.close()
    except Exception: pass
import http.client
hh, hp = info["http"].rsplit(":", 1); c = http.client.HTTPConnection(hh, int(hp)); c.request("GET", "/metrics")
print([l for l in c.getresponse().read().decode().splitlines() if l.startswith(("statecast_tcp_connections_total", "statecast_tcp_refused", "statecast_tls_handshakes_refused"))])
log = open(os.path.join(tmp, "log")).read()
print(f"plain probes answered: {ok}/32 while 1100 silent TLS sockets open; WARN lines: {log.count('WARN')}")
p.kill()
