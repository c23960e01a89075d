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
// own completion signal calls `finished(id)`. Protocol with bench.py: prints "ready"; on
// "warm N" takes N samples it does not report (ids w0, w1...) and prints "warmed"; on "go"
// samples until `samples` are taken or "stop" (or EOF) arrives, prints one line per sample,
// `<submit time, unix ms>\t<latency ms>`, then "done".
// Why the warm-up: node compiles the probe's hot paths (its client's command and reply code,
// the loop below) over its first few thousand samples, and those compilations stall the probe
// for milliseconds at a time: measured on jobqd, p99 4.9 ms over the first 1,000 samples and
// 0.7-1.0 ms from the 5,000th on. What the bench measures is the system, not the probe's JIT.
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
  // One sample: resolves with [submit time (performance.now()), latency ms].
  const sample = async (id) => {
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
    return [t0, t1 - t0];
  };
  const lines = stdinLines();
  let stop = false;
  let next = null;  // resolves the wait for the next command line
  const commands = [];
  lines.on((l) => {
    if (l === 'stop') stop = true;
    commands.push(l);
    if (next) next();
  });
  const command = async () => {
    while (!commands.length) await new Promise((r) => (next = r));
    next = null;
    return commands.shift();
  };
  process.stdout.write('ready\n');
  for (;;) {
    const c = await command();
    if (c === 'go' || c === 'stop') break;
    const warm = /^warm (\d+)$/.exec(c);
    if (warm) {
      for (let i = 0; i < Number(warm[1]) && !stop; ++i) await sample(`w${i}`);
      process.stdout.write('warmed\n');
    } else {
      process.stderr.write(`probe: unknown command ${JSON.stringify(c)} (want warm N, go, stop)\n`);
    }
  }
  const out = [];
  for (let i = 0; i < samples && !stop; ++i) {
    const [t0, ms] = await sample(`p${i}`);
    out.push(`${(performance.timeOrigin + t0).toFixed(3)}\t${ms.toFixed(4)}`);
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
