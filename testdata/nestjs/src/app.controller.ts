import { Controller, Get, HttpCode, Post, Query } from '@nestjs/common';
import { existsSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { AppService } from './app.service.js';

// Waits ms (default 1000), or less: until the file named by until exists
// (the tests create it once this worker is draining).
async function slowWait(ms: string, until?: string) {
  const end = Date.now() + (Number(ms) || 1000);
  while (Date.now() < end && !(until && existsSync(until))) await sleep(20);
}

@Controller()
export class AppController {
  constructor(private readonly app: AppService) {}

  @Get()
  get() {
    return this.app.whoami();
  }

  @Post()
  @HttpCode(200)
  post() {
    return this.app.whoami();
  }

  // A slow answer, for a request in flight during a drain.
  @Get('slow')
  async slow(@Query('ms') ms: string, @Query('until') until?: string) {
    console.log(`slow request in pid ${process.pid}`);
    await slowWait(ms, until);
    return this.app.whoami();
  }
}
