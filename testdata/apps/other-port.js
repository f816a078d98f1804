// Listens on PORT, which is not a handed port, and reports the port it got
// (process.send) once listening.
const http = require('http');

const server = http.createServer((req, res) => res.end('other-port\n'));
server.listen(Number(process.env.PORT), '127.0.0.1', () => {
  process.send({ app: 'listening', port: server.address().port });
});
