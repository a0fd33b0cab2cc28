// An origin that answers the way real ones do, on node's own `http` module (its framing,
// its chunked coding) and, for answers `http` will not send, on a raw `net` socket.
// Started by the tests in tests/tests/rfc/ (its kit); prints `{"http":PORT,"raw":PORT}` on
// its first line and serves until killed. Loopback only.
//
// http (node's framing):
//   /status/NNN[?cc=..]       status NNN, body "status NNN\n" (none for 204/304); 3xx send
//                             Location: /moved; cc sets Cache-Control
//   /chunked/N[?etag=..&cc=..] N bytes of pattern, chunked (no Content-Length), in pieces
//   /changing/N               N bytes, Range supported, no validators; every answer is a
//                             new version (each byte is the version number)
//   /weak/N                   the same behind one weak ETag, W/"same"
//   /strong/N                 the same with a strong ETag naming each version
//   /ranged/N[?cap=C&extra=E] N bytes of pattern behind one strong ETag, Range answered by
//                             node's own framing (chunked: no Content-Length), each range
//                             capped at C bytes, E bytes of "J" sent past it
//   /slow-chunked/N           N bytes chunked, 16 KiB every 50 ms (a stream still arriving)
//   /hints                    103 Early Hints (a Link), then after 200 ms a 200
//   /dated/NAME?ago=S&exp=S&cc=..&ago304=S
//                             "dated\n" generated S seconds ago (Date = now - ago), Expires
//                             = now + exp (when given), cc sets Cache-Control, with ETag
//                             "ev", a Last-Modified, Vary: Accept-Language and a
//                             Content-Location; a request whose If-None-Match names "ev" gets
//                             a 304 with those fields and Date = now - ago304 (default 0)
//   /count                    how many requests each path got, as JSON
// raw (no framing help):
//   /close/N                  HTTP/1.0-style: N bytes delimited by the connection's close
//   /te-cl                    both Transfer-Encoding: chunked and Content-Length: 3
//   /short/N                  Content-Length N, half of it, then close

'use strict';
const http = require('http');
const net = require('net');

const counts = {};
let version = 0;

function pattern(n, seed) {
  const b = Buffer.alloc(n);
  for (let i = 0; i < n; i++) b[i] = (i * 31 + seed * 7 + (i >> 8)) & 0xff;
  return b;
}

function query(url) {
  const q = {};
  const at = url.indexOf('?');
  if (at < 0) return q;
  for (const kv of url.slice(at + 1).split('&')) {
    const [k, v] = kv.split('=');
    q[k] = decodeURIComponent(v || '');
  }
  return q;
}

// A versioned body with Range support: what a static file server does, minus validators.
function versioned(req, res, n, etag) {
  version += 1;
  const body = Buffer.alloc(n, version & 0xff);
  const headers = { 'Content-Type': 'application/octet-stream', 'Cache-Control': 'max-age=60' };
  if (etag) headers.ETag = etag(version);
  const m = /^bytes=(\d+)-(\d*)$/.exec(req.headers.range || '');
  if (m) {
    const first = Number(m[1]);
    const last = Math.min(m[2] === '' ? n - 1 : Number(m[2]), n - 1);
    if (first < n) {
      headers['Content-Range'] = `bytes ${first}-${last}/${n}`;
      res.writeHead(206, headers);
      res.end(body.subarray(first, last + 1));
      return;
    }
  }
  res.writeHead(200, headers);
  res.end(body);
}

function ranged(req, res, n, cap, extra) {
  const body = pattern(n, 5);
  const headers = { 'Content-Type': 'application/octet-stream', 'Cache-Control': 'max-age=60', ETag: `"r${n}"` };
  const m = /^bytes=(\d+)-(\d*)$/.exec(req.headers.range || '');
  if (m && Number(m[1]) < n) {
    const first = Number(m[1]);
    let last = Math.min(m[2] === '' ? n - 1 : Number(m[2]), n - 1);
    if (cap > 0) last = Math.min(last, first + cap - 1);
    headers['Content-Range'] = `bytes ${first}-${last}/${n}`;
    res.writeHead(206, headers);
    res.write(body.subarray(first, last + 1));
    res.end(Buffer.alloc(extra, 'J'));
    return;
  }
  res.writeHead(200, headers);
  res.end(body);
}

