// Three "hosts": network namespaces llmesh-t1..3 (scripts/netns), each node's mesh and API on its
// own address 10.77.0.I. They join by token; a request from the host to node 3 (a client) is
// answered by node 1's model; a kill -9 is detected across the bridge. Skipped where namespaces
// cannot be made (scripts/netns exits 77: not root, no `ip netns`...).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  Cluster, waitUntilAllSee, aliveCount, statusOf, memberOf, figure, now, netnsUp, netnsDown, netnsAddr,
} from './cluster.mjs';

const KILL_DETECT_BOUND_MS = 5000;
const cluster = new Cluster();
let ns = { ok: false, reason: 'not tried' };
let n1, n2, n3;

before(() => { ns = netnsUp(3); });
after(async () => {
  await cluster.stop();
  if (!ns.skip) netnsDown();  // also after a failed `up`: it leaves nothing behind
});

const skipUnless = (t) => {
  if (ns.ok) return false;
  if (ns.skip) { t.skip(`no network namespaces here: ${ns.reason}`); return true; }
  throw new Error(ns.reason);
};

const generated = async (node) =>
  Number((await (await fetch(`${node.root}/metrics`)).text()).match(/^llmesh_generated_tokens_total (\d+)/m)[1]);

test('3 nodes in 3 namespaces join by token', cluster.guard(async (t) => {
  if (skipUnless(t)) return;
  n1 = await cluster.startServer({ label: 'n1', netns: 1, name: 'storyteller' });
  assert.equal(n1.meshAddress.split(':')[0], netnsAddr(1));
  assert.equal(n1.root, `http://${netnsAddr(1)}:${n1.apiPort}`);
  const { token } = await n1.invite();  // from the host, through node.json's API address
  n2 = await cluster.startServer({ label: 'n2', netns: 2, name: 'storyteller-q8', model: 'stories260K-q8_0.gguf', join: token });
  n3 = await cluster.startClient({ label: 'n3', netns: 3, join: token });
  for (const n of [n2, n3]) assert.equal(n.joined, true, `${n.label} joined`);
  const w = await waitUntilAllSee([n1, n2, n3], (s) => aliveCount(s) === 3 &&
    s.members.filter((m) => m.state?.models?.length).length === 2, { timeoutMs: 10000, start: n3.listeningAt, label: '3 alive' });
  figure('netns_converge_ms', w.ms, 0);
  const s = await n3.status();
  assert.equal(memberOf(s, n1).state.mesh_address, n1.meshAddress);
  assert.equal(memberOf(s, n2).state.mesh_address.split(':')[0], netnsAddr(2));
}));

test('a request from the host to node 3 is answered by node 1\'s model', cluster.guard(async (t) => {
  if (skipUnless(t)) return;
  const [g1, g2] = [await generated(n1), await generated(n2)];
  const r = await n3.chat('storyteller', 'Once upon a time', { maxTokens: 6 });
  assert.equal(r.status, 200, JSON.stringify(r.body));
  assert.equal(r.body.model, 'storyteller');
  assert.equal(r.body.usage.completion_tokens, 6);
  const direct = await n1.chat('storyteller', 'Once upon a time', { maxTokens: 6 });
  assert.equal(r.body.choices[0].message.content, direct.body.choices[0].message.content);
  assert.equal(await generated(n1) - g1, 12, 'node 1 generated both answers');
  assert.equal(await generated(n2) - g2, 0);
  const models = await (await fetch(`${n3.baseURL}/models`)).json();
  assert.deepEqual(models.data.map((m) => m.id).sort(), ['storyteller', 'storyteller-q8']);
}));

test('kill -9 of node 2: the other namespaces see it dead within 5 s', cluster.guard(async (t) => {
  if (skipUnless(t)) return;
  const t0 = now();
  await n2.kill();
  const w = await waitUntilAllSee([n1, n3], (s) => statusOf(s, n2) === 'dead',
    { timeoutMs: KILL_DETECT_BOUND_MS + 10000, start: t0, intervalMs: 50, label: 'n2 dead' });
  const slowest = Math.max(...w.seen.values());
  figure('netns_kill_detect_ms', slowest, 0);
  assert.ok(slowest < KILL_DETECT_BOUND_MS, `seen dead within ${KILL_DETECT_BOUND_MS} ms (slowest ${slowest.toFixed(0)} ms)`);
  const r = await n3.chat('storyteller', 'Hello', { maxTokens: 3 });
  assert.equal(r.status, 200);
}));
