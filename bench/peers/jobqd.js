// jobqd's latency probe (driven by bench.py), in node like the peers' probes so every system is
// timed by the same runtime and the same kind of client: LPUSH a job to jobq:{q}:pending and
// time it until its "succeeded" message on jobq:{q}:events (docs/redis-keys.md).
'use strict';
const Redis = require('ioredis');
const { probe, main } = require('./common');

async function probeMode(port, queue, samples) {
  const opts = { host: '127.0.0.1', port: Number(port), maxRetriesPerRequest: 1 };
  const cmd = new Redis(opts);
  const sub = new Redis(opts);
  const channel = `jobq:{${queue}}:events`;
  await probe({
    samples: Number(samples),
    setup: async (finished) => {
      sub.on('message', (ch, message) => {
        const m = JSON.parse(message);
        if (m.status === 'succeeded') finished(m.id);
      });
      await sub.subscribe(channel);
      await cmd.ping();
    },
    submit: (id) => cmd.lpush(`jobq:{${queue}}:pending`, JSON.stringify({ id, payload: {} })),
  });
  cmd.disconnect();
  sub.disconnect();
  return 0;
}

main({ probe: probeMode });
