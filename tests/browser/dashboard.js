#!/usr/bin/env node
// The dashboard in a real browser: Debian's chromium, headless, driven by puppeteer-core (which
// downloads no browser). Run by tests/integration/test_dashboard.cpp against a jobqd it started:
//
//   node tests/browser/dashboard.js BASE_URL REDIS_URL OUT_DIR FAIL_MARKER [TOKEN]
//
// BASE_URL is jobqd's HTTP address (http://127.0.0.1:PORT), REDIS_URL its Redis, OUT_DIR where
// the screenshots go, FAIL_MARKER a file whose presence makes queue `flaky`'s jobs fail (this
// script makes and removes it). jobqd serves queues `echo` (the echo built-in), `slow` (the sleep
// built-in; retain.payload), `flaky` (an exec handler that fails while the marker exists,
// max_attempts 1; strict priorities, weight 3) and `files` (echo, taking the files dropped in the folder `spool` beside
// FAIL_MARKER, rate 100/s, global_concurrency 50), and a config schedule `nightly` of echo; $JOBQCTL is jobqctl's path
// (runtime schedules).
// With TOKEN, jobqd asks for that token (http.token_file) and is read-only (http.read_only): the
// sign-in and read-only checks run instead of the others. Prints `ok NAME` or `not ok NAME: why`
// per check (and `# memory: ...`, the page's heap and DOM through thousands of job ends) and
// exits 1 when any failed. Every wait is a poll with a deadline; a run past RUN_DEADLINE_MS stops
// with a `not ok`.
'use strict';

const { execFileSync } = require('child_process');
const fs = require('fs');
const os = require('os');
const path = require('path');
const puppeteer = require('puppeteer-core');
const Redis = require('ioredis');

const [BASE, REDIS_URL, OUT_DIR, FAIL_MARKER, TOKEN] = process.argv.slice(2);
if (!BASE || !REDIS_URL || !OUT_DIR || !FAIL_MARKER) {
  console.error('usage: dashboard.js BASE_URL REDIS_URL OUT_DIR FAIL_MARKER');
  process.exit(2);
}

const WAIT_MS = 20000; // one wait for the page to show something
const RUN_DEADLINE_MS = 240000;
const NARROW = 375;
const WIDE = 1440;
const XSS = {
  note: '<script>window.__pwned=1</script>',
  html: '"><img src=x onerror="window.__pwned=1">',
};

let failures = 0;
const problems = []; // page errors and CSP violations seen, for the last check

// ---- reporting ---------------------------------------------------------------------------------

// Runs one check; true if it passed.
async function check(name, body) {
  try {
    await body();
    console.log(`ok ${name}`);
    return true;
  } catch (e) {
    failures++;
    const why = String((e && e.message) || e).split('\n')[0];
    console.log(`not ok ${name}: ${why}`);
    return false;
  }
}

function expect(cond, message) {
  if (!cond) throw new Error(message);
}

// ---- page helpers ------------------------------------------------------------------------------

// Polls `fn(...args)` in the page until it returns something truthy; `what` names it in a failure.
async function until(page, what, fn, ...args) {
  try {
    return await (
      await page.waitForFunction(fn, { timeout: WAIT_MS, polling: 100 }, ...args)
    ).jsonValue();
  } catch (e) {
    const seen = await page
      .evaluate(() => ({
        hash: location.hash,
        status: document.querySelector('#status')?.textContent,
        error: document.querySelector('#error')?.hidden
          ? ''
          : document.querySelector('#error-text')?.textContent,
      }))
      .catch(() => ({}));
    throw new Error(
      `${what}: not within ${WAIT_MS} ms (page at ${seen.hash || '#/'}, status "${seen.status || ''}"` +
        `${seen.error ? `, error "${seen.error}"` : ''})`,
    );
  }
}

const text = (page, sel) => page.$eval(sel, (n) => n.textContent).catch(() => null);

async function go(page, hash) {
  await page.evaluate((h) => {
    location.hash = h;
  }, hash);
  await until(page, `route ${hash}`, (h) => location.hash === h, hash);
}

// Clicks `selector`, then the dialog's confirm button; waits for the status line to say `said`.
async function confirmAction(page, selector, said) {
  await page.click(selector);
  await until(page, 'the confirm dialog', () => document.querySelector('#confirm')?.open);
  await page.click('#confirm-ok');
  await until(
    page,
    `status "${said}"`,
    (s) => document.querySelector('#status').textContent.includes(s),
    said,
  );
}

async function screenshot(page, name) {
  await page.screenshot({ path: path.join(OUT_DIR, `${name}.png`), fullPage: true });
}

async function noSideScroll(page, width) {
  await page.setViewport({ width, height: 900 });
  const [scroll, inner] = await page.evaluate(() => [
    document.documentElement.scrollWidth,
    window.innerWidth,
  ]);
  expect(scroll <= inner, `${width} px wide: the page scrolls sideways (${scroll} > ${inner})`);
}

