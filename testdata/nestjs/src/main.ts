// The NestJS starter's bootstrap, plus enableShutdownHooks() as Nest's docs
// say for shutdown hooks. Built with tsc (npm run build) and run as
// node dist/main.js. Nothing in it knows about clusterinit.
import 'reflect-metadata';
import { NestFactory } from '@nestjs/core';
import { AppModule } from './app.module.js';

async function bootstrap() {
  const app = await NestFactory.create(AppModule, { logger: ['error', 'warn'] });
  app.enableShutdownHooks();
  await app.listen(process.env.PORT ?? 3000);
  console.log(`nestjs listening on ${await app.getUrl()}, pid ${process.pid}`);
}
bootstrap();
