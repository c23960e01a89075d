// Shared by bee.js, bull.js and jobqd.js: the submit-to-finish latency probe and small helpers.
'use strict';
const { performance } = require('node:perf_hooks');
const readline = require('node:readline');

// "q:10" -> ['q', 10]
function queueSpecs(args) {
  return args.map((a) => {
    const [name, c] = a.split(':');
    return [name, Number(c || 1)];
  });
}

function chunks(n, size) {
  const out = [];
  for (let done = 0; done < n; done += size) out.push(Math.min(size, n - done));
  return out;
}

// Resolves with the next line read from stdin that satisfies `want`.
function stdinLines() {
  const rl = readline.createInterface({ input: process.stdin });
  const listeners = new Set();
  rl.on('line', (l) => listeners.forEach((f) => f(l.trim())));
  rl.on('close', () => listeners.forEach((f) => f('stop')));
  return {
    on(f) {
      listeners.add(f);
    },
  };
}

// The probe: one job at a time, submit -> finished. `submit(id)` sends the job; the system's
// own completion signal calls `finished(id)`. Protocol with bench.py: prints "ready", waits
// for "go" on stdin, then samples until `samples` are taken or "stop" (or EOF) arrives; prints
// one line per sample, `<submit time, unix ms>\t<latency ms>`, then "done".
async function probe({ submit, samples, setup }) {
  const waiters = new Map();
  const finished = (id) => {
    const w = waiters.get(id);
    if (w) {
      waiters.delete(id);
      w();
    }
  };
  await setup(finished);
  const lines = stdinLines();
  let stop = false;
  let go;
  const started = new Promise((r) => (go = r));
  lines.on((l) => {
    if (l === 'go') go();
    if (l === 'stop') {
      stop = true;
      go();
    }
  });
  process.stdout.write('ready\n');
  await started;
  const out = [];
  for (let i = 0; i < samples && !stop; ++i) {
    const id = `p${i}`;
    let timer;
    const done = new Promise((resolve, reject) => {
      waiters.set(id, resolve);
      timer = setTimeout(() => reject(new Error(`job ${id} not finished within 30 s`)), 30000);
    });
    const t0 = performance.now();
    await submit(id);
    await done;
    const t1 = performance.now();
    clearTimeout(timer);
    out.push(`${(performance.timeOrigin + t0).toFixed(3)}\t${(t1 - t0).toFixed(4)}`);
  }
  process.stdout.write(out.join('\n') + (out.length ? '\n' : '') + 'done\n');
}

function main(modes) {
  const [mode, ...args] = process.argv.slice(2);
  const f = modes[mode];
  if (!f) {
    process.stderr.write(`usage: ${process.argv[1]} ${Object.keys(modes).join('|')} ...\n`);
    process.exit(2);
  }
  f(...args).then(
    (code) => {
      if (typeof code === 'number') process.exit(code);
    },
    (err) => {
      process.stderr.write(`${err && err.stack ? err.stack : err}\n`);
      process.exit(1);
    }
  );
}

module.exports = { queueSpecs, chunks, probe, main };
