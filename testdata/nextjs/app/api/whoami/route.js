// Which worker answered: the end-to-end tests count responses per slot and pid.
export const dynamic = 'force-dynamic';

function whoami() {
  return Response.json({ worker: process.env.CLUSTERINIT_WORKER, pid: process.pid });
}

export function GET() {
  return whoami();
}

export async function POST(request) {
  // Read the body so that a keep-alive connection is left clean.
  await request.text();
  return whoami();
}
