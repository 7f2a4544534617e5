// A server that routes the way many Node applications do: on the pathname
// of new URL(req.url, base), the WHATWG URL parser, which resolves "%2E%2E"
// and ".%2e" segments as "..". It answers every request with the pathname
// it saw, as a JSON string, prints its port on the first line of stdout,
// and exits when its stdin closes (so it never outlives the test).
'use strict';
const http = require('http');

const server = http.createServer((req, res) => {
  const pathname = new URL(req.url, 'http://x').pathname;
  res.setHeader('Content-Type', 'application/json');
  res.end(JSON.stringify(pathname));
});
server.listen(0, '127.0.0.1', () => {
  process.stdout.write(server.address().port + '\n');
});
process.stdin.on('end', () => process.exit(0));
process.stdin.resume();
