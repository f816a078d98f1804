import { json } from '@sveltejs/kit';

const whoami = () => json({ worker: process.env.CLUSTERINIT_WORKER, pid: process.pid });

export const GET = whoami;
export const POST = whoami;
