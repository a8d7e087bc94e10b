// The web UI end to end, in Debian's headless Chromium driven by playwright-core:
// sign in → choose a slice, dates, columns, filters → preview → export → cancel →
// export again → wait → download (rows checked) → delete; plus the API request panel's
// curl and AppMetrica-style URL, run for real. A real `logport serve` runs against the
// test ClickHouse with a static token; rows are ingested over HTTP. A screenshot of
// every screen goes to $LOGPORT_ARTIFACTS/screenshots (default .ci-artifacts/screenshots).
//
// Needs LOGPORT_TEST_CLICKHOUSE_URL and the logport binary (LOGPORT_BIN); fails, never
// skips, without them or without /usr/bin/chromium (CHROMIUM overrides the path).

import assert from 'node:assert/strict';
import { spawn, execFileSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import zlib from 'node:zlib';
import { chromium } from 'playwright-core';

const here = path.dirname(fileURLToPath(import.meta.url));
const repo = path.resolve(here, '../..');
const started = Date.now();
const TOKEN = 'ui-test-token-acme';
const OTHER = 'ui-test-token-globex';
const DAY = '2026-11-05';

const CLICKHOUSE = required('LOGPORT_TEST_CLICKHOUSE_URL').replace(/\/$/, '');
const BIN = process.env.LOGPORT_BIN || path.join(repo, 'target/debug/logport');
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const SHOTS = path.join(process.env.LOGPORT_ARTIFACTS || path.join(repo, '.ci-artifacts'), 'screenshots');

function required(name) {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set: run ./scripts/test.sh (or tests/browser/run.sh)`);
  return v;
}

function log(msg) {
  console.log(`[${((Date.now() - started) / 1000).toFixed(1)}s] ${msg}`);
}

async function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
    srv.on('error', reject);
  });
}

async function clickhouse(sql) {
  const resp = await fetch(`${CLICKHOUSE}/`, { method: 'POST', body: sql });
  const text = await resp.text();
  if (!resp.ok) throw new Error(`ClickHouse: ${sql}: ${text}`);
  return text;
}

// ---------------------------------------------------------------------------------
// The service

class Service {
  constructor() {
    this.dir = fs.mkdtempSync(path.join(os.tmpdir(), 'logport-ui-'));
    this.database = `lpt_ui_${crypto.randomBytes(8).toString('hex')}`;
    this.logPath = path.join(this.dir, 'logport.log');
    this.child = null;
  }

  async start(workers) {
    if (!this.port) this.port = await freePort();
    this.base = `http://127.0.0.1:${this.port}`;
    const log = fs.openSync(this.logPath, 'a');
    this.child = spawn(BIN, ['serve'], {
      cwd: this.dir,
      stdio: ['ignore', log, log],
      env: {
        PATH: process.env.PATH,
        RUST_LOG: 'info',
        LOGPORT_LISTEN: `127.0.0.1:${this.port}`,
        LOGPORT_CLICKHOUSE_URL: CLICKHOUSE,
        LOGPORT_CLICKHOUSE_DATABASE: this.database,
        LOGPORT_OBJECT_STORE_URL: `file://${path.join(this.dir, 'exports')}`,
        LOGPORT_JOB_STORE_URL: `sqlite://${path.join(this.dir, 'jobs.db')}`,
        LOGPORT_STATIC_TOKENS: `${TOKEN}@acme,${OTHER}@globex`,
        LOGPORT_WORKERS: String(workers),
        LOGPORT_HEARTBEAT: '1s',
        LOGPORT_LEASE: '5s',
      },
    });
    fs.closeSync(log);
    const exited = new Promise((resolve) => this.child.once('exit', resolve));
    const deadline = Date.now() + 30000;
    for (;;) {
      try {
        const r = await fetch(`${this.base}/healthz`);
        if (r.ok) return;
      } catch { /* not up yet */ }
      const gone = await Promise.race([exited.then(() => true), new Promise((r) => setTimeout(() => r(false), 50))]);
      if (gone) throw new Error(`logport serve exited at start:\n${this.logs()}`);
      if (Date.now() > deadline) throw new Error(`logport serve did not start:\n${this.logs()}`);
    }
  }

  async stop() {
    if (!this.child || this.child.exitCode !== null) return;
    const exited = new Promise((resolve) => this.child.once('exit', resolve));
    this.child.kill('SIGKILL');
    await exited;
  }

  logs() {
    try { return fs.readFileSync(this.logPath, 'utf8'); } catch { return ''; }
  }

  async api(pathname, { token = TOKEN, method = 'GET', body, headers = {} } = {}) {
    const resp = await fetch(`${this.base}${pathname}`, {
      method,
      headers: { Authorization: `Bearer ${token}`, ...headers },
      body,
    });
    return resp;
  }

  async ingest(token, slice, rows) {
    const resp = await this.api(`/v1/ingest/${slice}`, {
      token, method: 'POST', body: rows.map((r) => JSON.stringify(r)).join('\n'),
      headers: { 'Content-Type': 'application/x-ndjson' },
    });
    const text = await resp.text();
    assert.equal(resp.status, 200, `ingest: ${text}`);
  }

  async cleanup() {
    await this.stop();
    await clickhouse(`DROP DATABASE IF EXISTS ${this.database}`).catch(() => {});
    fs.rmSync(this.dir, { recursive: true, force: true });
  }
}

