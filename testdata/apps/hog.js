// A worker that misbehaves on request, for the recycling tests. It serves
// like testdata/apps/http.js and, depending on HOG:
//   leak       grows by LEAK_MB of Buffers (native memory, outside the V8 heap)
//              every 100 ms up to LEAK_MAX_MB (default 10 MB/s, unbounded)
//   heapleak   grows its V8 heap by about LEAK_MB of live objects every 100 ms
//              (default 10 MB/s) until V8 gives up at its heap limit
//   child      starts a child process that holds CHILD_MB of memory for CHILD_MS (forever if unset)
//   burn       keeps one core busy (in slices, so it still answers requests)
//   burn30     keeps about 30% of a core busy
//   hang       blocks its event loop forever HANG_AFTER_MS after listening
const http = require('http');
const { spawn } = require('child_process');

// HOG_SLOT=N: only worker N misbehaves; the others just serve.
const slot = process.env.HOG_SLOT;
const hog = slot === undefined || slot === process.env.CLUSTERINIT_WORKER ? process.env.HOG || '' : '';
const held = [];
const touch = (mb) => {
  const b = Buffer.alloc(mb << 20);
  for (let i = 0; i < b.length; i += 4096) b[i] = 1; // resident, not just reserved
  held.push(b);
};

const server = http.createServer((req, res) => {
  res.setHeader('Content-Type', 'application/json');
  res.end(JSON.stringify({ worker: process.env.CLUSTERINIT_WORKER, pid: process.pid }));
});

server.listen(process.env.PORT || 3000, () => {
  if (hog === 'leak') {
    const step = Number(process.env.LEAK_MB || 1);
    const max = Number(process.env.LEAK_MAX_MB || 1e9);
    let total = 0;
    setInterval(() => { if (total < max) { touch(step); total += step; } }, 100);
  }
  if (hog === 'heapleak') {
    const step = Number(process.env.LEAK_MB || 1);
    setInterval(() => {
      // About 1 MB per 10,000 small objects with a string each.
      for (let n = 0; n < step * 10000; n++) held.push({ n, s: 'x' + n });
    }, 100);
  }
  if (hog === 'child') {
    const mb = Number(process.env.CHILD_MB || 100);
    const ms = process.env.CHILD_MS ? Number(process.env.CHILD_MS) : 0;
    const code = `const b=Buffer.alloc(${mb}<<20);for(let i=0;i<b.length;i+=4096)b[i]=1;` +
      (ms ? `setTimeout(()=>process.exit(0),${ms});` : 'setInterval(()=>{},1e6);');
    const child = spawn(process.execPath, ['-e', code], { stdio: 'ignore' });
    child.on('exit', () => console.log('hog: child exited'));
  }
  if (hog === 'burn' || hog === 'burn30') {
    const busy = hog === 'burn' ? 100 : 30;
    const slice = () => {
      const end = Date.now() + busy;
      while (Date.now() < end);
      setTimeout(slice, 100 - busy);
    };
    slice();
  }
  if (hog === 'hang') {
    setTimeout(() => { for (;;); }, Number(process.env.HANG_AFTER_MS || 0));
  }
});
