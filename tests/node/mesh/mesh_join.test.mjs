// Joining a mesh on loopback: servers and a client join by token and all see each other; a node
// holding the wrong secret is refused (on both sides, with the reason); rotating the secret keeps
// the members and retires the old token.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import {
  Cluster, runLlmesh, modelPath, waitUntilAllSee, aliveCount, statusOf, memberOf, readJsonFile, writeMeshFiles, figure, now,
} from './cluster.mjs';

const cluster = new Cluster();
after(() => cluster.stop());

let a, b, c, token1;

test('two servers and a client join by token; all see 3 alive', cluster.guard(async () => {
  a = await cluster.startServer({ label: 'A', name: 'storyteller' });
  assert.match(a.id, /^[0-9a-f]{64}$/);
  assert.equal(a.joined, undefined, 'the first node joins nobody');
  const inv = await a.invite();
  token1 = inv.token;
  assert.match(token1, /^llmesh1/);
  assert.equal(inv.epoch, 1);
  assert.equal(inv.nodes[0].node_id, a.id);
  assert.equal(inv.nodes[0].address, a.meshAddress);

  const t0 = now();
  b = await cluster.startServer({ label: 'B', model: 'stories260K-q8_0.gguf', name: 'storyteller-q8', join: token1 });
  c = await cluster.startClient({ label: 'C', join: token1 });
  for (const n of [b, c]) {
    assert.equal(n.joined, true, `${n.label} joined`);
    assert.ok(Number.isInteger(n.joinMs) && n.joinMs >= 0 && n.joinMs < 5000, `${n.label} join_ms ${n.joinMs}`);
    assert.ok(n.info.members >= 2, `${n.label} knew ${n.info.members} members when it joined`);
  }
  figure('join_ms_server', b.joinMs, 0);
  figure('join_ms_client', c.joinMs, 0);

  const t = await waitUntilAllSee([a, b, c], (s) => aliveCount(s) === 3, { timeoutMs: 10000, start: t0, label: '3 alive' });
  figure('join_converge_3_ms', t.ms, 0);
  const s = await c.status();
  assert.equal(s.mesh.alive, 3);
  assert.equal(s.mesh.epoch, 1);
  const roles = Object.fromEntries(s.members.map((m) => [m.id, m.state?.role]));
  assert.deepEqual([roles[a.id], roles[b.id], roles[c.id]], ['server', 'server', 'client']);
  assert.equal(memberOf(s, c).self, true);
  // Each side logged the others joining.
  await a.waitFor(new RegExp(`mesh: node ${b.id.slice(0, 12)} \\(server, ${b.meshAddress}\\) joined`));
  await a.waitFor(new RegExp(`mesh: node ${c.id.slice(0, 12)} \\(client, .*\\) joined`));
  // The client lists both servers' models.
  const models = await (await fetch(`${c.baseURL}/models`)).json();
  assert.deepEqual(models.data.map((m) => m.id).sort(), ['storyteller', 'storyteller-q8']);
}));

test('a node with the mesh id but the wrong secret is refused: wrong_secret on both sides', cluster.guard(async () => {
  const mine = readJsonFile(path.join(a.home, 'mesh.json'));
  assert.equal(mine.epoch, 1);
  const home = cluster.newHome();
  writeMeshFiles(home, {
    meshId: mine.mesh_id, secret: randomBytes(32).toString('hex'), epoch: mine.epoch,
    peers: [{ id: a.id, address: a.meshAddress }],
  });
  const since = a.mark();
  // No --join: it rejoins through peers.json, like a restarted member. Every peer refuses it,
  // so it stops with the reason and tells the user to get a new token.
  const r = runLlmesh(['serve', '-m', modelPath('stories260K-f32.gguf'), '--port', '0', '--json', '-c', '64',
                       '-t', '1', '--parallel', '1', '--mesh-port', '0', '--mesh-listen', '127.0.0.1'],
                      { env: { LLMESH_HOME: home }, timeoutMs: 30000 });
  assert.equal(r.code, 1, `E exits 1: ${r.stderr}`);
  assert.match(r.stderr, /not admitted to the mesh: .*wrong_secret \(258\)/);
  assert.match(r.stderr, /--join TOKEN/);
  assert.equal(r.stdout, '', 'no listening line');
  await a.waitFor(/admission refused: peer \w+ at \S+: wrong_secret \(258\)/, { since, timeoutMs: 10000 });
  // E never became a member anywhere, and the mesh is unchanged.
  for (const n of [a, b, c]) {
    const s = await n.status();
    assert.equal(s.members.length, 3, `${n.label} knows only A, B, C`);
    assert.equal(aliveCount(s), 3);
  }
}));

test('rotating the secret: members stay (epoch 2), the old token is refused, the new one works', cluster.guard(async () => {
  const t0 = now();
  const r = await a.invite({ rotate: true });
  assert.equal(r.rotated, true);
  assert.equal(r.epoch, 2);
  assert.notEqual(r.token, token1);
  const t = await waitUntilAllSee([a, b, c], (s) => s.mesh.epoch === 2, { timeoutMs: 5000, start: t0, label: 'epoch 2' });
  figure('rotation_spread_ms', t.ms, 0);
  await b.waitFor(/rotated the mesh secret: now at epoch 2/);
  assert.equal(readJsonFile(path.join(b.home, 'mesh.json')).epoch, 2, "B saved the new secret");
  assert.equal(readJsonFile(path.join(c.home, 'mesh.json')).epoch, 2, "C saved the new secret");
  for (const n of [a, b, c]) assert.equal(aliveCount(await n.status()), 3, `${n.label} still sees 3 alive`);

  // The old token: every seed refuses it (stale epoch), the joiner exits with status 1.
  const since = a.mark();
  const old = await cluster.startClient({ label: 'F', join: token1, wait: false });
  await assert.rejects(old.started, /exited \(code 1/);
  assert.ok(old.grep(/not admitted to the mesh: .*refused( by the peer)?: (stale_epoch|newer_epoch) \(\d+\)/).length,
    `F says why:\n${old.tail(10)}`);
  await a.waitFor(/admission refused: peer \w+ at \S+: (stale_epoch|newer_epoch) \(\d+\)/, { since, timeoutMs: 5000 });

  // The new token works.
  const g = await cluster.startClient({ label: 'G', join: r.token });
  assert.equal(g.joined, true);
  await waitUntilAllSee([a, b, c, g], (s) => aliveCount(s) === 4 && s.mesh.epoch === 2, { timeoutMs: 10000, label: '4 alive at epoch 2' });
  for (const n of [a, b, c, g]) assert.equal((await n.status()).members.length, 4, `${n.label}: F never became a member`);
}));
