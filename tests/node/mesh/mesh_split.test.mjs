// A model split across real llmesh processes (docs/stages.md): nodes run layer ranges of a
// layer package as pipeline stages, an entry sends hidden states through them, and greedy
// output must equal one node running the whole model, token for token. A stage killed with
// kill -9 in the middle of a streamed answer must not break it: the planner gives its layers to
// another node, the entry rebuilds the lost KV and the stream goes on with the same text.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, readFileSync } from 'node:fs';
import http from 'node:http';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Cluster, runLlmesh, modelPath, now, sleep, figure, streamCompletion } from './cluster.mjs';

const RESUME_BOUND_MS = 8000;  // kill -9 -> next token on the stream
const cluster = new Cluster({ ctx: 256, threads: 1, parallel: 2 });
const NAME = 'stories';
let pkg;
let reference;  // { short, long }: one node, whole model

before(() => {
  pkg = path.join(mkdtempSync(path.join(tmpdir(), 'llmesh-split-pkg-')), 'stories');
  const r = runLlmesh(['package', modelPath('stories260K-f32.gguf'), pkg, '-q']);
  assert.equal(r.code, 0, r.stderr);
});
after(async () => {
  await cluster.stop();
  rmSync(path.dirname(pkg), { recursive: true, force: true });
});

async function complete(node, maxTokens, { prompt = 'Once upon a time', timeoutMs = 60000 } = {}) {
  const r = await fetch(`${node.baseURL}/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ model: 'stories', prompt, max_tokens: maxTokens, temperature: 0 }),
    signal: AbortSignal.timeout(timeoutMs),
  });
  const body = await r.json();
  assert.equal(r.status, 200, `${node.label}: ${JSON.stringify(body)}`);
  return body;
}

const split = async (node) => (await node.status()).split;

async function waitForEntry(nodes, { timeoutMs = 20000 } = {}) {
  const deadline = now() + timeoutMs;
  for (;;) {
    const states = await Promise.all(nodes.map(split));
    if (states.every((s) => s?.entry)) return states;
    if (now() > deadline) throw new Error(`no route over all layers within ${timeoutMs} ms: ${JSON.stringify(states)}`);
    await sleep(200);
  }
}

test('reference: one node with the whole model', cluster.guard(async () => {
  const one = await cluster.startServer({ label: 'whole', name: 'stories' });
  reference = { short: (await complete(one, 40)).choices[0].text, long: (await complete(one, 200)).choices[0].text };
  assert.match(reference.short, /little girl named Lily/);
  await one.terminate();
}));

test('2 stages (--layers 0..2, 2..5): the same greedy text from either node', cluster.guard(async () => {
  const a = await cluster.startServer({ label: 'a', modelPath: pkg, name: NAME, args: ['--layers', '0..2'] });
  const { token } = await a.invite();
  const b = await cluster.startServer({ label: 'b', modelPath: pkg, name: NAME, args: ['--layers', '2..5'], join: token });
  const [sa, sb] = await waitForEntry([a, b]);
  assert.deepEqual(sa.layers, [0, 2]);
  assert.deepEqual(sb.layers, [2, 5]);
  assert.equal((await complete(a, 40)).choices[0].text, reference.short);
  assert.equal((await complete(b, 40)).choices[0].text, reference.short);  // b's entry runs [0, 2) on a
  const st = await split(a);
  assert.deepEqual(st.pipeline.route.map((h) => h.layers), [[0, 2], [2, 5]]);
  assert.equal(st.pipeline.recoveries, 0);
  // Greedy answers need one candidate back per token, not the vocabulary.
  figure('split_2stage_bytes_per_step', (st.pipeline.bytes_sent + st.pipeline.bytes_received) / st.pipeline.steps, 0);
  await Promise.all([a.terminate(), b.terminate()]);
}));

test('3 stages with f32 and q8 hidden states', cluster.guard(async () => {
  const a = await cluster.startServer({ label: 'x', modelPath: pkg, name: NAME, args: ['--layers', '0..1', '--hidden', 'f32'] });
  const { token } = await a.invite();
  const b = await cluster.startServer({ label: 'y', modelPath: pkg, name: NAME, args: ['--layers', '1..3', '--hidden', 'q8'], join: token });
  const c = await cluster.startServer({ label: 'z', modelPath: pkg, name: NAME, args: ['--layers', '3..5'], join: token });
  await waitForEntry([a, b, c]);
  assert.equal((await complete(a, 40)).choices[0].text, reference.short, 'f32: exact');
  assert.deepEqual((await split(a)).pipeline.route.map((h) => h.layers), [[0, 1], [1, 3], [3, 5]]);
  // 8-bit hidden states are approximate: the story starts the same.
  const q8 = (await complete(b, 40)).choices[0].text;
  assert.equal(q8.slice(0, 30), reference.short.slice(0, 30));
  await Promise.all([a, b, c].map((n) => n.terminate()));
}));

test('a stage fetches its layers from a peer that holds them, not from the origin', cluster.guard(async () => {
  // The origin URL has only the small files; the layer files exist only on node "holder".
  const asked = [];
  const origin = http.createServer((req, res) => {
    const name = decodeURIComponent(req.url.slice(1));
    asked.push(name);
    if (!['manifest.json', 'metadata.gguf', 'embeddings.gguf'].includes(name)) {
      res.writeHead(404);
      res.end('not here');
      return;
    }
    const data = readFileSync(path.join(pkg, name));
    const m = /bytes=(\d+)-(\d*)/.exec(req.headers.range ?? '');
    const a = m ? Number(m[1]) : 0, b = m && m[2] ? Number(m[2]) : data.length - 1;
    res.writeHead(m ? 206 : 200, { 'content-length': b - a + 1, ...(m ? { 'content-range': `bytes ${a}-${b}/${data.length}` } : {}) });
    res.end(data.subarray(a, b + 1));
  });
  await new Promise((r) => origin.listen(0, '127.0.0.1', r));
  const cache = mkdtempSync(path.join(tmpdir(), 'llmesh-split-cache-'));
  try {
    const holder = await cluster.startServer({ label: 'holder', modelPath: pkg, name: NAME, args: ['--layers', '0..2'] });
    const { token } = await holder.invite();
    const url = `http://127.0.0.1:${origin.address().port}/`;
    const fetcher = await cluster.startServer({ label: 'fetcher', modelPath: url, name: NAME, join: token,
      args: ['--layers', '2..5', '--fetch-cache', cache] });
    await waitForEntry([holder, fetcher]);
    assert.deepEqual((await split(fetcher)).layers, [2, 5]);
    assert.equal((await complete(fetcher, 40)).choices[0].text, reference.short);
    assert.ok(!asked.some((n) => n.startsWith('layers/') || n === 'output.gguf'), `the origin was asked for ${asked}`);
    const served = (await split(holder)).artifacts_served;
    assert.ok(served.bytes >= 3 * 182464, `the holder served ${JSON.stringify(served)}`);
    await Promise.all([holder.terminate(), fetcher.terminate()]);
  } finally {
    origin.close();
    rmSync(cache, { recursive: true, force: true });
  }
}));

