// nodejs-api: the Node.js fallback service that ultragate diverts traffic to
// when the primary pool is unhealthy. Plain `node:http`, no framework.
//
//   PORT=3005 HOST=127.0.0.1 node server.js
//
// Routes: GET /health, GET /api/items, GET /api/items/:id, POST /api/items,
// POST /api/echo, GET /api/stream (chunked, no Content-Length). Every other
// GET answers a small JSON document naming the path, so a gateway in front
// of it serves every route during a divert.
'use strict';

const http = require('node:http');

const port = Number(process.env.PORT || 3005);
const host = process.env.HOST || '0.0.0.0';
const items = new Map([
  [1, { id: 1, name: 'alpha' }],
  [2, { id: 2, name: 'beta' }],
]);
let nextId = 3;
const started = Date.now();

function send(res, status, body) {
  const text = JSON.stringify(body);
  res.writeHead(status, {
    'content-type': 'application/json',
    'content-length': Buffer.byteLength(text),
    'x-served-by': 'nodejs-api',
  });
  res.end(text);
}

function readBody(req, limit = 1 << 20) {
  return new Promise((resolve, reject) => {
    const parts = [];
    let size = 0;
    req.on('data', (c) => {
      size += c.length;
      if (size > limit) {
        reject(new Error('body too large'));
        req.destroy();
      } else {
        parts.push(c);
      }
    });
    req.on('end', () => resolve(Buffer.concat(parts)));
    req.on('error', reject);
  });
}

async function handle(req, res) {
  const url = new URL(req.url, 'http://localhost');
  const path = url.pathname;
  if (req.method === 'GET' && path === '/health') {
    return send(res, 200, { status: 'ok', service: 'nodejs-api', uptime_s: (Date.now() - started) / 1000 });
  }
  if (req.method === 'GET' && path === '/api/items') {
    return send(res, 200, { items: [...items.values()] });
  }
  const m = path.match(/^\/api\/items\/(\d+)$/);
  if (req.method === 'GET' && m) {
    const item = items.get(Number(m[1]));
    return item ? send(res, 200, item) : send(res, 404, { error: 'no such item' });
  }
  if (req.method === 'POST' && path === '/api/items') {
    let doc;
    try {
      doc = JSON.parse((await readBody(req)).toString('utf8'));
    } catch (e) {
      return send(res, 400, { error: 'body must be JSON' });
    }
    const item = { id: nextId++, name: String(doc.name || '') };
    items.set(item.id, item);
    return send(res, 201, item);
  }
  if (req.method === 'POST' && path === '/api/echo') {
    const body = await readBody(req);
    return send(res, 200, { method: req.method, headers: req.headers, body: body.toString('utf8') });
  }
  if (req.method === 'GET' && path === '/api/stream') {
    // No Content-Length: Node sends this chunked.
    res.writeHead(200, { 'content-type': 'text/plain', 'x-served-by': 'nodejs-api' });
    const n = Number(url.searchParams.get('parts') || 3);
    for (let i = 0; i < n; i++) res.write(`part ${i}\n`);
    return res.end('end\n');
  }
  if (req.method === 'GET' || req.method === 'HEAD') {
    return send(res, 200, { service: 'nodejs-api', path, fallback: true });
  }
  return send(res, 405, { error: 'method not allowed' });
}

const server = http.createServer((req, res) => {
  handle(req, res).catch((e) => {
    if (!res.headersSent) send(res, 500, { error: String(e.message || e) });
  });
});
server.keepAliveTimeout = 65000;
server.listen(port, host, () => {
  console.log(`nodejs-api listening on ${host}:${port}`);
});
for (const sig of ['SIGTERM', 'SIGINT']) {
  process.on(sig, () => {
    server.close(() => process.exit(0));
    server.closeIdleConnections();
  });
}