// Polls `fn()` (in this process) until it returns something truthy, within WAIT_MS.
async function waitFor(what, fn) {
  const deadline = Date.now() + WAIT_MS;
  for (;;) {
    const got = await fn();
    if (got) return got;
    if (Date.now() > deadline) throw new Error(`${what}: not within ${WAIT_MS} ms`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

// The status line says `said` after the dialog, whose text says `count` (the jobs to act on).
async function confirmBulk(page, selector, count, said) {
  await page.click(selector);
  await until(page, 'the confirm dialog', () => document.querySelector('#confirm')?.open);
  const asked = await text(page, '#confirm-title');
  expect(asked.includes(count), `the dialog asks "${asked}", not about ${count}`);
  await page.click('#confirm-ok');
  await until(
    page,
    `status "${said}"`,
    (s) => document.querySelector('#status').textContent.includes(s),
    said,
  );
}

// The `data-at` of a status tab's rows (when each job ended), in the order shown.
const rowTimes = (page) =>
  page.$$eval('#jobs tbody tr[data-id]', (rows) => rows.map((r) => Number(r.dataset.at || -1)));

// A schedule's row of the schedules view: each cell's text, and its outcome's link.
function scheduleRow(page, name) {
  return page.$eval(`#schedules tr[data-schedule="${name}"]`, (tr) => {
    const row = {};
    for (const td of tr.querySelectorAll('td[data-col]'))
      row[td.dataset.col] = td.textContent.trim();
    const a = tr.querySelector('td[data-col="outcome"] a');
    row.href = a ? a.getAttribute('href') : null;
    row.lastId = a ? a.title : null;
    row.jobTitle = tr.querySelector('td[data-col="job"] span')?.title ?? null;
    row.nextAt = tr.querySelector('td[data-col="next"] time')?.getAttribute('datetime') ?? null;
    return row;
  });
}

// jobqctl (its path in $JOBQCTL) against this Redis: what it printed.
function jobqctl(args) {
  if (!process.env.JOBQCTL) throw new Error('JOBQCTL is not set');
  return execFileSync(process.env.JOBQCTL, ['--redis', REDIS_URL, ...args], {
    encoding: 'utf8',
    timeout: 10000,
  });
}

// ---- Redis -------------------------------------------------------------------------------------

function push(redis, queue, job) {
  return redis.lpush(`jobq:{${queue}}:pending`, JSON.stringify(job));
}

const statusOf = (redis, queue, id) => redis.hget(`jobq:{${queue}}:job:${id}`, 'status');

// Jobs pushed at once; resolves when every one's state says `status`.
async function pushAll(redis, queue, ids, payload, status) {
  await redis.lpush(`jobq:{${queue}}:pending`, ...ids.map((id) => JSON.stringify({ id, payload })));
  await waitFor(`${ids.length} jobs of ${queue} ${status}`, async () => {
    const pipe = redis.pipeline();
    for (const id of ids) pipe.hget(`jobq:{${queue}}:job:${id}`, 'status');
    return (await pipe.exec()).every(([, s]) => s === status);
  });
}

// ---- the checks --------------------------------------------------------------------------------

async function run(page, redis) {
  // Without the page the other checks would only wait out their deadlines.
  const loaded = await check(
    'the page loads, under its CSP, with the queues and their counts',
    async () => {
      const res = await page.goto(`${BASE}/`, { waitUntil: 'load', timeout: WAIT_MS });
      expect(res.status() === 200, `GET / answered ${res.status()}`);
      const csp = res.headers()['content-security-policy'] || '';
      expect(csp.includes("script-src 'self'"), `GET / sent no script-src 'self' CSP: "${csp}"`);
      for (const q of ['echo', 'slow', 'flaky']) {
        await until(page, `queue ${q} in the table`, (name) => __cell(name, 'pending'), q);
      }
      const pending = await page.evaluate(() => __cell('echo', 'pending'));
      expect(pending === '0', `echo's pending count is "${pending}", not 0`);
      await until(
        page,
        'the live indicator',
        () => document.querySelector('#live').textContent === 'live',
      );
      await until(
        page,
        'a daemon in the daemons table',
        () => document.querySelectorAll('#workers tbody tr:not(.empty)').length > 0,
      );
      await until(
        page,
        "Redis' memory and a row per queue",
        () =>
          /^Redis 7\.\S* \(standalone\): .* used/.test(
            document.querySelector('#redis-summary').textContent,
          ) && document.querySelectorAll('#redis tbody tr:not(.empty)').length === 4,
      );
    },
  );
  if (!loaded) return;

  await check('pausing a queue from the overview', async () => {
    await confirmAction(
      page,
      '#queues tr[data-queue="echo"] td[data-col="action"] button',
      'paused: echo',
    );
    await until(page, 'echo shown paused', () => __cell('echo', 'paused') === 'paused');
  });

  await check('jobs submitted move the counts live, without a reload', async () => {
    await page.evaluate(() => {
      window.__stay = 1;
    });
    await push(redis, 'echo', { id: 'xss-1', payload: XSS });
    await push(redis, 'echo', { id: 'plain-1', payload: { n: 1 } });
    await push(redis, 'echo', { id: 'plain-2', payload: { n: 2 } });
    await until(page, 'echo pending 3', () => __cell('echo', 'pending') === '3');
    expect(await page.evaluate(() => window.__stay === 1), 'the page was reloaded');
  });

  await screenshot(page, 'overview');

  await check("a queue's pending list shows payloads as text", async () => {
    await go(page, '#/queue/echo/pending');
    await until(page, 'xss-1 in the list', () =>
      document.querySelector('#jobs tr[data-id="xss-1"]'),
    );
    const row = await text(page, '#jobs tr[data-id="xss-1"]');
    expect(row.includes(XSS.note), `the row does not show the payload's text: ${row}`);
    expect(
      await page.evaluate(() => document.querySelectorAll('#main img, #main script').length === 0),
      'an element from the payload is in the page',
    );
    expect(await page.evaluate(() => window.__pwned === undefined), 'the payload ran');
    await until(
      page,
      'the tab counts',
      () => document.querySelector('.tabs a[data-state="pending"] .tab-count').textContent === '3',
    );
  });
  await screenshot(page, 'queue');

  await check(
    'resuming from the queue page runs the jobs, and the list in view empties live',
    async () => {
      await confirmAction(page, '.head-actions button', 'resumed: echo');
      await until(
        page,
        'the list empty',
        () =>
          document.querySelector('#jobs tbody tr.empty') &&
          !document.querySelector('#jobs tr[data-id]'),
      );
      await until(
        page,
        'the pending tab at 0',
        () =>
          document.querySelector('.tabs a[data-state="pending"] .tab-count').textContent === '0',
      );
    },
  );

  await check('find a job by id from the header search', async () => {
    await page.$eval('#search-id', (n) => (n.value = ''));
    await page.type('#search-id', 'xss-1');
    await page.keyboard.press('Enter');
    await until(page, 'the job page', () => location.hash === '#/job/echo/xss-1');
    await until(
      page,
      'xss-1 succeeded',
      () => document.querySelector('#job-status')?.textContent === 'succeeded',
    );
  });

  await check('a payload holding markup shows as text on the job page', async () => {
    const result = await text(page, '#job-result');
    expect(result && result.includes(XSS.note), `the result does not show ${XSS.note}: ${result}`);
    expect(
      result.includes('<img src=x onerror='),
      `the result does not show the img text: ${result}`,
    );
    const found = await page.evaluate(() => ({
      pwned: window.__pwned,
      img: document.querySelectorAll('#main img').length,
      script: document.querySelectorAll('#main script').length,
    }));
    expect(found.pwned === undefined, 'window.__pwned is set: the payload ran');
    expect(
      found.img === 0 && found.script === 0,
      `the job view holds ${found.img} img and ${found.script} script elements`,
    );
  });
  await screenshot(page, 'job');

  await check('find: an unknown id says so, a bad id is refused', async () => {
    await go(page, '#/find');
    await page.type('#find-id', 'no-such-job');
    await page.keyboard.press('Enter');
    await until(page, 'the not-found notice', () =>
      document.querySelector('#find-none')?.textContent.includes('no-such-job'),
    );
    await page.$eval('#search-id', (n) => (n.value = ''));
    await page.type('#search-id', 'bad id!');
    await page.keyboard.press('Enter');
    await until(
      page,
      'the error bar',
      () =>
        !document.querySelector('#error').hidden &&
        document.querySelector('#error-text').textContent.includes('not a job id'),
    );
  });
  await screenshot(page, 'find');

  await check('cancelling a running job from its page ends it cancelled', async () => {
    await go(page, '#/');
    await push(redis, 'slow', { id: 'sleepy', payload: { ms: 30000 } });
    await until(page, 'slow running 1 on the overview', () => __cell('slow', 'running') === '1');
    await go(page, '#/job/slow/sleepy');
    await until(
      page,
      'sleepy active',
      () => document.querySelector('#job-status')?.textContent === 'active',
    );
    await confirmAction(
      page,
      '#main .head-actions button.danger',
      'requested: the daemon stops it within a second',
    );
    await until(
      page,
      'sleepy cancelled',
      () => document.querySelector('#job-status')?.textContent === 'cancelled',
    );
    const buttons = await page.$$eval('#main .head-actions button', (b) => b.length);
    expect(buttons === 0, 'a cancelled job still offers an action');
    await go(page, '#/');
    await until(page, 'slow running 0 on the overview', () => __cell('slow', 'running') === '0');
  });

  await check(
    "a waiting job's flow: its dependencies' states, each a link to its page, the rest behind " +
      '+N more; the dependency shows what waits on it, and its failure shows there',
    async () => {
      await go(page, '#/');
      await push(redis, 'slow', { id: 'flow-dep', payload: { ms: 30000 } });
      await until(page, 'slow running 1 on the overview', () => __cell('slow', 'running') === '1');
      // 26 dependencies: the one running, and 25 nobody submitted (not seen yet).
      const ghosts = Array.from({ length: 25 }, (_, i) => `flow-ghost-${i}`);
      await push(redis, 'echo', {
        id: 'flow-wait',
        payload: {},
        after: ['slow/flow-dep', ...ghosts],
      });
      await waitFor(
        'flow-wait waiting',
        async () => (await statusOf(redis, 'echo', 'flow-wait')) === 'waiting',
      );
      await go(page, '#/job/echo/flow-wait');
      await until(
        page,
        'flow-dep active in the flow',
        () =>
          document.querySelector('#flow-after li[data-ref="slow/flow-dep"]')?.dataset.status ===
          'active',
      );
      const seen = await page.evaluate(() => {
        const dep = document.querySelector('#flow-after li[data-ref="slow/flow-dep"]');
        return {
          shown: document.querySelectorAll('#flow-after .flow-node').length,
          more: document.querySelector('#flow-after .flow-more')?.textContent,
          badge: dep.querySelector('.badge').textContent,
          colour: getComputedStyle(dep.querySelector('.badge')).backgroundColor,
          // The colour a running job has elsewhere in the dashboard (a badge of the page's own).
          running: (() => {
            const probe = document.body.appendChild(statusBadge('running'));
            const colour = getComputedStyle(probe).backgroundColor;
            probe.remove();
            return colour;
          })(),
          href: dep.querySelector('a').getAttribute('href'),
          ghost: document.querySelector('#flow-after li[data-ref="echo/flow-ghost-0"]')
            ?.textContent,
          summary: document.querySelector('#flow-after .flow-summary')?.textContent,
          dependents: document.querySelector('#flow-dependents')?.textContent,
          after: document.querySelector('#job-fields [data-field="after"]')?.textContent,
        };
      });
      expect(seen.shown === 20, `${seen.shown} dependencies shown before +N more, not 20`);
      expect(seen.more === '+6 more', `the rest: "${seen.more}"`);
      expect(seen.badge === 'active', `flow-dep's badge says "${seen.badge}"`);
      expect(
        seen.colour === seen.running,
        `its badge's colour ${seen.colour}, not ${seen.running}`,
      );
      expect(seen.href === '#/job/slow/flow-dep', `its link: ${seen.href}`);
      expect(seen.ghost && seen.ghost.includes('not seen yet'), `a ghost: ${seen.ghost}`);
      expect(seen.summary === '1 active · 25 not seen yet', `the summary: ${seen.summary}`);
      expect(seen.dependents.includes('Nothing waits on it'), `dependents: ${seen.dependents}`);
      // Its details name the first 10 it waits for, and leave the rest to the Flow card.
      expect(
        seen.after.startsWith('slow/flow-dep echo/flow-ghost-0 ') &&
          seen.after.endsWith('echo/flow-ghost-8 +16 more (in Flow, below)'),
        `its After field: ${seen.after}`,
      );
      await page.click('#flow-after .flow-more');
      await until(
        page,
        'all 26 shown',
        () =>
          document.querySelectorAll('#flow-after .flow-node').length === 26 &&
          !document.querySelector('#flow-after .flow-more'),
      );
      await noSideScroll(page, NARROW);
      await page.setViewport({ width: WIDE, height: 900 });
      await screenshot(page, 'job-flow');

      // Its link: the dependency's page, whose flow shows the job waiting on it.
      await page.click('#flow-after li[data-ref="slow/flow-dep"] a');
      await until(page, "flow-dep's page", () => location.hash === '#/job/slow/flow-dep');
      await until(
        page,
        'flow-dep active, flow-wait waiting on it',
        () =>
          document.querySelector('#job-status')?.textContent === 'active' &&
          document.querySelector('#flow-dependents li[data-ref="echo/flow-wait"]')?.dataset
            .status === 'waiting',
      );
      // Cancelled, it ends what waits on it failed (the policy's default), and says why there.
      await confirmAction(
        page,
        '#main .head-actions button.danger',
        'requested: the daemon stops it within a second',
      );
      await until(
        page,
        'flow-dep cancelled',
        () => document.querySelector('#job-status')?.textContent === 'cancelled',
      );
      await go(page, '#/job/echo/flow-wait');
      await until(
        page,
        'flow-wait failed, flow-dep cancelled in its flow',
        () =>
          document.querySelector('#job-status')?.textContent === 'failed' &&
          document.querySelector('#flow-after li[data-ref="slow/flow-dep"]')?.dataset.status ===
            'cancelled',
      );
      const ended = await page.evaluate(() => {
        const dep = document.querySelector('#flow-after li[data-ref="slow/flow-dep"]');
        return {
          error: dep.querySelector('.flow-error')?.textContent,
          times: dep.querySelector('.flow-times')?.textContent,
        };
      });
      expect(ended.error && ended.error.includes('cancel'), `flow-dep's error: ${ended.error}`);
      expect(/^submitted .+ ago, .*finished .+ ago$/.test(ended.times), `times: ${ended.times}`);
      await go(page, '#/');
      await until(page, 'slow running 0 on the overview', () => __cell('slow', 'running') === '0');
    },
  );

  await check("a finished job's retained payload shows on its page as text, cut", async () => {
    const note = '<img src=x onerror=window.__pwned=3>' + 'w'.repeat(5000);
    await push(redis, 'slow', { id: 'kept-1', payload: { ms: 1, note } });
    await go(page, '#/job/slow/kept-1');
    await until(
      page,
      'kept-1 succeeded, its payload shown',
      () =>
        document.querySelector('#job-status')?.textContent === 'succeeded' &&
        document.querySelector('#job-payload'),
    );
    const shown = await page.evaluate(() => ({
      text: document.querySelector('#job-payload').textContent,
      title: document.querySelector('#job-payload').parentElement.querySelector('h2').textContent,
      img: document.querySelectorAll('#main img').length,
      pwned: window.__pwned,
    }));
    expect(
      shown.text.startsWith('{"ms":1,"note":"<img src=x onerror=window.__pwned=3>www'),
      `the payload shown: ${shown.text.slice(0, 80)}`,
    );
    expect(
      shown.text.length === 4099 && shown.text.endsWith('w...'),
      `its length: ${shown.text.length}, its end: ${shown.text.slice(-10)}`,
    );
    expect(shown.title === 'Payload (its first 4 KiB)', `its title: ${shown.title}`);
    expect(shown.img === 0 && shown.pwned === undefined, 'the payload became markup');
    await screenshot(page, 'job-payload');
  });

  await check(
    'dead jobs are listed, and retried from the list and from the job page they succeed',
    async () => {
      fs.writeFileSync(FAIL_MARKER, 'fail\n');
      await push(redis, 'flaky', { id: 'flaky-1', payload: {} });
      await push(redis, 'flaky', { id: 'flaky-2', payload: {} });
      await go(page, '#/queue/flaky/dead');
      await until(
        page,
        'two dead jobs listed',
        () => document.querySelectorAll('#jobs tr[data-id^="flaky-"]').length === 2,
      );
      fs.rmSync(FAIL_MARKER);
      await screenshot(page, 'dead');
      await confirmAction(page, '#jobs tr[data-id="flaky-1"] button', 'retried 1 job');
      await until(
        page,
        'flaky-1 off the dead list',
        () => !document.querySelector('#jobs tr[data-id="flaky-1"]'),
      );
      await go(page, '#/job/flaky/flaky-1');
      await until(
        page,
        'flaky-1 succeeded',
        () => document.querySelector('#job-status')?.textContent === 'succeeded',
      );
      await go(page, '#/job/flaky/flaky-2');
      await until(
        page,
        'flaky-2 failed',
        () => document.querySelector('#job-status')?.textContent === 'failed',
      );
      await confirmAction(page, '#main .head-actions button', 'retried 1 job');
      await until(
        page,
        'flaky-2 succeeded',
        () => document.querySelector('#job-status')?.textContent === 'succeeded',
      );
    },
  );

  await check(
    "a failed step's page retries it with what failed because of it: they run, its flow shows it",
    async () => {
      // echo/rw-d waits for flaky/rw-x, which fails while the marker is there: rw-d fails
      // because of it, and both are kept with their queues' dead jobs.
      fs.writeFileSync(FAIL_MARKER, 'fail\n');
      await push(redis, 'echo', { id: 'rw-d', payload: { n: 1 }, after: ['flaky/rw-x'] });
      await waitFor(
        'rw-d waiting',
        async () => (await statusOf(redis, 'echo', 'rw-d')) === 'waiting',
      );
      await push(redis, 'flaky', { id: 'rw-x', payload: {} });
      await waitFor(
        'rw-x and rw-d failed',
        async () =>
          (await statusOf(redis, 'flaky', 'rw-x')) === 'failed' &&
          (await statusOf(redis, 'echo', 'rw-d')) === 'failed',
      );
      fs.rmSync(FAIL_MARKER);
      await go(page, '#/job/flaky/rw-x');
      await until(
        page,
        'rw-x failed, rw-d failed in its flow',
        () =>
          document.querySelector('#job-status')?.textContent === 'failed' &&
          document.querySelector('#flow-dependents li[data-ref="echo/rw-d"]')?.dataset.status ===
            'failed',
      );
      const offered = await page.$$eval('#main .head-actions button', (b) =>
        b.map((x) => x.textContent),
      );
      expect(
        offered.join() === 'Retry,Retry with what failed because of it',
        `the actions offered: ${offered.join() || '(none)'}`,
      );
      await noSideScroll(page, NARROW);
      await screenshot(page, `job-failed-flow-${NARROW}`);
      await page.setViewport({ width: WIDE, height: 900 });
      await screenshot(page, 'job-failed-flow');
      await confirmAction(
        page,
        '#main .head-actions button.retry-flow',
        'retried 2 jobs: flaky/rw-x, echo/rw-d',
      );
      // The page follows: the job runs; its flow no longer shows rw-d failed (once rw-x is
      // final the note of what waits on it is gone: the Flow card goes with it).
      await until(
        page,
        'rw-x succeeded, rw-d no longer failed in its flow',
        () =>
          document.querySelector('#job-status')?.textContent === 'succeeded' &&
          !document.querySelector(
            '#flow-dependents li[data-ref="echo/rw-d"][data-status="failed"]',
          ),
      );
      const buttons = await page.$$eval('#main .head-actions button', (b) => b.length);
      expect(buttons === 0, 'a succeeded job still offers an action');
      // rw-d ran after it: its page, and its flow, say so.
      await go(page, '#/job/echo/rw-d');
      await until(
        page,
        'rw-d succeeded, rw-x succeeded in its flow',
        () =>
          document.querySelector('#job-status')?.textContent === 'succeeded' &&
          document.querySelector('#flow-after li[data-ref="flaky/rw-x"]')?.dataset.status ===
            'succeeded',
      );
      const d = await statusOf(redis, 'echo', 'rw-d');
      expect(d === 'succeeded', `rw-d is ${d}`);
      await screenshot(page, 'job-retried-flow');
    },
  );

  await check('search finds a job by a word in its payload', async () => {
    await go(page, '#/queue/echo/pending');
    await until(page, 'echo active', () => document.querySelector('.head-actions button'));
    await confirmAction(page, '.head-actions button', 'paused: echo');
    await push(redis, 'echo', { id: 'needle-1', payload: { note: 'a Quokkafish in the hay' } });
    await push(redis, 'echo', { id: 'hay-1', payload: { note: 'only hay' } });
    await until(
      page,
      'echo pending 2',
      () => document.querySelector('.tabs a[data-state="pending"] .tab-count').textContent === '2',
    );
    await until(page, 'needle-1 in the list', () =>
      document.querySelector('#jobs tr[data-id="needle-1"]'),
    );
    await page.$eval('#content-q', (n) => (n.value = ''));
    await page.type('#content-q', 'qUOKKAFISH');
    await page.keyboard.press('Enter');
    await until(page, 'the search done', () =>
      document.querySelector('#content-progress').textContent.startsWith('Searched all'),
    );
    const found = await page.evaluate(() => ({
      rows: [...document.querySelectorAll('#content-results tbody tr')].map((tr) => tr.dataset.id),
      mark: document.querySelector('#content-results tr[data-id="needle-1"] mark')?.textContent,
      href: document
        .querySelector('#content-results tr[data-id="needle-1"] a')
        ?.getAttribute('href'),
      where: document.querySelector('#content-results tr[data-id="needle-1"] td:nth-child(2)')
        ?.textContent,
      hash: location.hash,
    }));
    expect(found.rows.join() === 'needle-1', `found rows: ${found.rows.join() || '(none)'}`);
    expect(found.mark === 'Quokkafish', `the match marked: ${found.mark}`);
    expect(found.href === '#/job/echo/needle-1', `the row links to ${found.href}`);
    expect(found.where === 'pending', `where: ${found.where}`);
    expect(found.hash === '#/search/echo/qUOKKAFISH', `the address: ${found.hash}`);
    await screenshot(page, 'search');
    // The address opens the same search; a word in no job finds nothing.
    await go(page, '#/search/echo/nosuchwordhere');
    await until(page, 'the empty search done', () =>
      document.querySelector('#content-progress')?.textContent.includes('nothing found'),
    );
    await confirmAction(page, '.head-actions button', 'resumed: echo');
    await until(
      page,
      'the pending tab at 0',
      () => document.querySelector('.tabs a[data-state="pending"] .tab-count').textContent === '0',
    );
  });

  await check(
    'status tabs list the jobs retained by status, newest first, More, by keyboard',
    async () => {
      // 1,500 more ends in echo: a step of the status scan answers 100 found at most, so that the
      // first batch leaves more for More.
      const names = Array.from({ length: 1500 }, (_, i) => `done-${i}`);
      await pushAll(redis, 'echo', names, { batch: 1 }, 'succeeded');
      await go(page, '#/queue/echo/pending');
      await page.focus('.tabs a[data-state="succeeded"]');
      await page.keyboard.press('Enter');
      await until(page, 'the succeeded tab', () => location.hash === '#/queue/echo/succeeded');
      await until(
        page,
        'a first batch, and More',
        () =>
          document.querySelectorAll('#jobs tbody tr[data-id]').length >= 50 &&
          !document.querySelector('#jobs-more').hidden,
      );
      const first = await page.$$eval('#jobs tbody tr[data-id]', (r) => r.length);
      const head = await page.$$eval('#jobs th', (t) => t.map((n) => n.textContent).join());
      expect(head === 'Job,Result,Ended at', `the columns: ${head}`);
      await page.focus('#jobs-more');
      await page.keyboard.press('Enter');
      await until(
        page,
        'more rows',
        (n) =>
          document.querySelectorAll('#jobs tbody tr[data-id]').length > n &&
          document.querySelector('#jobs-stop').hidden,
        first,
      );
      const times = await rowTimes(page);
      expect(
        times.every((t, i) => t > 0 && (i === 0 || times[i - 1] >= t)),
        'not newest first',
      );
      const row = await text(page, '#jobs tbody tr[data-id^="done-"]');
      expect(row && row.includes('"batch":1'), `a row shows no result: ${row}`);
      await screenshot(page, 'succeeded');
      await go(page, '#/queue/flaky/retrying');
      await until(page, 'no retrying job', () =>
        document.querySelector('#jobs tbody tr.empty')?.textContent.includes('No retrying job'),
      );
    },
  );

  await check(
    'cancel every job a search matches, waiting and running: confirmed with the count',
    async () => {
      await push(redis, 'slow', { id: 'zebrafinch-run', payload: { ms: 120000 } });
      await waitFor(
        'zebrafinch-run active',
        async () => (await statusOf(redis, 'slow', 'zebrafinch-run')) === 'active',
      );
      for (const id of ['zebrafinch-1', 'zebrafinch-2'])
        await redis.zadd(
          'jobq:{slow}:delayed',
          99999999999999,
          JSON.stringify({ id, payload: {} }),
        );
      await go(page, '#/queue/slow/pending');
      await page.$eval('#content-q', (n) => (n.value = ''));
      await page.type('#content-q', 'zebrafinch');
      await page.keyboard.press('Enter');
      await until(page, 'the search done', () =>
        document.querySelector('#content-progress').textContent.startsWith('Searched all'),
      );
      await confirmBulk(
        page,
        '#content-search [data-bulk="cancel"]',
        '3 jobs',
        'cancelled 3 of 3 jobs (2 taken out while waiting, 1 stopped while running)',
      );
      for (const id of ['zebrafinch-run', 'zebrafinch-1', 'zebrafinch-2'])
        await waitFor(
          `${id} cancelled`,
          async () => (await statusOf(redis, 'slow', id)) === 'cancelled',
        );
      // Listed as cancelled, with why (sleepy and flow-dep too, cancelled before).
      await go(page, '#/queue/slow/cancelled');
      await until(
        page,
        'the cancelled tab',
        () =>
          document.querySelector('#jobs-summary').textContent.includes('(all kept)') &&
          document.querySelectorAll('#jobs tbody tr[data-id]').length === 5,
      );
      const row = await text(page, '#jobs tbody tr[data-id="zebrafinch-1"]');
      expect(row.includes('cancelled from the dashboard while waiting in delayed'), `row: ${row}`);
      const cancel = await page.$$eval('#status-list [data-bulk]', (b) => b.length);
      expect(cancel === 0, 'the cancelled tab offers a bulk action');
    },
  );

  await check(
    'retry every dead job a search matches; purge the failed ones from their tab',
    async () => {
      fs.writeFileSync(FAIL_MARKER, 'fail\n');
      await pushAll(redis, 'flaky', ['kiwi-1', 'kiwi-2'], { note: 'Kiwiberry' }, 'failed');
      await pushAll(redis, 'flaky', ['gone-1', 'gone-2'], { note: 'other' }, 'failed');
      fs.rmSync(FAIL_MARKER);
      await go(page, '#/search/flaky/kiwiberry');
      await until(page, 'the search done', () =>
        document.querySelector('#content-progress')?.textContent.startsWith('Searched all'),
      );
      await confirmBulk(
        page,
        '#content-search [data-bulk="retry"]',
        '2 dead jobs',
        'retried 2 of 2 jobs',
      );
      for (const id of ['kiwi-1', 'kiwi-2'])
        await waitFor(
          `${id} succeeded`,
          async () => (await statusOf(redis, 'flaky', id)) === 'succeeded',
        );
      await go(page, '#/queue/flaky/failed');
      await until(
        page,
        'the two failed listed',
        () => document.querySelectorAll('#jobs tbody tr[data-id^="gone-"]').length === 2,
      );
      const row = await text(page, '#jobs tbody tr[data-id="gone-1"]');
      expect(row.includes('exit'), `gone-1 shows no error: ${row}`);
      await screenshot(page, 'failed');
      await confirmBulk(
        page,
        '#status-list [data-bulk="purge"]',
        '2 dead jobs',
        'purged 2 of 2 jobs',
      );
      await until(page, 'the tab empty', () =>
        document.querySelector('#jobs tbody tr.empty')?.textContent.includes('No failed job'),
      );
      expect((await redis.zcard('jobq:{flaky}:dead')) === 0, 'dead jobs left in Redis');
    },
  );

  await check("a spool job's page names its file (as text), not its content", async () => {
    const name = 'Q3 <img src=x onerror=window.__pwned=1>.txt';
    const dir = path.join(path.dirname(FAIL_MARKER), 'spool');
    fs.writeFileSync(path.join(dir, name), 'the secret content\n');
    await go(page, '#/queue/files/succeeded');
    await until(page, 'the file done', () => {
      if (document.querySelector('#jobs tbody tr[data-id]')) return true;
      // Not found yet: looked for again.
      if (document.querySelector('#jobs-stop').hidden)
        document.querySelector('#jobs-reload').click();
      return false;
    });
    await page.click('#jobs tbody tr[data-id] a');
    await until(page, 'the file named', () =>
      document.querySelector('#job-fields [data-field="file"]'),
    );
    const shown = await page.evaluate(() => ({
      name: document.querySelector('[data-field="file"] .file-name')?.textContent,
      path: document.querySelector('[data-field="file"] .file-path')?.textContent,
      page: document.querySelector('#main').textContent,
      img: document.querySelectorAll('#main img').length,
    }));
    expect(shown.name === name, `the name shown: ${shown.name}`);
    expect(shown.path === path.join(dir, name), `the path shown: ${shown.path}`);
    expect(!shown.page.includes('the secret content'), "the file's content is shown");
    expect(shown.img === 0, 'an element from the file name is in the page');
    await screenshot(page, 'spool-job');
  });

  await check("a queue's limits in the queues table, with the tokens left", async () => {
    await go(page, '#/');
    // The bucket's tokens as the API read them (refilled at 100/s: any count up to 100).
    await until(page, "files' limits", () =>
      /^100\/s \((\d+) left\) · 50 at once$/.test(__cell('files', 'rate')),
    );
    const [api] = await page.evaluate(() =>
      fetch('/api/queues').then((r) => r.json()).then((l) => l.filter((q) => q.name === 'files')),
    );
    expect(
      Number.isInteger(api?.rate_tokens) && api.rate_tokens >= 0 && api.rate_tokens <= 100,
      `files' row: ${JSON.stringify(api)}`,
    );
    const none = await page.evaluate(() => __cell('echo', 'rate'));
    expect(none === '–', `echo, without a rate, shows "${none}"`);
    const ordered = await page.evaluate(() => __cell('flaky', 'rate'));
    expect(ordered === 'strict priorities · weight 3',
           `flaky, with priorities and a weight, shows "${ordered}"`);
    // A group_by queue's row with groups held back (the API's shape, tests/integration/
    // test_api.cpp): the first three named, the rest counted, every one on hover.
    const held = await page.evaluate(() => {
      const row = {
        name: 'tenants',
        group_by: 'payload.tenant',
        weight: 1,
        groups_held_back: [
          { group: 'acme', waiting: 4 },
          { group: 'globex', waiting: 2 },
          { group: 'initech', waiting: 1 },
          { group: 'umbrella', waiting: 1 },
        ],
      };
      return {
        text: limits(row),
        all: heldBack(row, true),
        none: limits({ ...row, groups_held_back: [] }),
      };
    });
    expect(
      held.text === 'per payload.tenant · held back: acme 4, globex 2, initech 1 +1 more',
      `a group_by queue with groups held back shows "${held.text}"`,
    );
    expect(held.all.endsWith('initech 1, umbrella 1'), `on hover: "${held.all}"`);
    expect(held.none === 'per payload.tenant', `none held back shows "${held.none}"`);
  });

  const shown = await check(
    'the schedules view, from the header by keyboard, lists a config schedule and its next run',
    async () => {
      await page.focus('.nav a[data-nav="schedules"]');
      await page.keyboard.press('Enter');
      await until(page, 'the schedules view', () => location.hash === '#/schedules');
      await until(page, 'nightly listed', () =>
        document.querySelector('#schedules tr[data-schedule="nightly"]'),
      );
      const [api] = await page.evaluate(() => fetch('/api/schedules').then((r) => r.json()));
      expect(
        api && api.name === 'nightly' && api.next > Date.now(),
        `the API: ${JSON.stringify(api)}`,
      );
      const row = await scheduleRow(page, 'nightly');
      const when = await page.evaluate(
        (ms) =>
          new Intl.DateTimeFormat(undefined, {
            month: 'short',
            day: 'numeric',
            hour: '2-digit',
            minute: '2-digit',
            second: '2-digit',
          }).format(new Date(ms)),
        api.next,
      );
      expect(row.queue === 'echo' && row.cron === '0 3 * * *', `the row: ${JSON.stringify(row)}`);
      expect(row.timezone === 'Europe/Berlin' && row.origin === 'config', `the row: ${row.origin}`);
      // The local time, and how long until it.
      expect(
        row.next.startsWith(when) && /in (\d+[dhm] )?\d+[hms]$/.test(row.next),
        `next run "${row.next}", not ${when} in ...`,
      );
      expect(row.nextAt === new Date(api.next).toISOString(), `next at ${row.nextAt}`);
      expect(row.last === 'never' && row.outcome === '–', `last run: ${row.last} ${row.outcome}`);
      expect(row.paused === 'active', `state: ${row.paused}`);
    },
  );

  if (shown)
    await check(
      "a runtime schedule's last run and outcome after it fired, its payload as text; paused " +
        'from the page',
      async () => {
        const payload = JSON.stringify(XSS);
        const add = ['schedule', 'add', 'tick', '--cron', '@every 1s', '-q', 'echo'];
        jobqctl([...add, '--payload', payload]);
        // The daemons read the index every 2 s; a tick's job end reads the list again.
        await until(page, "tick's outcome", () =>
          document
            .querySelector('#schedules tr[data-schedule="tick"] td[data-col="outcome"] a')
            ?.textContent.includes('succeeded'),
        );
        const row = await scheduleRow(page, 'tick');
        expect(row.origin === 'runtime', `from: ${row.origin}`);
        expect(/^tick:\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/.test(row.lastId), `the link: ${row.href}`);
        expect(row.href === `#/job/echo/${encodeURIComponent(row.lastId)}`, `href ${row.href}`);
        expect(/\d+s ago$/.test(row.last), `last run: ${row.last}`);
        // Shown as its JSON, cut to a line; the whole of it in the cell's title.
        expect(row.job.includes('<img src=x onerror='), `the job: ${row.job}`);
        const whole = JSON.parse(row.jobTitle || 'null');
        expect(
          whole && whole.payload.html === XSS.html && whole.payload.note === XSS.note,
          `the job's title: ${row.jobTitle}`,
        );
        const found = await page.evaluate(() => ({
          pwned: window.__pwned,
          img: document.querySelectorAll('#main img, #main script').length,
        }));
        expect(
          found.pwned === undefined && found.img === 0,
          `the payload ran: ${JSON.stringify(found)}`,
        );

        await confirmAction(
          page,
          '#schedules tr[data-schedule="tick"] td[data-col="action"] button',
          'paused: schedule tick of echo',
        );
        await waitFor('jobqctl says tick paused', () =>
          JSON.parse(jobqctl(['schedules', '--json'])).some((x) => x.name === 'tick' && x.paused),
        );
        await until(page, 'tick shown paused', () =>
          document
            .querySelector('#schedules tr[data-schedule="tick"] td[data-col="paused"]')
            .textContent.includes('paused'),
        );
        const label = await text(
          page,
          '#schedules tr[data-schedule="tick"] td[data-col="action"] button',
        );
        expect(label === 'Resume', `the button says ${label}`);
        await screenshot(page, 'schedules');
      },
    );

  await check('the chart shows what ran', async () => {
    // The daemon writes a minute's counts when the minute is over (or at its stop): the last
    // minute's are added here, as a daemon would have (history.lua's fields).
    const minute = Math.floor(Date.now() / 60000) - 1;
    const key = 'jobq:{flaky}:history:minutes';
    await redis.hincrby(key, `${minute}:s`, 6);
    await redis.hincrby(key, `${minute}:f`, 2);
    await redis.hincrby(key, `${minute}:n`, 8);
    await redis.hincrby(key, `${minute}:t`, 800);
    await go(page, '#/queue/flaky/pending');
    await until(
      page,
      'the chart drawn',
      () => document.querySelectorAll('#chart svg .chart-point').length === 60,
    );
    // The chart against the API's answer read after it, minute by minute (but the current one):
    // drawn again and compared anew while a minute's end moved the two apart.
    const compare = async () => {
      const answer = await page.evaluate(() =>
        fetch('/api/queues/flaky/history?range=hour').then((r) => r.json()),
      );
      const drawn = await page.evaluate(() =>
        [...document.querySelectorAll('#chart svg .chart-point')].map((g) => ({
          t: Number(g.dataset.t),
          ok: Number(g.dataset.succeeded),
          bad: Number(g.dataset.failed),
          okH: Number(g.querySelector('.chart-ok')?.getAttribute('height') || 0),
          badH: Number(g.querySelector('.chart-fail')?.getAttribute('height') || 0),
        })),
      );
      const injected = answer.points.find((p) => p.t === minute * 60000);
      if (!injected || injected.succeeded < 6 || injected.failed < 2)
        return `the API's minute ${minute}: ${JSON.stringify(injected)}`;
      const now = drawn[drawn.length - 1].t;
      let compared = 0;
      for (const p of answer.points.filter((q) => q.t < now)) {
        const d = drawn.find((q) => q.t === p.t);
        if (!d) return `no point drawn at ${p.t}`;
        if (d.ok !== p.succeeded || d.bad !== p.failed)
          return `at ${p.t} drawn ${d.ok}/${d.bad}, the API ${p.succeeded}/${p.failed}`;
        if ((d.okH > 0) !== (p.succeeded > 0) || (d.badH > 0) !== (p.failed > 0))
          return `the bars at ${p.t}: ${JSON.stringify(d)}`;
        compared++;
      }
      const at = drawn.find((d) => d.t === minute * 60000);
      if (!at || !(at.okH > at.badH && at.badH > 0))
        return `the bars of 6+ succeeded and 2+ failed: ${JSON.stringify(at)}`;
      return compared >= 58 ? '' : `only ${compared} points compared`;
    };
    const deadline = Date.now() + WAIT_MS;
    for (let why = await compare(); why; why = await compare()) {
      expect(Date.now() < deadline, why);
      await page.click('#activity button[data-range="hour"]');
      await new Promise((r) => setTimeout(r, 500));
    }
    const axis = await page.$$eval('#chart svg .chart-axis text', (t) =>
      t.map((n) => n.textContent),
    );
    expect(axis.length >= 7 && axis.some((a) => /\d:\d\d/.test(a)), `axis labels: ${axis}`);
    const summary = await text(page, '#chart-summary');
    expect(/average run time \d+ ms/.test(summary), `the summary: ${summary}`);
    const chart = await page.$('#activity');
    await chart.screenshot({ path: path.join(OUT_DIR, 'chart.png') });
    await page.click('#activity button[data-range="day"]');
    await until(
      page,
      'the day chart',
      () =>
        document.querySelector('#chart').dataset.range === 'day' &&
        document.querySelectorAll('#chart svg .chart-point').length === 144,
    );
    await page.emulateMediaFeatures([{ name: 'prefers-color-scheme', value: 'dark' }]);
    await chart.screenshot({ path: path.join(OUT_DIR, 'chart-dark.png') });
    await page.emulateMediaFeatures([{ name: 'prefers-color-scheme', value: 'light' }]);
  });

  await check(`no sideways page scroll at ${NARROW} and ${WIDE} px`, async () => {
    const pages = [
      ['overview', '#/'],
      ['queue', '#/queue/echo/pending'],
      ['search', '#/search/echo/quokkafish'],
      ['status', '#/queue/echo/succeeded'],
      ['job', '#/job/echo/xss-1'],
      ['find', '#/find/no-such-job'],
      ['schedules', '#/schedules'],
    ];
    for (const [name, hash] of pages) {
      await go(page, hash);
      await until(
        page,
        `${name} drawn`,
        () =>
          !document.querySelector('#main').textContent.includes('Loading…') &&
          !document.querySelector('#main').textContent.includes('Looking…'),
      );
      await noSideScroll(page, WIDE);
      await noSideScroll(page, NARROW);
      await screenshot(page, `${name}-${NARROW}`);
    }
    await page.setViewport({ width: WIDE, height: 900 });
  });

  await check('dark mode', async () => {
    await page.emulateMediaFeatures([{ name: 'prefers-color-scheme', value: 'dark' }]);
    await go(page, '#/');
    const bg = await page.evaluate(() => getComputedStyle(document.body).backgroundColor);
    expect(bg !== 'rgb(244, 246, 249)', `the background stays light: ${bg}`);
    await screenshot(page, 'overview-dark');
    await go(page, '#/schedules');
    await until(page, 'the schedules', () =>
      document.querySelector('#schedules tr[data-schedule]'),
    );
    await screenshot(page, 'schedules-dark');
    await page.emulateMediaFeatures([{ name: 'prefers-color-scheme', value: 'light' }]);
  });

  await check(
    'a page left open: bounded heap and DOM through 5,000 job ends and refreshes',
    async () => {
      await go(page, '#/');
      await until(page, 'the overview', () => __cell('echo', 'pending') !== null);
      const cdp = await page.createCDPSession();
      // At rest: the log of job ends is drawn 250 ms after the last end, and the DOM nodes a
      // redraw let go of are counted until a collection has swept them (a busy machine showed one
      // redraw's 135 more in a reading): collected until two readings agree.
      const measure = async () => {
        await new Promise((r) => setTimeout(r, 400));
        let last = null;
        for (let i = 0; i < 10; i++) {
          await cdp.send('HeapProfiler.collectGarbage');
          await page.evaluate(() => window.gc && window.gc());
          const m = await page.metrics();
          const now = { heap: m.JSHeapUsedSize, nodes: m.Nodes, listeners: m.JSEventListeners };
          if (last && last.nodes === now.nodes && Math.abs(last.heap - now.heap) < 4096) return now;
          last = now;
          await new Promise((r) => setTimeout(r, 100));
        }
        return last;
      };
      let sent = 0;
      const start = await page.evaluate(() => window.__jobEvents);
      // `n` job ends published as a daemon publishes them, 200 at a time (the feed keeps 256 for a
      // listener behind), each batch waited for in the page; and as many refreshes of the
      // overview's queues (a queue coming and going among them).
      const feed = async (n) => {
        for (let done = 0; done < n; done += 200) {
          const pipe = redis.pipeline();
          for (let i = 0; i < 200; i++, sent++)
            pipe.publish(
              'jobq:{echo}:events',
              JSON.stringify({ id: `mem-${sent}`, queue: 'echo', status: 'succeeded' }),
            );
          await pipe.exec();
          await until(
            page,
            `${sent} job ends in the page`,
            (want) => window.__jobEvents >= want,
            start + sent,
          );
          await page.evaluate(() => {
            const base = S.queues;
            for (let i = 0; i < 200; i++) {
              const list = base.map((q) => ({ ...q, pending: i }));
              if (i % 2) list.push({ ...base[0], name: `mem-${i % 7}` });
              setQueues(list);
            }
            setQueues(base);
          });
        }
      };
      await feed(1000);
      const at1k = await measure();
      await feed(4000);
      const at5k = await measure();
      const ends = (await page.evaluate(() => window.__jobEvents)) - start;
      const mb = (b) => (b / 1048576).toFixed(2);
      const grew = at5k.heap - at1k.heap;
      console.log(
        `# memory: after 1,000 job ends ${mb(at1k.heap)} MB heap, ${at1k.nodes} nodes, ` +
          `${at1k.listeners} listeners; after 5,000 ${mb(at5k.heap)} MB, ${at5k.nodes} nodes, ` +
          `${at5k.listeners} listeners (${ends} ends seen; the heap grew ${grew} bytes)`,
      );
      expect(ends === 5000, `${ends} job ends reached the page, not 5000`);
      // After a forced GC the heap moves by some hundreds of bytes here; keeping the 4,000 ends
      // (one object each) would add some 250 KB.
      expect(grew < 128 * 1024, `the heap grew ${grew} bytes from 1,000 to 5,000 job ends`);
      expect(at5k.nodes <= at1k.nodes + 100, `DOM nodes ${at1k.nodes} -> ${at5k.nodes}`);
      expect(
        at5k.listeners <= at1k.listeners + 50,
        `listeners ${at1k.listeners} -> ${at5k.listeners}`,
      );
      const shown = await page.$$eval('.recent li', (l) => l.length);
      expect(shown === 15, `${shown} recent job ends listed, not 15`);
      await cdp.detach();
    },
  );

  await check('no script error and no CSP violation', async () => {
    expect(problems.length === 0, problems.slice(0, 3).join(' | '));
  });
}

// ---- the checks of a jobqd with a token, read-only --------------------------------------------

async function runSignedIn(page, redis) {
  const asked = await check('the page asks for the token', async () => {
    await page.goto(`${BASE}/#/queue/echo/pending`, { waitUntil: 'load', timeout: WAIT_MS });
    await until(page, 'the sign-in form', () => document.querySelector('#login #token'));
  });
  if (!asked) return;
  await screenshot(page, 'login');

  await check('a wrong token is refused, the right one signs in where the page was', async () => {
    await page.type('#token', 'not-the-token');
    await page.keyboard.press('Enter');
    await until(page, 'the error bar', () => !document.querySelector('#error').hidden);
    // One attempt per 250 ms is allowed (429 past it): submitted until an answer lets it in.
    await page.$eval('#token', (n) => (n.value = ''));
    await page.type('#token', TOKEN);
    const deadline = Date.now() + WAIT_MS;
    for (;;) {
      await page.evaluate(() => {
        document.querySelector('#error-text').textContent = '';
        document.querySelector('#login button[type="submit"]').click();
      });
      const said = await until(page, 'an answer to the sign-in', () =>
        !document.querySelector('#login')
          ? 'in'
          : document.querySelector('#error-text').textContent,
      );
      if (said === 'in') break;
      expect(Date.now() < deadline, `not signed in: ${said}`);
    }
    await until(page, 'the queue page', () => document.querySelector('#jobs tbody tr'));
    expect(
      (await page.evaluate(() => location.hash)) === '#/queue/echo/pending',
      'not back at the page',
    );
  });

  await check('read-only: said, and no action offered', async () => {
    await go(page, '#/');
    await until(page, 'the queues', () => __cell('echo', 'pending') !== null);
    const seen = await page.evaluate(() => ({
      badge: !document.querySelector('#read-only').hidden,
      text: document.querySelector('#read-only').textContent,
      actions: [...document.querySelectorAll('#main button')].filter((b) => b.offsetParent).length,
    }));
    expect(seen.badge && seen.text === 'read-only', 'no read-only badge');
    expect(seen.actions === 0, `${seen.actions} action buttons shown`);
    await screenshot(page, 'read-only');
    await go(page, '#/schedules');
    await until(page, 'the schedules', () =>
      document.querySelector('#schedules tr[data-schedule="nightly"]'),
    );
    const buttons = await page.$$eval(
      '#main button',
      (b) => b.filter((x) => x.offsetParent).length,
    );
    expect(buttons === 0, `${buttons} action buttons shown on the schedules view`);
  });

  await check("read-only: a failed job's page offers no retry", async () => {
    fs.writeFileSync(FAIL_MARKER, 'fail\n');
    await push(redis, 'flaky', { id: 'ro-failed', payload: {} });
    await waitFor(
      'ro-failed failed',
      async () => (await statusOf(redis, 'flaky', 'ro-failed')) === 'failed',
    );
    fs.rmSync(FAIL_MARKER);
    await go(page, '#/job/flaky/ro-failed');
    await until(
      page,
      'ro-failed failed',
      () => document.querySelector('#job-status')?.textContent === 'failed',
    );
    const made = await page.$$eval('#main .head-actions button', (b) =>
      b.map((x) => ({ label: x.textContent, shown: !!x.offsetParent })),
    );
    expect(
      made.some((b) => b.label === 'Retry with what failed because of it'),
      `no retry-with-dependents button made at all: ${JSON.stringify(made)}`,
    );
    expect(
      made.every((b) => !b.shown),
      `shown: ${JSON.stringify(made)}`,
    );
  });

  await check('read-only: no bulk action on a search or a status tab', async () => {
    await redis.zadd(
      'jobq:{echo}:delayed',
      99999999999999,
      JSON.stringify({ id: 'ro-1', payload: { note: 'a Lynx' } }),
    );
    await go(page, '#/search/echo/lynx');
    await until(
      page,
      'the search found ro-1',
      () =>
        document.querySelector('#content-progress')?.textContent.startsWith('Searched all') &&
        document.querySelector('#content-results tr[data-id="ro-1"]'),
    );
    const bulk = await page.$$eval('#content-search [data-bulk]', (b) =>
      b.map((x) => ({ kind: x.dataset.bulk, shown: !!x.offsetParent })),
    );
    expect(
      bulk.some((b) => b.kind === 'cancel'),
      'no cancel button made at all',
    );
    expect(
      bulk.every((b) => !b.shown),
      `shown: ${JSON.stringify(bulk)}`,
    );
    await go(page, '#/queue/echo/failed');
    await until(page, 'the failed tab', () => document.querySelector('#jobs tbody tr.empty'));
    const shown = await page.$$eval('[data-bulk]', (b) => b.filter((x) => x.offsetParent).length);
    expect(shown === 0, `${shown} bulk buttons shown`);
  });

  await check('sign out asks for the token again', async () => {
    await page.click('.sign-out');
    await until(page, 'the sign-in form', () => document.querySelector('#login #token'));
  });
}

// ---- main --------------------------------------------------------------------------------------

async function main() {
  fs.mkdirSync(OUT_DIR, { recursive: true });
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'jobqd-chromium-'));
  const redis = new Redis(REDIS_URL, { maxRetriesPerRequest: 2, lazyConnect: true });
  let browser = null;
  const deadline = setTimeout(() => {
    console.log(`not ok the run: past ${RUN_DEADLINE_MS} ms`);
    process.exit(1);
  }, RUN_DEADLINE_MS);
  try {
    await redis.connect();
    browser = await puppeteer.launch({
      executablePath: '/usr/bin/chromium',
      headless: true,
      timeout: 60000,
      args: [
        '--headless=new',
        '--no-sandbox',
        '--disable-gpu',
        '--disable-quic',
        '--no-first-run',
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-sync',
        '--js-flags=--expose-gc',
        `--user-data-dir=${profile}`,
      ],
    });
    const page = await browser.newPage();
    await page.setViewport({ width: WIDE, height: 900 });
    await page.emulateMediaFeatures([{ name: 'prefers-color-scheme', value: 'light' }]);
    await page.evaluateOnNewDocument(() => {
      // The text of a cell of the queues table (`__cell('echo', 'pending')`), null when absent.
      window.__cell = (queue, col) => {
        const cell = document.querySelector(
          `#queues tr[data-queue="${queue}"] td[data-col="${col}"]`,
        );
        return cell ? cell.textContent.trim() : null;
      };
      // The memory check's job ends (ids mem-N) the page was sent: it waits for them.
      window.__jobEvents = 0;
      const Native = window.EventSource;
      window.EventSource = class extends Native {
        constructor(...args) {
          super(...args);
          this.addEventListener('job', (e) => {
            if (String(e.data).includes('"id":"mem-')) window.__jobEvents++;
          });
        }
      };
      document.addEventListener('securitypolicyviolation', (e) =>
        console.error(`CSP violation: ${e.violatedDirective} ${e.blockedURI}`),
      );
    });
    page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
    page.on('console', (m) => {
      // A 404 or 401 the page asked for logs "Failed to load resource": not a problem.
      if (m.type() === 'error' && !m.text().startsWith('Failed to load resource'))
        problems.push(m.text());
    });
    await (TOKEN ? runSignedIn(page, redis) : run(page, redis));
  } catch (e) {
    failures++;
    console.log(`not ok the run: ${String((e && e.message) || e).split('\n')[0]}`);
  } finally {
    clearTimeout(deadline);
    if (browser) await browser.close().catch(() => {});
    redis.disconnect();
    fs.rmSync(profile, { recursive: true, force: true });
  }
  console.log(failures ? `${failures} check(s) failed` : 'all checks passed');
  process.exit(failures ? 1 : 0);
}

main();
