// nodejs-api: the Node.js fallback service that ultragate diverts traffic to
// when the primary pool is unhealthy. Plain `node:http`, no framework.
//
//   PORT=3005 HOST=127.0.0.1 node server.js
//   TLS_CERT_FILE=tls.crt TLS_KEY_FILE=tls.key HTTPS_PORT=3443 node server.js
//
// With TLS_CERT_FILE and TLS_KEY_FILE it also serves HTTPS on HTTPS_PORT
// (default 3443) with the same handler: a Service diverted to it keeps its
// https port. The files are read again when they change (a cert-manager
// renewal of the mounted Secret), without dropping a connection.
//
// Routes: GET /health, GET /api/items, GET /api/items/:id, POST /api/items,
// POST /api/echo, GET /api/stream (chunked, no Content-Length). Every other
// GET answers a small JSON document naming the path, so a gateway in front
// of it serves every route during a divert.
'use strict';

const fs = require('node:fs');
const http = require('node:http');
const https = require('node:https');

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
  if (req.method === 'GET' && (path === '/health' || path === '/health/live' || path === '/health/ready')) {
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

function serve(req, res) {
  handle(req, res).catch((e) => {
    if (!res.headersSent) send(res, 500, { error: String(e.message || e) });
  });
}

const servers = [http.createServer(serve)];
servers[0].listen(port, host, () => console.log(`nodejs-api listening on ${host}:${port}`));

const certFile = process.env.TLS_CERT_FILE;
const keyFile = process.env.TLS_KEY_FILE;
if (certFile && keyFile) {
  const httpsPort = Number(process.env.HTTPS_PORT || 3443);
  const load = () => ({ cert: fs.readFileSync(certFile), key: fs.readFileSync(keyFile) });
  const tls = https.createServer(load(), serve);
  // A renewed Secret swaps the files: the new pair is taken for new
  // connections; a pair that does not load keeps the old one.
  const stamp = () => {
    try {
      return `${fs.statSync(certFile).mtimeMs}:${fs.statSync(keyFile).mtimeMs}`;
    } catch (e) {
      return null;
    }
  };
  let last = stamp();
  setInterval(() => {
    const now = stamp();
    if (now === null || now === last) return;
    try {
      tls.setSecureContext(load());
      last = now;
      console.log('nodejs-api: certificate reloaded');
    } catch (e) {
      console.error(`nodejs-api: certificate not reloaded: ${e.message}`);
    }
  }, 5000).unref();
  tls.listen(httpsPort, host, () => console.log(`nodejs-api listening on ${host}:${httpsPort} (https)`));
  servers.push(tls);
}
for (const s of servers) s.keepAliveTimeout = 65000;
for (const sig of ['SIGTERM', 'SIGINT']) {
  process.on(sig, () => {
    let open = servers.length;
    for (const s of servers) {
      s.close(() => {
        open -= 1;
        if (open === 0) process.exit(0);
      });
      s.closeIdleConnections();
    }
  });
}
