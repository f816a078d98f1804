// app.js as an ES module: prom-client imported, not required.
import http from 'node:http';
import process from 'node:process';
import { createRequire } from 'node:module';
import client from 'prom-client';

createRequire(import.meta.url)('./metrics-common.js')(client, http, process);
