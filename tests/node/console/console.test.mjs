// The web console (docs/console.md) in headless Chromium against a real 3-node mesh: the stories
// model split over three nodes (layers [0, 2), [2, 4), [4, 5)), the console of the first node
// opened in a browser. The page must show the three nodes and their layer ranges, stream an
// answer in the playground, escape what the network says about nodes, and drop a node killed
// with SIGKILL once the mesh declares it dead, staying live over SSE throughout.
//
// Needs Debian's chromium (/usr/bin/chromium, or LLMESH_CHROMIUM) and npm playwright-core
// (tests/node/package.json); skipped without them. LLMESH_CONSOLE_SCREENSHOTS=DIR saves the
// screenshots of docs/console.md into DIR (console-mesh.png, console-playground.png,
// console-node-killed.png).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Cluster, runLlmesh, modelPath, waitUntilAllSee, aliveCount } from '../mesh/cluster.mjs';

const CHROMIUM = process.env.LLMESH_CHROMIUM ?? '/usr/bin/chromium';
const SHOTS = process.env.LLMESH_CONSOLE_SCREENSHOTS;
const NAME = 'stories';
const LAYERS = [[0, 2], [2, 4], [4, 5]];

let chromium = null;
let skipReason = null;
try {
  ({ chromium } = await import('playwright-core'));
} catch (e) {
  skipReason = `npm playwright-core is not installed (run npm install in tests/node): ${e.message}`;
}
if (!skipReason && !existsSync(CHROMIUM)) skipReason = `no Chromium at ${CHROMIUM} (apt-get install chromium)`;

const cluster = new Cluster({ ctx: 256, threads: 1, parallel: 2 });
let pkg = null;
let browser = null;
let page = null;
let nodes = [];          // [a, b, c]: a's console is the one opened
const requests = [];     // every URL the page asked for
const pageErrors = [];   // uncaught exceptions and console errors of the page

before(async () => {
  if (skipReason) return;
  pkg = path.join(mkdtempSync(path.join(tmpdir(), 'llmesh-console-pkg-')), 'stories');
  const r = runLlmesh(['package', modelPath('stories260K-f32.gguf'), pkg, '-q']);
  assert.equal(r.code, 0, r.stderr);
  const opts = (label, [first, last]) => ({
    label, modelPath: pkg, name: NAME, args: ['--layers', `${first}..${last}`, '--console-port', '0'],
  });
  const a = await cluster.startServer(opts('a', LAYERS[0]));
  const { token } = await a.invite();
  const b = await cluster.startServer({ ...opts('b', LAYERS[1]), join: token });
  const c = await cluster.startServer({ ...opts('c', LAYERS[2]), join: token });
  nodes = [a, b, c];
  for (const n of nodes) assert.match(n.console ?? '', /^http:\/\/127\.0\.0\.1:\d+\/$/, `${n.label}: the listening line names the console: ${JSON.stringify(n.info)}`);
  await waitUntilAllSee(nodes, (s) => aliveCount(s) === 3, { label: '3 alive' });
  browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox'] });
  page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  page.on('request', (req) => requests.push(req.url()));
  page.on('pageerror', (e) => pageErrors.push(`uncaught: ${e.message}`));
  page.on('console', (m) => { if (m.type() === 'error') pageErrors.push(`console.error: ${m.text()}`); });
  if (SHOTS) mkdirSync(SHOTS, { recursive: true });
});

after(async () => {
  await browser?.close().catch(() => {});
  await cluster.stop();
  if (pkg) rmSync(path.dirname(pkg), { recursive: true, force: true });
});

const rowSelector = (id) => `[data-testid="node-row"][data-node-id="${id}"]`;
const shot = async (name, fn) => { if (SHOTS) await fn(path.join(SHOTS, name)); };