// ---------------------------------------------------------------------------------
// Data: 40 clicks of acme on DAY, a few on another day, and globex's own.

const COUNTRIES = ['US', 'DE', 'FR', 'GB'];
const rows = Array.from({ length: 40 }, (_, i) => ({
  click_id: `ui-${String(i).padStart(2, '0')}`,
  event_time: `${DAY}T${String(Math.floor(i / 2)).padStart(2, '0')}:${i % 2 ? '45' : '15'}:00Z`,
  country_code: COUNTRIES[i % 4],
  cost: i / 10,
  campaign_id: `camp-${i % 3}`,
}));
const otherDay = [{ click_id: 'ui-late', event_time: '2026-11-09T10:00:00Z', country_code: 'US', cost: 9 }];
const globex = [{ click_id: 'globex-only', event_time: `${DAY}T23:00:00Z`, country_code: 'US', cost: 9 }];

// What the UI's query must return: country in US,DE and cost >= 1.
const matching = rows.filter((r) => ['US', 'DE'].includes(r.country_code) && r.cost >= 1);
const matchingNoCost = rows.filter((r) => ['US', 'DE'].includes(r.country_code));

function csvRows(text) {
  // Our values hold no commas or quotes: a plain split is an exact reader here.
  const unquote = (l) => l.split(',').map((v) => v.replace(/^"|"$/g, ''));
  const lines = text.replace(/^\uFEFF/, '').trimEnd().split('\n');
  return { header: unquote(lines[0]), rows: lines.slice(1).map(unquote) };
}

function expectedCsv(set, header) {
  return set
    .map((r) => header.map((f) => {
      if (f === 'event_time') return r.event_time.replace('T', ' ').replace('Z', '');
      return String(r[f]);
    }))
    .sort((a, b) => a.join().localeCompare(b.join()));
}

// ---------------------------------------------------------------------------------
// Browser helpers

async function screenshot(page, name) {
  fs.mkdirSync(SHOTS, { recursive: true });
  const file = path.join(SHOTS, `${name}.png`);
  await page.screenshot({ path: file });
  log(`screenshot ${path.relative(repo, file)}`);
}

/** Every visible control has an accessible name (label, aria-label(ledby) or text). */
async function assertLabelled(page, where) {
  const unlabelled = await page.evaluate(() => {
    const out = [];
    for (const c of document.querySelectorAll('input, select, textarea, button, [role=tab], [role=region]')) {
      if (c.closest('[hidden]') || c.type === 'hidden') continue;
      const named = (c.labels && c.labels.length) || c.getAttribute('aria-label')
        || c.getAttribute('aria-labelledby') || (c.tagName === 'BUTTON' && c.textContent.trim());
      if (!named) out.push(c.outerHTML.slice(0, 120));
    }
    return out;
  });
  assert.deepEqual(unlabelled, [], `unlabelled controls on ${where}`);
}

async function waitText(locator, pattern, timeout = 15000) {
  await locator.filter({ hasText: pattern }).first().waitFor({ timeout });
}

// ---------------------------------------------------------------------------------

