import { json } from '@sveltejs/kit';
import { setTimeout as sleep } from 'node:timers/promises';

// A slow answer, for a request in flight during a drain.
export async function GET({ url }) {
  console.log(`slow request in pid ${process.pid}`);
  await sleep(Number(url.searchParams.get('ms')) || 1000);
  return json({ worker: process.env.CLUSTERINIT_WORKER, pid: process.pid });
}