test('--split: a node that joins receives layers, then a stage killed mid-stream is replaced', cluster.guard(async () => {
  // Each node offers 1 MiB: the 1.4 MiB the planner needs (weights + KV) take two nodes.
  const relay = await cluster.startRelay({ seed: 7 });
  const opts = (label) => ({ label, modelPath: pkg, name: NAME, relay, args: ['--split', '--memory', '1M'] });
  const p1 = await cluster.startServer(opts('p1'));
  const s1 = await split(p1);
  assert.equal(s1.entry, false);
  assert.match(s1.plan_error ?? '', /does not fit/);
  const { token } = await p1.invite();
  const p2 = await cluster.startServer({ ...opts('p2'), join: token });
  await waitForEntry([p1, p2]);
  const held = (await Promise.all([p1, p2].map(split))).map((s) => s.layers);
  assert.deepEqual(held.map((l) => l[1] - l[0]).reduce((x, y) => x + y), 5, `the two nodes hold all 5 layers: ${JSON.stringify(held)}`);
  assert.equal((await complete(p1, 40)).choices[0].text, reference.short);

  // A third node: a spare (the model fits on two), and the entry the client talks to.
  const p3 = await cluster.startServer({ ...opts('p3'), join: token });
  await waitForEntry([p3]);
  assert.deepEqual((await split(p3)).layers, [0, 0], 'the spare holds no layers');
  // Slow every link down (5 ms each way) so the stream lasts a few seconds.
  for (const n of [p1, p2, p3]) await relay.fault(n.link, 'latency=5');
  let killedAt = 0, victim = null;
  const r = await streamCompletion(p3, NAME, 'Once upon a time', 200, async (n) => {
    if (n !== 40) return;
    const route = (await split(p3)).pipeline.route;
    victim = [p1, p2].find((x) => x.id === route[0].node);  // the first stage of the pipeline
    killedAt = now();
    await victim.kill();
  });
  assert.ok(victim, 'a stage was killed');
  assert.equal(r.finish, 'length');
  assert.equal(r.text, reference.long, 'the answer is the undisturbed one');
  const resumed = r.times.find((t) => t > killedAt);
  const resumeMs = resumed - killedAt;
  figure('split_kill_to_resume_ms', resumeMs, 0);
  assert.ok(resumeMs < RESUME_BOUND_MS, `resumed after ${resumeMs} ms`);
  const st = await split(p3);
  assert.equal(st.pipeline.recoveries, 1);
  assert.ok(st.pipeline.replayed_tokens >= 40, `rebuilt ${st.pipeline.replayed_tokens} positions`);
  // The spare took the dead node's layers.
  const survivor = [p1, p2].find((x) => x !== victim);
  const layers = [(await split(p3)).layers, (await split(survivor)).layers].sort((x, y) => x[0] - y[0]);
  assert.deepEqual([layers[0][0], layers[1][1]], [0, 5]);
  assert.equal(layers[0][1], layers[1][0]);
  assert.equal((await complete(survivor, 40)).choices[0].text, reference.short);
}));