test('the console shows the three nodes, their layer ranges and the topology, live over SSE', cluster.guard(async (t) => {
  if (skipReason) return t.skip(skipReason);
  const [a] = nodes;
  await page.goto(a.console);
  const ids = nodes.map((n) => n.id);
  await page.waitForFunction((want) => {
    const rows = [...document.querySelectorAll('[data-testid="node-row"]')].map((r) => r.dataset.nodeId);
    return rows.length === want.length && want.every((id) => rows.includes(id));
  }, ids, { timeout: 20000 });
  // The ranges the page shows are the ones the mesh reports (llmesh status --json).
  const st = runLlmesh(['status', '--json', '--api', `127.0.0.1:${a.apiPort}`]);
  assert.equal(st.code, 0, st.stderr);
  const status = JSON.parse(st.stdout);
  for (const [i, n] of nodes.entries()) {
    const member = status.members.find((m) => m.id === n.id);
    const model = member.state.models.find((md) => md.name === NAME);
    assert.deepEqual(model.layers_loaded, LAYERS[i], `${n.label} holds ${JSON.stringify(model.layers_loaded)}`);
    const text = await page.locator(`[data-testid="layer-range"][data-node-id="${n.id}"]`).textContent();
    assert.equal(text, `[${LAYERS[i][0]}, ${LAYERS[i][1]})`, `${n.label}'s layer range on the page`);
  }
  assert.equal(await page.locator('[data-testid="topology-node"]').count(), 3);
  // The three links, labelled with their round trips once the nodes have measured them.
  await page.waitForFunction(() => {
    const links = [...document.querySelectorAll('[data-testid="topology-link"]')];
    return links.length === 3 && links.every((l) => /\d ms$/.test(l.textContent));
  }, null, { timeout: 20000 });
  assert.equal(await page.locator('[data-testid="node-row"].self').getAttribute('data-node-id'), a.id, 'this node is marked');
  await page.waitForFunction(() => document.querySelector('[data-testid="connection"]').dataset.state === 'live', null, { timeout: 10000 });
  assert.match(await page.locator('[data-testid="total-tps"]').textContent(), /^\d/);
  await shot('console-mesh.png', (p) => page.screenshot({ path: p, fullPage: true }));
}));

test('the playground streams an answer from the split model', cluster.guard(async (t) => {
  if (skipReason) return t.skip(skipReason);
  await page.waitForFunction((m) => [...document.querySelectorAll('[data-testid="chat-model"] option')].some((o) => o.value === m), NAME, { timeout: 10000 });
  await page.selectOption('[data-testid="chat-model"]', NAME);
  // Every text the answer shows on its way, recorded by a MutationObserver: each update adds a
  // new text node to the answer (or changes one in place: then the record has the old text), so
  // records delivered in one batch still carry every text. (An added node may be detached again
  // by the time the batch arrives: the record's target says where it was added.)
  await page.evaluate(() => {
    window.__partials = [];
    const out = document.querySelector('[data-testid="chat-output"]');
    const inAnswer = (n) => (n.nodeType === Node.TEXT_NODE ? n.parentElement : n)?.closest('.msg.assistant .content');
    new MutationObserver((records) => {
      for (const r of records) {
        if (r.type === 'characterData' && inAnswer(r.target)) {
          if (r.oldValue) window.__partials.push(r.oldValue);
          window.__partials.push(r.target.data);
        }
        for (const n of r.addedNodes) {
          if (n.nodeType === Node.TEXT_NODE && inAnswer(r.target)) {
            window.__partials.push(n.data);
          }
        }
      }
    }).observe(out, { childList: true, subtree: true, characterData: true, characterDataOldValue: true });
  });
  // Greedy, so that the answer is the same every run (and long: the story goes on to max tokens).
  await page.fill('#chat-temperature', '0');
  await page.fill('#chat-max-tokens', '100');
  await page.fill('[data-testid="chat-input"]', 'Tell me a story about a brave little cat.');
  await page.click('[data-testid="chat-send"]');
  await page.waitForFunction(() => ['done', 'error', 'stopped'].includes(document.querySelector('[data-testid="chat-stats"]').dataset.state),
    null, { timeout: 60000 });
  const stats = await page.locator('[data-testid="chat-stats"]').textContent();
  assert.equal(await page.locator('[data-testid="chat-stats"]').getAttribute('data-state'), 'done', `the chat ended with: ${stats}`);
  const answer = await page.locator('[data-testid="chat-output"] .msg.assistant .content').last().textContent();
  assert.ok(answer.trim().length > 0, 'the answer is not empty');
  const partials = [...new Set(await page.evaluate(() => window.__partials))].filter((p) => p.length > 0);
  assert.ok(partials.length >= 3, `several partial texts were shown (${partials.length}): ${JSON.stringify(answer)}`);
  for (const p of partials) assert.ok(answer.startsWith(p), `a partial text is a prefix of the answer: ${JSON.stringify(p)}`);
  assert.match(stats, /^\d+ tokens? · .*done \(length\)$/, stats);
  await page.locator('#playground-panel').scrollIntoViewIfNeeded();
  await shot('console-playground.png', (p) => page.locator('#playground-panel').screenshot({ path: p }));
}));

