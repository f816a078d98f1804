// One server per listen() call form, on the ports in PORTS (comma-separated,
// all handed); reports what each callback saw. Each answers with its form.
const http = require('http');

const ports = process.env.PORTS.split(',');
const forms = {
  number: (s, p, cb) => s.listen(Number(p), cb),
  string: (s, p, cb) => s.listen(p, cb),
  'port-host-backlog-cb': (s, p, cb) => s.listen(Number(p), 'does-not-resolve.invalid', 128, cb),
  options: (s, p, cb) => s.listen({ port: p, host: '::1', backlog: 64 }, cb),
};
const seen = {};
Object.keys(forms).forEach((form, i) => {
  const server = http.createServer((req, res) => res.end(form));
  forms[form](server, ports[i], () => {
    seen[form] = server.address();
    if (Object.keys(seen).length === ports.length) process.send({ app: 'forms', seen });
  });
});
