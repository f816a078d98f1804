import { appendFileSync } from 'node:fs';

// adapter-node emits sveltekit:shutdown once its server has closed after
// SIGTERM/SIGINT: where an app closes its pools, as SvelteKit's docs show.
// SHUTDOWN_LOG (set by the tests) names a file this appends
// "<pid> sveltekit:shutdown <reason>" to.
process.on('sveltekit:shutdown', (reason) => {
  if (process.env.SHUTDOWN_LOG) appendFileSync(process.env.SHUTDOWN_LOG, `${process.pid} sveltekit:shutdown ${reason}\n`);
});
