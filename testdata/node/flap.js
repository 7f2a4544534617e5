// A WebSocket server on the ws package that sends one message on every
// connection and closes it (StatusGoingAway): a link that flaps. It listens
// on a free loopback port, prints the port on stdout, and exits when its
// stdin closes (so that it never outlives the test that started it).
'use strict';
const { WebSocketServer } = require('ws');

const wss = new WebSocketServer({ host: '127.0.0.1', port: 0 });
let n = 0;
wss.on('listening', () => process.stdout.write(wss.address().port + '\n'));
wss.on('connection', (ws) => {
  n++;
  ws.send(JSON.stringify({ n }));
  ws.close(1001, 'bye');
});
process.stdin.on('end', () => process.exit(0));
process.stdin.resume();
