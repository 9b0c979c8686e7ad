// Failures on loopback, 4 nodes (3 servers of the same model, 1 client): kill -9 one server while
// requests flow through the client (they fail over to the others; every node sees it dead within
// 5 s), SIGTERM another (seen as "left" within 2 s), then restart the killed one from its home
// without a token (it rejoins through peers.json with the same node id).
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import path from 'node:path';
import {
  Cluster, waitUntilAllSee, aliveCount, statusOf, memberOf, figure, now, sleep, readJsonFile,
} from './cluster.mjs';

const KILL_DETECT_BOUND_MS = 5000;
const LEAVE_DETECT_BOUND_MS = 2000;
const MODEL = 'storyteller';

const cluster = new Cluster();
after(() => cluster.stop());

let servers, client, victim, leaver;

const generated = async (node) =>
  Number((await (await fetch(`${node.root}/metrics`)).text()).match(/^llmesh_generated_tokens_total (\d+)/m)[1]);

test('4 nodes: 3 servers of one model and a client, all alive', cluster.guard(async () => {
  const s1 = await cluster.startServer({ label: 's1', name: MODEL });
  const { token } = await s1.invite();
  const s2 = await cluster.startServer({ label: 's2', name: MODEL, join: token });
  const s3 = await cluster.startServer({ label: 's3', name: MODEL, join: token });
  client = await cluster.startClient({ label: 'c1', join: token });
  servers = [s1, s2, s3];
  await waitUntilAllSee([...servers, client], (s) => aliveCount(s) === 4 &&
    s.members.filter((m) => m.state?.models?.length).length === 3, { timeoutMs: 10000, label: '4 alive, 3 models' });
}));

test('kill -9 of the server answering: requests fail over, every node sees it dead within 5 s', cluster.guard(async () => {
  // The server that answers this conversation (routing is sticky) is the one to kill.
  const before = await Promise.all(servers.map(generated));
  const ask = (i) => client.chat(MODEL, 'Once upon a time', { maxTokens: 6, extra: { user: 'failover-test' }, timeoutMs: 30000 })
    .then((r) => ({ i, ...r }), (e) => ({ i, status: 0, body: String(e) }));
  const first = await ask(0);
  assert.equal(first.status, 200, JSON.stringify(first.body));
  const afterFirst = await Promise.all(servers.map(generated));
  victim = servers[afterFirst.findIndex((g, i) => g > before[i])];
  assert.ok(victim, 'one server generated the first answer');
  const others = servers.filter((s) => s !== victim);
  leaver = others[1];

  // Requests back to back through the client, before, during and after the kill.
  let stop = false;
  const results = [];
  const loop = (async () => {
    for (let i = 1; !stop; i++) results.push(await ask(i));
  })();
  await sleep(600);
  const sentBeforeKill = results.length;
  const t0 = now();
  await victim.kill();
  const t = await waitUntilAllSee([client, ...others], (s) => statusOf(s, victim) === 'dead',
    { timeoutMs: KILL_DETECT_BOUND_MS + 10000, start: t0, intervalMs: 50, label: `${victim.label} dead` });
  const slowest = Math.max(...t.seen.values());
  for (const [o, ms] of t.seen) figure(`kill_detect_ms_${o.label}`, ms, 0);
  figure('kill_detect_ms', slowest, 0);
  await sleep(1000);  // a few requests after the mesh knows
  stop = true;
  await loop;

  const failed = results.filter((r) => r.status !== 200);
  assert.deepEqual(failed.map((r) => `#${r.i}: ${r.status} ${JSON.stringify(r.body).slice(0, 200)}`), [],
    `${failed.length} of ${results.length} requests failed around the kill`);
  assert.ok(sentBeforeKill >= 1 && results.length > sentBeforeKill + 1, `requests before/after: ${sentBeforeKill}/${results.length}`);
  figure('failover_requests', results.length, 0);
  // The survivors answered after the kill.
  const final = await Promise.all(others.map(generated));
  assert.ok(final.some((g, i) => g > afterFirst[servers.indexOf(others[i])]), 'another server took over');
  assert.ok(slowest < KILL_DETECT_BOUND_MS, `every node saw ${victim.label} dead within ${KILL_DETECT_BOUND_MS} ms (slowest ${slowest.toFixed(0)} ms)`);
  await client.waitFor(new RegExp(`mesh: node ${victim.id.slice(0, 12)} .* dead`));
}));

test('SIGTERM: every node sees a graceful "left" within 2 s', cluster.guard(async () => {
  const observers = [client, ...servers.filter((s) => s !== victim && s !== leaver)];
  const t0 = now();
  const how = leaver.terminate();
  const t = await waitUntilAllSee(observers, (s) => statusOf(s, leaver) === 'left',
    { timeoutMs: LEAVE_DETECT_BOUND_MS + 8000, start: t0, intervalMs: 50, label: `${leaver.label} left` });
  const slowest = Math.max(...t.seen.values());
  figure('leave_detect_ms', slowest, 0);
  const ended = await how;
  assert.equal(ended.code, 0, `exits 0 on SIGTERM (got ${ended.code}, ${ended.signal})`);
  assert.ok(slowest < LEAVE_DETECT_BOUND_MS, `seen as left within ${LEAVE_DETECT_BOUND_MS} ms (slowest ${slowest.toFixed(0)} ms)`);
  for (const o of observers) assert.notEqual(statusOf(await o.status(), leaver), 'dead', `${o.label}: left, never dead`);
}));

test('the killed node restarts from its home without a token: same id, alive everywhere', cluster.guard(async () => {
  const peersFile = path.join(victim.home, 'peers.json');
  assert.ok(existsSync(peersFile), 'the killed node had saved its peers');
  assert.ok(readJsonFile(peersFile).peers.length >= 1);
  const oldId = victim.id;
  const t0 = now();
  await victim.restart();
  assert.equal(victim.id, oldId, 'same node id (identity.pem kept)');
  assert.equal(victim.joined, true, 'rejoined through peers.json');
  const live = [client, ...servers.filter((s) => s !== leaver)];
  const t = await waitUntilAllSee(live, (s) => statusOf(s, victim) === 'alive' && aliveCount(s) === 3,
    { timeoutMs: 15000, start: t0, label: `${victim.label} alive again` });
  figure('rejoin_ms', t.ms, 0);
  // Its new state record (new mesh port) replaces the old run's everywhere.
  const t2 = await waitUntilAllSee(live, (s) => memberOf(s, victim)?.state?.mesh_address === victim.meshAddress,
    { timeoutMs: 10000, start: t0, label: `${victim.label}'s new address ${victim.meshAddress}`,
      describe: (s) => `${victim.label} at ${memberOf(s, victim)?.state?.mesh_address} (${statusOf(s, victim)}/${memberOf(s, victim)?.incarnation})` });
  figure('rejoin_state_ms', t2.ms, 0);
  // And it serves again through the mesh.
  const r = await victim.chat(MODEL, 'Hello', { maxTokens: 3 });
  assert.equal(r.status, 200);
  const via = await client.chat(MODEL, 'Hello again', { maxTokens: 3 });
  assert.equal(via.status, 200);
}));
