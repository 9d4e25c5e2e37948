// Minimal websocket hub, the way people build one by hand today (bench peer for statecast).
//
// POST /api/event takes one JSON event or an array; each event is broadcast to every websocket
// client as {"type":"change","event":E}, serialized once, skipping a client whose send buffer is
// over the usual bufferedAmount limit. Listens on 127.0.0.1:PORT (PORT env, default 0 = any).
'use strict';

const http = require('http');
const { WebSocketServer, WebSocket } = require('ws');

const PORT = Number(process.env.PORT || 0);
const MAX_BUFFERED = 1024 * 1024; // bytes queued for one client before we skip it
const MAX_BODY = 4 * 1024 * 1024;

let dropped = 0;

const server = http.createServer((req, res) => {
  if (req.method !== 'POST' || req.url !== '/api/event') {
    res.writeHead(404, { 'Content-Type': 'application/json' });
    res.end('{"ok":false,"error":"not found"}');
    return;
  }
  const chunks = [];
  let size = 0;
  req.on('data', (c) => {
    size += c.length;
    if (size > MAX_BODY) {
      res.writeHead(413, { 'Content-Type': 'application/json', Connection: 'close' });
      res.end('{"ok":false,"error":"body too large"}');
      req.destroy();
      return;
    }
    chunks.push(c);
  });
  req.on('end', () => {
    let parsed;
    try {
      parsed = JSON.parse(Buffer.concat(chunks).toString('utf8'));
    } catch (e) {
      const body = JSON.stringify({ ok: false, error: String(e.message) });
      res.writeHead(400, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body) });
      res.end(body);
      return;
    }
    const events = Array.isArray(parsed) ? parsed : [parsed];
    for (const event of events) {
      const msg = JSON.stringify({ type: 'change', event });
      for (const client of wss.clients) {
        if (client.readyState !== WebSocket.OPEN) continue;
        if (client.bufferedAmount > MAX_BUFFERED) { dropped++; continue; }
        client.send(msg);
      }
    }
    const body = JSON.stringify({ ok: true, accepted: events.length });
    res.writeHead(200, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body) });
    res.end(body);
  });
});

const wss = new WebSocketServer({ server, path: '/ws' });

server.listen(PORT, '127.0.0.1', () => {
  const { address, port } = server.address();
  console.error(`node-ws-hub http listening addr=${address}:${port}`);
});

for (const sig of ['SIGINT', 'SIGTERM']) {
  process.on(sig, () => {
    console.error(`node-ws-hub stopping; messages skipped for slow clients: ${dropped}`);
    process.exit(0);
  });
}