async function main() {
  assert.ok(fs.existsSync(CHROMIUM), `${CHROMIUM} is missing: apt-get install chromium (the browser test needs it)`);
  assert.ok(fs.existsSync(BIN), `${BIN} is missing: cargo build -p logport`);
  const svc = new Service();
  let browser;
  let page;
  try {
    await svc.start(0); // no workers yet: the first export stays queued, to be canceled
    await svc.ingest(TOKEN, 'clicks', [...rows, ...otherDay]);
    await svc.ingest(OTHER, 'clicks', globex);
    const catalog = await (await svc.api('/v1/slices/clicks')).json();
    const ops = (name) => catalog.fields.find((f) => f.name === name).ops;
    log(`service on ${svc.base}, ${rows.length + otherDay.length} rows ingested`);

    browser = await chromium.launch({
      executablePath: CHROMIUM,
      headless: true,
      args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
        '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    });
    const context = await browser.newContext({ viewport: { width: 1366, height: 768 }, acceptDownloads: true });
    page = await context.newPage();
    const pageErrors = [];
    page.on('pageerror', (e) => pageErrors.push(e.message));
    page.on('console', (m) => {
      // The browser logs every non-2xx fetch; the 401 and 422 below are on purpose.
      if (m.type() === 'error' && !m.text().startsWith('Failed to load resource')) pageErrors.push(m.text());
    });

    // --- Sign in: a wrong token is refused with the problem's words.
    await page.goto(svc.base);
    await page.locator('#signin').waitFor();
    await assertLabelled(page, 'sign-in');
    await screenshot(page, '01-sign-in');
    await page.locator('#token').fill('not-a-token');
    await page.keyboard.press('Enter');
    await waitText(page.locator('#error'), /Missing or invalid token \(401\)/);
    assert.equal(await page.locator('#token').getAttribute('aria-invalid'), 'true');
    await screenshot(page, '02-sign-in-refused');

    // The right token, typed and sent from the keyboard.
    await page.locator('#token').focus();
    await page.keyboard.type(TOKEN);
    await page.keyboard.press('Enter');
    await page.locator('#app').waitFor();
    assert.equal(await page.locator('#error').isHidden(), true);
    const stored = await page.evaluate(() => ({ session: sessionStorage.getItem('logport.token'), local: JSON.stringify(localStorage) }));
    assert.equal(stored.session, TOKEN);
    assert.ok(!stored.local.includes(TOKEN), 'the token must not be in localStorage');
    log('signed in');

    // --- The query: slice with its description, dates, columns, filters.
    await page.locator('#slice').selectOption('clicks');
    await waitText(page.locator('#slice-description'), catalog.description.slice(0, 40));
    await page.locator('#since').fill(DAY);
    await page.locator('#until').fill(DAY);
    await page.locator('#dimension').selectOption('event');
    // The column chooser starts with the catalog's defaults.
    const defaults = catalog.fields.filter((f) => f.default).map((f) => f.name);
    const checked = () => page.locator('#column-list input:checked').evaluateAll((xs) => xs.map((x) => x.value));
    assert.deepEqual(await checked(), defaults);
    await page.locator('#columns-none').click();
    const columns = ['event_time', 'click_id', 'country_code', 'cost'];
    for (const c of columns) await page.locator(`#column-list input[value="${c}"]`).check();
    const header = catalog.fields.map((f) => f.name).filter((n) => columns.includes(n));

    await page.locator('#add-filter').click();
    const f1 = page.locator('#filter-list > li').nth(0);
    await f1.locator('select[data-role=field]').selectOption('country_code');
    const opsOf = (li) => li.locator('select[data-role=op] option').evaluateAll((xs) => xs.map((x) => x.value));
    assert.deepEqual(await opsOf(f1), ops('country_code'), 'the filter builder offers the field\'s ops');
    await f1.locator('select[data-role=op]').selectOption('in');
    await f1.locator('input[data-role=a]').fill('US, DE');
    await page.locator('#add-filter').click();
    const f2 = page.locator('#filter-list > li').nth(1);
    await f2.locator('select[data-role=field]').selectOption('cost');
    assert.deepEqual(await opsOf(f2), ops('cost'));
    assert.ok(!(await opsOf(f2)).includes('prefix'), 'no text ops for a number');
    await f2.locator('select[data-role=op]').selectOption('gte');
    await f2.locator('input[data-role=a]').fill('1');

    // --- The live preview and the estimate.
    const previewRows = page.locator('#preview tbody tr');
    await waitText(page.locator('#estimate'), new RegExp(`≈ ${matching.length} rows`));
    await page.waitForFunction((n) => document.querySelectorAll('#preview tbody tr').length === n, matching.length);
    const shownHeader = await page.locator('#preview thead th').allTextContents();
    assert.deepEqual(shownHeader, header, 'columns in catalog order');
    const ids = await previewRows.evaluateAll((trs) => trs.map((tr) => tr.cells[1].textContent));
    const newestFirst = [...matching].sort((a, b) => b.event_time.localeCompare(a.event_time)).map((r) => r.click_id);
    assert.deepEqual(ids, newestFirst, 'newest rows first, own tenant only, filtered');
    await assertLabelled(page, 'query and preview');
    await screenshot(page, '03-preview');
    log(`preview shows ${ids.length} rows`);

    // --- A bad value: the problem names the member, the control is marked.
    await f2.locator('input[data-role=a]').fill('lots');
    await waitText(page.locator('#error'), /The request is not acceptable \(422\) `lots` is not a number/);
    await waitText(page.locator('#error'), /check filter 2, Value/);
    assert.equal(await f2.locator('input[data-role=a]').getAttribute('aria-invalid'), 'true');
    await screenshot(page, '04-filter-problem');
    await f2.locator('input[data-role=a]').fill('1');
    await page.locator('#error').waitFor({ state: 'hidden' });
    await waitText(page.locator('#estimate'), new RegExp(`≈ ${matching.length} rows`));

    // --- Export tab, reached with the keyboard (arrow keys move between tabs).
    await page.locator('#tab-preview').focus();
    await page.keyboard.press('ArrowRight');
    assert.equal(await page.locator('#tab-export').getAttribute('aria-selected'), 'true');
    assert.equal(await page.evaluate(() => document.activeElement.id), 'tab-export');
    await page.locator('#app-id').fill('0'); // the rows have no app: app_id 0
    await page.locator('#format').selectOption('csv');
    await page.locator('#compression').selectOption('gzip');
    const curl = await page.locator('#api-curl').inputValue();
    const amUrl = await page.locator('#api-appmetrica').inputValue();
    const amNotes = await page.locator('#api-appmetrica-note').textContent();
    assert.ok(curl.includes(`${svc.base}/v1/exports`) && curl.includes('$LOGPORT_TOKEN') && !curl.includes(TOKEN), curl);
    assert.ok(curl.includes('"op": "in"') && curl.includes('"compression": "gzip"'), curl);
    assert.ok(amUrl.startsWith(`${svc.base}/logs/v1/export/clicks.csv?application_id=0&`), amUrl);
    assert.ok(amUrl.includes('country_code=US&country_code=DE'), amUrl);
    assert.ok(amNotes.includes('cost gte') && amNotes.includes('Accept-Encoding: gzip'), amNotes);
    await assertLabelled(page, 'export');
    await screenshot(page, '05-export-and-api-request');

    // --- Export with no worker running: queued, then canceled from the list.
    await page.locator('#export-button').click();
    await page.locator('#panel-jobs').waitFor();
    const firstRow = page.locator('#jobs tbody tr').first();
    await waitText(firstRow.locator('.status'), 'queued');
    const canceledId = await firstRow.getAttribute('data-id');
    await screenshot(page, '06-export-queued');
    await firstRow.getByRole('button', { name: /^Cancel export/ }).click();
    await waitText(firstRow.locator('.status'), 'canceled');
    assert.equal((await (await svc.api(`/v1/exports/${canceledId}`)).json()).status, 'canceled');
    log(`export ${canceledId} queued and canceled`);

    // --- Workers on; export again; the list follows it to the end.
    await svc.stop();
    await svc.start(2);
    await page.locator('#tab-export').click();
    await page.locator('#export-button').click();
    await page.locator('#panel-jobs').waitFor();
    const row = page.locator('#jobs tbody tr').first();
    await page.waitForFunction((old) => {
      const tr = document.querySelector('#jobs tbody tr');
      return tr && tr.dataset.id !== old;
    }, canceledId);
    const jobId = await row.getAttribute('data-id');
    await waitText(row.locator('.status'), 'succeeded', 30000);
    await waitText(row.locator('.progress'), new RegExp(`${matching.length} rows`));
    await assertLabelled(page, 'jobs');
    await screenshot(page, '07-export-succeeded');
    log(`export ${jobId} succeeded`);

    // --- Download the part (fetched with the token, saved from a blob) and read it.
    const job = await (await svc.api(`/v1/exports/${jobId}`)).json();
    assert.equal(job.parts.length, 1);
    const [download] = await Promise.all([
      page.waitForEvent('download'),
      row.getByRole('button', { name: /^Download part-00001\.csv\.gz/ }).click(),
    ]);
    assert.equal(download.suggestedFilename(), `${jobId}-part-00001.csv.gz`);
    const saved = path.join(svc.dir, download.suggestedFilename());
    await download.saveAs(saved);
    const bytes = fs.readFileSync(saved);
    assert.equal(crypto.createHash('sha256').update(bytes).digest('hex'), job.parts[0].sha256);
    const csv = csvRows(zlib.gunzipSync(bytes).toString('utf8'));
    assert.deepEqual(csv.header, header);
    assert.deepEqual(csv.rows.sort((a, b) => a.join().localeCompare(b.join())), expectedCsv(matching, header));
    await waitText(page.locator('#status'), /SHA-256 verified/);
    log(`downloaded ${bytes.length} bytes, ${csv.rows.length} rows as expected`);

    // --- Delete: two presses, then the files are gone.
    const del = row.getByRole('button', { name: /^Delete the files/ });
    await del.click();
    await waitText(del, 'Press again to delete');
    await del.click();
    await waitText(row.locator('.status'), 'expired');
    const gone = await svc.api(job.parts[0].url);
    assert.equal(gone.status, 410);
    await screenshot(page, '08-export-deleted');

    // --- A reload keeps the session and the columns chosen for the slice.
    await page.reload();
    await page.locator('#app').waitFor();
    await page.waitForFunction(() => document.querySelectorAll('#column-list input').length > 0);
    assert.deepEqual(await checked(), header);
    await page.locator('#sign-out').click();
    await page.locator('#signin').waitFor();
    assert.equal(await page.evaluate(() => sessionStorage.getItem('logport.token')), null);
    assert.deepEqual(pageErrors, [], 'no script errors');
    log('reload, sign-out fine');

    // --- The API request panel's curl and URL work as shown.
    const created = JSON.parse(execFileSync('bash', ['-c', curl], { env: { ...process.env, LOGPORT_TOKEN: TOKEN } }).toString());
    assert.equal(created.status, 'queued');
    assert.deepEqual(created.request.filters, [
      { field: 'country_code', op: 'in', values: ['US', 'DE'] },
      { field: 'cost', op: 'gte', value: 1 },
    ]);
    let viaCurl;
    for (let i = 0; i < 300; i += 1) {
      viaCurl = await (await svc.api(`/v1/exports/${created.id}`)).json();
      if (!['queued', 'running'].includes(viaCurl.status)) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    assert.equal(viaCurl.status, 'succeeded');
    assert.equal(viaCurl.progress.rows, matching.length);
    let am;
    for (let i = 0; i < 300; i += 1) {
      am = await fetch(amUrl, { headers: { Authorization: `OAuth ${TOKEN}` } });
      if (am.status !== 202) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    const amText = await am.text();
    assert.equal(am.status, 200, amText);
    const amCsv = csvRows(amText);
    const amIds = amCsv.rows.map((r) => r[amCsv.header.indexOf('click_id')]).sort();
    assert.deepEqual(amIds, matchingNoCost.map((r) => r.click_id).sort(), 'the AppMetrica URL (without the cost filter it cannot express)');
    log('curl and AppMetrica URL from the panel give the same rows');
    log(`browser test passed in ${((Date.now() - started) / 1000).toFixed(1)}s; screenshots in ${SHOTS}`);
  } catch (e) {
    if (page) await screenshot(page, 'failure').catch(() => {});
    const tail = svc.logs().trimEnd().split('\n').slice(-40).join('\n');
    console.error(`---- logport log (last lines) ----\n${tail}`);
    throw e;
  } finally {
    if (browser) await browser.close();
    await svc.cleanup();
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
