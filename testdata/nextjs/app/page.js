// Rendered on the server for every request, in whichever worker accepted it.
export const dynamic = 'force-dynamic';

export default function Home() {
  return (
    <main>
      <h1>clusterinit</h1>
      <p id="worker">worker {process.env.CLUSTERINIT_WORKER}</p>
      <p id="pid">pid {process.pid}</p>
    </main>
  );
}
