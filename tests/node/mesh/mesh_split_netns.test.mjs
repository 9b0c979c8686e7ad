// A split model over separate "hosts": each stage in its own network namespace (scripts/netns),
// hidden states crossing the bridge. 2- and 3-stage splits must give one node's greedy output
// token for token; kill -9 of the middle stage in the middle of a streamed answer must not
// change it (a spare node holding the same layers takes over, the KV is rebuilt).
//
// stories260K, then a 1.1B model: the synthetic TinyLlama 1.1B (q4_0, random weights, made by
// ../shared/tools/make_synthetic_gguf.py into a temporary directory), or the GGUF that
// LLMESH_SPLIT_BIG_MODEL names ("skip": none). Skipped where namespaces cannot be made
// (scripts/netns exits 77).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Cluster, runLlmesh, modelPath, sharedDir, now, sleep, figure, streamCompletion, netnsUp, netnsDown, netnsAddr } from './cluster.mjs';

const NAME = 'split-model';
const cluster = new Cluster({ ctx: 512, threads: 1, parallel: 1 });
let ns = { ok: false, reason: 'not tried' };
const temps = [];
const tempDir = () => {
  const d = mkdtempSync(path.join(tmpdir(), 'llmesh-split-netns-'));
  temps.push(d);
  return d;
};

before(() => { ns = netnsUp(4); });
after(async () => {
  await cluster.stop();
  if (!ns.skip) netnsDown();
  for (const d of temps) rmSync(d, { recursive: true, force: true });
});

const skipUnless = (t) => {
  if (ns.ok) return false;
  if (ns.skip) { t.skip(`no network namespaces here: ${ns.reason}`); return true; }
  throw new Error(ns.reason);
};

function packageOf(gguf) {
  const dir = path.join(tempDir(), 'pkg');
  const r = runLlmesh(['package', gguf, dir, '-q'], { timeoutMs: 300000 });
  assert.equal(r.code, 0, r.stderr);
  return dir;
}