test('strings from the network are shown as text, never as markup', cluster.guard(async (t) => {
  if (skipReason) return t.skip(skipReason);
  // A hostile state, as a rogue node could gossip it: the page must show it verbatim.
  const state = JSON.parse(await (await fetch(new URL('/api/state', nodes[0].console))).text());
  const evil = '<img src=x onerror="window.__pwned=1"><script>window.__pwned=2</script>';
  const rogue = structuredClone(state.members.find((m) => !m.self));
  rogue.id = `${'e'.repeat(63)}f`;
  rogue.state.api_address = evil;
  rogue.state.role = evil;
  rogue.state.hardware.accelerator = evil;
  rogue.state.models[0].name = evil;
  state.members.push(rogue);
  if (Array.isArray(state.placement)) state.placement.push({ model: evil, total_layers: 3, ranges: [{ node: rogue.id, first: 0, last: 2 }], expert_groups: [], missing: [] });
  const ctx = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  try {
    const p = await ctx.newPage();
    const body = JSON.stringify(state);
    await p.route('**/api/state', (r) => r.fulfill({ status: 200, contentType: 'application/json', body }));
    await p.route('**/api/events', (r) => r.fulfill({ status: 200, contentType: 'text/event-stream', body: `event: state\ndata: ${body}\n\n` }));
    await p.goto(nodes[0].console);
    await p.waitForSelector(rowSelector(rogue.id), { timeout: 10000 });
    assert.equal(await p.evaluate(() => window.__pwned ?? null), null, 'no injected script ran');
    assert.equal(await p.locator('img').count(), 0, 'no injected element');
    assert.ok((await p.locator(rowSelector(rogue.id)).textContent()).includes(evil), 'the text is shown as it is');
  } finally {
    await ctx.close();
  }
}));

test('a node killed with SIGKILL disappears from the console', cluster.guard(async (t) => {
  if (skipReason) return t.skip(skipReason);
  const [a, b, c] = nodes;
  await c.kill();
  await page.waitForSelector(rowSelector(c.id), { state: 'detached', timeout: 60000 });
  assert.equal(await page.locator('[data-testid="node-row"]').count(), 2);
  for (const n of [a, b]) assert.equal(await page.locator(rowSelector(n.id)).count(), 1, `${n.label} is still shown`);
  assert.equal(await page.locator(`[data-testid="layer-range"][data-node-id="${c.id}"]`).count(), 0);
  assert.equal(await page.locator(`[data-testid="topology-node"][data-node-id="${c.id}"]`).count(), 0);
  // The layers only the killed node held are shown as missing.
  await page.waitForFunction(() => [...document.querySelectorAll('[data-testid="placement-missing"]')].some((e) => e.textContent.includes('[4, 5)')),
    null, { timeout: 10000 });
  assert.equal(await page.locator('[data-testid="connection"]').getAttribute('data-state'), 'live');
  await page.evaluate(() => window.scrollTo(0, 0));
  await shot('console-node-killed.png', (p) => page.screenshot({ path: p, fullPage: true }));
  // Everything the page loaded came from the node itself: no CDN, no web font, no other host.
  const origin = new URL(a.console).origin;
  const foreign = requests.filter((u) => !u.startsWith(origin) && !u.startsWith('data:'));
  assert.deepEqual(foreign, [], 'requests to other hosts');
  assert.deepEqual(pageErrors, [], 'errors in the page');
}));

test('a node with an API key: the console asks for it, refuses a wrong one, then shows the mesh', cluster.guard(async (t) => {
  if (skipReason) return t.skip(skipReason);
  const KEY = 'console-test-key';
  const k = await cluster.startServer({ label: 'k', args: ['--api-key', KEY, '--console-port', '0'] });
  const state = await fetch(new URL('/api/state', k.console));
  assert.equal(state.status, 401, 'the state wants the key');
  const ctx = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  try {
    const p = await ctx.newPage();
    await p.goto(k.console);
    const unlock = async (key) => {
      await p.fill('#banner input', key);
      await p.click('#banner button');
    };
    await p.waitForSelector('#banner input', { timeout: 10000 });
    assert.equal(await p.locator('[data-testid="connection"]').getAttribute('data-state'), 'locked');
    assert.equal(await p.locator('[data-testid="node-row"]').count(), 0);
    await unlock('wrong');
    await p.waitForFunction(() => /refused/.test(document.querySelector('#banner').textContent), null, { timeout: 10000 });
    await unlock(KEY);
    await p.waitForSelector(rowSelector(k.id), { timeout: 10000 });
    await p.waitForFunction(() => document.querySelector('[data-testid="connection"]').dataset.state === 'live', null, { timeout: 10000 });
    assert.ok(await p.locator('#banner').isHidden(), 'the banner is gone');
    // The playground got the models with the key.
    await p.waitForFunction(() => [...document.querySelectorAll('[data-testid="chat-model"] option')].some((o) => o.value.startsWith('stories')), null, { timeout: 10000 });
  } finally {
    await ctx.close();
    await k.terminate();
  }
}));
