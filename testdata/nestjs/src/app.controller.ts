import { Controller, Get, HttpCode, Post, Query } from '@nestjs/common';
import { setTimeout as sleep } from 'node:timers/promises';
import { AppService } from './app.service.js';

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
  async slow(@Query('ms') ms: string) {
    console.log(`slow request in pid ${process.pid}`);
    await sleep(Number(ms) || 1000);
    return this.app.whoami();
  }
}