async function complete(node, maxTokens, prompt) {
  const r = await fetch(`${node.baseURL}/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ model: NAME, prompt, max_tokens: maxTokens, temperature: 0 }),
    signal: AbortSignal.timeout(300000),
  });
  const body = await r.json();
  assert.equal(r.status, 200, `${node.label}: ${JSON.stringify(body)}`);
  return body.choices[0].text;
}

async function waitForEntry(node, timeoutMs = 60000) {
  const deadline = now() + timeoutMs;
  for (;;) {
    const s = (await node.status()).split;
    if (s?.entry) return s;
    if (now() > deadline) throw new Error(`${node.label}: no route within ${timeoutMs} ms: ${JSON.stringify(s)}`);
    await sleep(200);
  }
}

// One model: the single-node reference, a 2-stage and a 3-stage split across namespaces, and the
// kill of the middle stage mid-stream.
async function splitAcrossNamespaces(t, { gguf, nLayer, prompt, tokens, killAt, label }) {
  const pkg = packageOf(gguf);
  const whole = await cluster.startServer({ label: `${label}-whole`, modelPath: gguf, name: NAME, timeoutMs: 120000 });
  const reference = await complete(whole, tokens, prompt);
  await whole.terminate();

  const k = Math.floor(nLayer / 2);
  const a = await cluster.startServer({ label: `${label}-a`, netns: 1, modelPath: pkg, name: NAME, args: ['--layers', `0..${k}`], timeoutMs: 120000 });
  assert.equal(a.meshAddress.split(':')[0], netnsAddr(1));
  const { token } = await a.invite();
  const b = await cluster.startServer({ label: `${label}-b`, netns: 2, modelPath: pkg, name: NAME, args: ['--layers', `${k}..${nLayer}`], join: token, timeoutMs: 120000 });
  await waitForEntry(a);
  assert.equal(await complete(a, tokens, prompt), reference, '2 stages across namespaces');
  await Promise.all([a.terminate(), b.terminate()]);

  // 3 stages [0, x) [x, y) [y, n) and a spare for the middle one, each in its own namespace.
  const x = Math.max(1, Math.floor(nLayer / 3)), y = Math.max(x + 1, Math.floor((2 * nLayer) / 3));
  const e = await cluster.startServer({ label: `${label}-e`, netns: 1, modelPath: pkg, name: NAME, args: ['--layers', `0..${x}`], timeoutMs: 120000 });
  const tok2 = (await e.invite()).token;
  const m1 = await cluster.startServer({ label: `${label}-m1`, netns: 2, modelPath: pkg, name: NAME, args: ['--layers', `${x}..${y}`], join: tok2, timeoutMs: 120000 });
  const m2 = await cluster.startServer({ label: `${label}-m2`, netns: 3, modelPath: pkg, name: NAME, args: ['--layers', `${x}..${y}`], join: tok2, timeoutMs: 120000 });
  const z = await cluster.startServer({ label: `${label}-z`, netns: 4, modelPath: pkg, name: NAME, args: ['--layers', `${y}..${nLayer}`], join: tok2, timeoutMs: 120000 });
  await waitForEntry(e);
  assert.equal(await complete(e, tokens, prompt), reference, '3 stages across namespaces');
  let killedAt = 0, victim = null;
  const r = await streamCompletion(e, NAME, prompt, tokens, async (n) => {
    if (n !== killAt) return;
    const route = (await e.status()).split.pipeline.route;
    assert.equal(route.length, 3);
    victim = [m1, m2].find((m) => m.id === route[1].node);
    killedAt = now();
    await victim.kill();
  });
  assert.ok(victim, 'the middle stage was killed');
  assert.equal(r.text, reference, 'the stream went on with the same text');
  const resumed = r.times.find((tm) => tm > killedAt);
  figure(`${label}_netns_kill_to_resume_ms`, resumed - killedAt, 0);
  const st = (await e.status()).split.pipeline;
  assert.equal(st.recoveries, 1);
  const spare = victim === m1 ? m2 : m1;
  assert.equal(st.route[1].node, spare.id);
  await Promise.all([e, m1, m2, z].map((n) => n.terminate()));
}

test('stories260K split over 2 and 3 namespaces; the middle stage killed mid-stream', cluster.guard(async (t) => {
  if (skipUnless(t)) return;
  await splitAcrossNamespaces(t, { gguf: modelPath('stories260K-f32.gguf'), nLayer: 5, prompt: 'Once upon a time', tokens: 400, killAt: 20, label: 'stories' });
}));

test('a 1.1B model (synthetic TinyLlama) the same way', cluster.guard(async (t) => {
  let big = process.env.LLMESH_SPLIT_BIG_MODEL;
  if (big === 'skip') { t.skip('LLMESH_SPLIT_BIG_MODEL=skip'); return; }
  if (skipUnless(t)) return;
  if (!big) {
    big = path.join(tempDir(), 'tinyllama-1.1b-q4_0.gguf');
    const r = spawnSync('python3', [path.join(sharedDir, 'tools', 'make_synthetic_gguf.py'), '--preset', 'tinyllama-1.1b',
      '--qtype', 'q4_0', '--vocab-from', modelPath('llama-2-tiny-random.gguf'), big], { encoding: 'utf8', timeout: 300000 });
    assert.equal(r.status, 0, `make_synthetic_gguf.py: ${r.stderr}`);
  }
  const info = runLlmesh(['inspect', big, '--json'], { timeoutMs: 60000 });
  const md = JSON.parse(info.stdout).metadata;
  const nLayer = md[`${md['general.architecture']}.block_count`];
  await splitAcrossNamespaces(t, { gguf: big, nLayer, prompt: 'Hello world', tokens: 24, killAt: 8, label: 'big' });
}));
