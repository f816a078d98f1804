import { json } from '@sveltejs/kit';
import fs from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';

// Waits ms (default 1000), or less: until the file named by until exists
// (the tests create it once this worker is draining).
async function slowWait(ms, until) {
  const end = Date.now() + (Number(ms) || 1000);
  while (Date.now() < end && !(until && fs.existsSync(until))) await sleep(20);
}

// A slow answer, for a request in flight during a drain.
export async function GET({ url }) {
  console.log(`slow request in pid ${process.pid}`);
  await slowWait(url.searchParams.get('ms'), url.searchParams.get('until'));
  return json({ worker: process.env.CLUSTERINIT_WORKER, pid: process.pid });
}
