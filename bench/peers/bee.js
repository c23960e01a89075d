// bee-queue side of bench/peers: `fill`, `work` and `probe` (driven by bench.py).
//
// Fastest documented mode (bee-queue README: "Settings", "Optimizing Redis Connections", "Under
// the hood"):
// - workers: removeOnSuccess: true (no succeeded set, the job hash is deleted), storeJobs: false,
//   getEvents: false (no Pub/Sub connection), sendEvents: false (no PUBLISH per job) for the
//   throughput and memory runs, activateDelayedJobs: false; stall detection stays on
//   (stallInterval default 5 s: it is bee-queue's at-least-once delivery);
// - producers: isWorker: false, getEvents: false, sendEvents: false, storeJobs: false; jobs are
//   pre-filled with Queue#saveAll (one pipeline per 1,000 jobs).
// The latency probe needs to see jobs finish, so there the worker keeps sendEvents: true and the
// probe's own queue has getEvents: true (bee-queue's documented completion signal).
// Keys: bq:<queue>:waiting and bq:<queue>:active (lists) are what bench.py polls.
'use strict';
const Queue = require('bee-queue');
const { queueSpecs, chunks, probe, main } = require('./common');

const redis = (port) => ({ host: '127.0.0.1', port: Number(port) });

async function fill(port, name, n) {
  const q = new Queue(name, {
    redis: redis(port),
    isWorker: false,
    getEvents: false,
    sendEvents: false,
    storeJobs: false,
  });
  await q.ready();
  for (const size of chunks(Number(n), 1000)) {
    const jobs = [];
    for (let i = 0; i < size; ++i) jobs.push(q.createJob({}));
    const errors = await q.saveAll(jobs);
    if (errors.size) throw new Error(`saveAll: ${[...errors.values()][0]}`);
  }
  await q.close();
  return 0;
}

// work PORT [--events] QUEUE:CONCURRENCY...: runs until killed.
async function work(port, ...rest) {
  const events = rest[0] === '--events';
  if (events) rest.shift();
  const queues = [];
  for (const [name, concurrency] of queueSpecs(rest)) {
    const q = new Queue(name, {
      redis: redis(port),
      isWorker: true,
      getEvents: false,
      sendEvents: events,
      storeJobs: false,
      removeOnSuccess: true,
      removeOnFailure: true,
      activateDelayedJobs: false,
    });
    q.on('error', (err) => process.stderr.write(`bee-queue: ${err}\n`));
    q.process(concurrency, async () => {});
    queues.push(q.ready());
  }
  await Promise.all(queues);
  process.stdout.write('ready\n');
  await new Promise(() => {});
}

async function probeMode(port, name, samples) {
  const q = new Queue(name, {
    redis: redis(port),
    isWorker: false,
    getEvents: true,
    sendEvents: false,
    storeJobs: false,
  });
  await probe({
    samples: Number(samples),
    setup: async (finished) => {
      q.on('job succeeded', (id) => finished(id));
      await q.ready();
    },
    submit: (id) => q.createJob({}).setId(id).save(),
  });
  await q.close();
  return 0;
}

main({ fill, work, probe: probeMode });
