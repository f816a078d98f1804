import { Injectable, OnApplicationShutdown } from '@nestjs/common';
import { appendFileSync } from 'node:fs';

@Injectable()
export class AppService implements OnApplicationShutdown {
  whoami() {
    return { worker: process.env.CLUSTERINIT_WORKER, pid: process.pid };
  }

  // Where an app closes its pools. SHUTDOWN_LOG (set by the tests) names a
  // file this appends "<pid> onApplicationShutdown" to.
  onApplicationShutdown(signal?: string) {
    if (process.env.SHUTDOWN_LOG) {
      appendFileSync(process.env.SHUTDOWN_LOG, `${process.pid} onApplicationShutdown ${signal}\n`);
    }
  }
}