const server = http.createServer((req, res) => {
  const path = req.url.split('?')[0];
  counts[path] = (counts[path] || 0) + 1;
  const q = query(req.url);
  const parts = path.split('/');
  if (parts[1] === 'status') {
    const status = Number(parts[2]);
    const headers = {};
    if (q.cc) headers['Cache-Control'] = q.cc;
    if (status >= 300 && status < 400 && status !== 304) headers.Location = '/moved';
    if (status === 204 || status === 304) {
      res.writeHead(status, headers);
      res.end();
      return;
    }
    const body = `status ${status}\n`;
    headers['Content-Type'] = 'text/plain';
    headers['Content-Length'] = Buffer.byteLength(body);
    res.writeHead(status, headers);
    res.end(body);
  } else if (parts[1] === 'chunked') {
    const n = Number(parts[2]);
    const headers = { 'Content-Type': 'application/octet-stream' };
    if (q.etag) headers.ETag = q.etag;
    if (q.cc) headers['Cache-Control'] = q.cc;
    res.writeHead(200, headers);
    const body = pattern(n, 3);
    let at = 0;
    const step = () => {
      while (at < n) {
        const piece = body.subarray(at, Math.min(n, at + 7000));
        at += piece.length;
        if (!res.write(piece)) {
          res.once('drain', step);
          return;
        }
      }
      res.end();
    };
    step();
  } else if (parts[1] === 'slow-chunked') {
    const n = Number(parts[2]);
    res.writeHead(200, { 'Content-Type': 'application/octet-stream', 'Cache-Control': 'max-age=60' });
    const body = pattern(n, 3);
    let at = 0;
    const timer = setInterval(() => {
      const piece = body.subarray(at, Math.min(n, at + 16384));
      at += piece.length;
      res.write(piece);
      if (at >= n) {
        clearInterval(timer);
        res.end();
      }
    }, 50);
    res.on('close', () => clearInterval(timer));
  } else if (parts[1] === 'changing') {
    versioned(req, res, Number(parts[2]), null);
  } else if (parts[1] === 'weak') {
    versioned(req, res, Number(parts[2]), () => 'W/"same"');
  } else if (parts[1] === 'ranged') {
    ranged(req, res, Number(parts[2]), Number(q.cap || 0), Number(q.extra || 0));
  } else if (parts[1] === 'strong') {
    versioned(req, res, Number(parts[2]), (v) => `"v${v}"`);
  } else if (path === '/hints') {
    res.writeEarlyHints({ link: '</style.css>; rel=preload; as=style' });
    setTimeout(() => {
      res.writeHead(200, { 'Content-Type': 'text/plain', 'Content-Length': 6, 'Cache-Control': 'max-age=60' });
      res.end('hinted');
    }, 200);
  } else if (parts[1] === 'dated') {
    const now = Date.now();
    const at = (ago) => new Date(now - Number(ago || 0) * 1000).toUTCString();
    const headers = {
      ETag: '"ev"',
      'Last-Modified': 'Sun, 06 Nov 1994 08:49:37 GMT',
      Vary: 'Accept-Language',
      'Content-Location': `/dated/${parts[2]}.txt`,
    };
    if (q.cc) headers['Cache-Control'] = q.cc;
    if (q.exp) headers.Expires = new Date(now + Number(q.exp) * 1000).toUTCString();
    if ((req.headers['if-none-match'] || '').includes('"ev"')) {
      headers.Date = at(q.ago304);
      res.writeHead(304, headers);
      res.end();
      return;
    }
    headers.Date = at(q.ago);
    headers['Content-Type'] = 'text/plain';
    headers['Content-Length'] = 6;
    res.writeHead(200, headers);
    res.end('dated\n');
  } else if (path === '/count') {
    const body = JSON.stringify(counts);
    res.writeHead(200, { 'Content-Type': 'application/json', 'Cache-Control': 'no-store' });
    res.end(body);
  } else {
    res.writeHead(404, { 'Content-Type': 'text/plain' });
    res.end('no such answer\n');
  }
});

const raw = net.createServer((sock) => {
  let head = '';
  sock.on('error', () => {});
  sock.on('data', (d) => {
    head += d.toString('latin1');
    if (!head.includes('\r\n\r\n')) return;
    const target = head.split(' ')[1] || '/';
    const path = target.split('?')[0];
    counts[path] = (counts[path] || 0) + 1;
    const parts = path.split('/');
    sock.removeAllListeners('data');
    if (parts[1] === 'close') {
      const n = Number(parts[2]);
      sock.write('HTTP/1.0 200 OK\r\nContent-Type: application/octet-stream\r\n' +
        'Cache-Control: max-age=60\r\n\r\n');
      sock.end(pattern(n, 5));
    } else if (parts[1] === 'te-cl') {
      sock.end('HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n' +
        'Cache-Control: max-age=60\r\nConnection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n');
    } else if (parts[1] === 'short') {
      const n = Number(parts[2]);
      sock.write(`HTTP/1.1 200 OK\r\nContent-Length: ${n}\r\nCache-Control: max-age=60\r\n\r\n`);
      sock.end(pattern(Math.floor(n / 2), 5));
    } else {
      sock.end('HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n');
    }
  });
});

server.listen(0, '127.0.0.1', () => {
  raw.listen(0, '127.0.0.1', () => {
    process.stdout.write(JSON.stringify({ http: server.address().port, raw: raw.address().port }) + '\n');
  });
});
