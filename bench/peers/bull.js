// BullMQ side of bench/peers: `fill`, `work` and `probe` (driven by bench.py).
//
// Fastest documented mode (docs.bullmq.io "Auto-removal of jobs", "Concurrency"): jobs are added
// with removeOnComplete: true and removeOnFail: true (the job hash is deleted when it finishes,
// no completed set) and the worker has the same options; one Worker with `concurrency`; no
// metrics, no rate limiter, no sandboxed processor (an inline async function). Stalled-job
// checks and lock renewal stay on (defaults): they are BullMQ's at-least-once delivery, as
// jobqd's leases are its own. Pre-filled with Queue#addBulk, 1,000 jobs per call.
// BullMQ always appends its events to the bull:<queue>:events stream (it has no switch to turn
// that off); the latency probe reads that stream through QueueEvents ("completed").
// Keys: bull:<queue>:wait and bull:<queue>:active (lists) are what bench.py polls.
'use strict';
const { Queue, Worker, QueueEvents } = require('bullmq');
const { queueSpecs, chunks, probe, main } = require('./common');

const connection = (port) => ({ host: '127.0.0.1', port: Number(port) });
const jobOpts = { removeOnComplete: true, removeOnFail: true };

async function fill(port, name, n) {
  const q = new Queue(name, { connection: connection(port) });
  await q.waitUntilReady();
  for (const size of chunks(Number(n), 1000)) {
    const jobs = [];
    for (let i = 0; i < size; ++i) jobs.push({ name: 'noop', data: {}, opts: jobOpts });
    await q.addBulk(jobs);
  }
  await q.close();
  return 0;
}

// work PORT QUEUE:CONCURRENCY...: runs until killed.
async function work(port, ...rest) {
  const workers = [];
  for (const [name, concurrency] of queueSpecs(rest)) {
    const w = new Worker(name, async () => {}, {
      connection: connection(port),
      concurrency,
      ...jobOpts,
    });
    w.on('error', (err) => process.stderr.write(`bullmq: ${err}\n`));
    workers.push(w.waitUntilReady());
  }
  await Promise.all(workers);
  process.stdout.write('ready\n');
  await new Promise(() => {});
}

async function probeMode(port, name, samples) {
  const q = new Queue(name, { connection: connection(port) });
  const events = new QueueEvents(name, { connection: connection(port) });
  await probe({
    samples: Number(samples),
    setup: async (finished) => {
      events.on('completed', ({ jobId }) => finished(jobId));
      await Promise.all([q.waitUntilReady(), events.waitUntilReady()]);
    },
    submit: (id) => q.add('noop', {}, { ...jobOpts, jobId: id }),
  });
  await Promise.all([events.close(), q.close()]);
  return 0;
}

main({ fill, work, probe: probeMode });
