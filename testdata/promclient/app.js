// An app that uses prom-client's default registry, as most do, and serves
// its own register.metrics() at /metrics (which under clusterinit answers for
// one worker only: /metrics/app on the health server answers for all).
//
//   GET /          counts app_requests_total and observes app_latency_seconds
//   GET /block?ms= blocks the event loop that long (a worker hung mid-scrape)
//   GET /metrics   this worker's own metrics
//
// SERIES=N adds a counter with N label values, so that one worker's answer
// is larger than clusterinit's 64 KiB IPC read buffer.
'use strict';
const http = require('node:http');
// PROM_CLIENT: the path of another copy (testdata/promclient/v13/…).
const client = require(process.env.PROM_CLIENT || 'prom-client');
require('./metrics-common.js')(client, http, require('node:process'));
