// LAN discovery (`--discovery lan`, docs/lan-discovery.md) between network namespaces llmesh-t1..3
// (scripts/netns), one "host" each on one bridge: A serves a model and starts a mesh; B holds only
// A's mesh secret (its home's mesh.json: no token, no peer, no address) and joins A through the
// announcements it hears, then answers a chat completion with A's model; C belongs to another
// mesh and never joins. A listener in the root namespace captures the announcements on the bridge
// and checks that they carry no part of the secret or of a token. Skipped where namespaces cannot
// be made (scripts/netns exits 77).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import { copyFileSync } from 'node:fs';
import path from 'node:path';
import {
  Cluster, waitUntilAllSee, aliveCount, memberOf, figure, now, netnsUp, netnsDown, netnsAddr, netnsHostAddr,
  readJsonFile, runLlmesh,
} from './cluster.mjs';

const GROUP = '239.255.77.77';
const LAN_PORT = 7412;
const lanArgs = ['--discovery', 'lan', '--lan-interval', '0.5'];
const cluster = new Cluster();
let ns = { ok: false, reason: 'not tried' };
let capture = null;
const captured = [];  // { msg: Buffer, from }
let a, b, c;

before(async () => {
  ns = netnsUp(3);
  if (!ns.ok) return;
  // Joined on the bridge before any node starts: every announcement sent is seen here.
  capture = dgram.createSocket({ type: 'udp4', reuseAddr: true });
  capture.on('message', (msg, rinfo) => captured.push({ msg, from: rinfo.address }));
  await new Promise((resolve) => capture.bind(LAN_PORT, resolve));
  capture.addMembership(GROUP, netnsHostAddr);
});
after(async () => {
  capture?.close();
  await cluster.stop();
  if (!ns.skip) netnsDown();
});

const skipUnless = (t) => {
  if (ns.ok) return false;
  if (ns.skip) { t.skip(`no network namespaces here: ${ns.reason}`); return true; }
  throw new Error(ns.reason);
};

// Polls fn() until it returns a truthy value or the deadline passes.
async function until(fn, { timeoutMs = 15000, intervalMs = 100, label = 'condition' } = {}) {
  const deadline = now() + timeoutMs;
  let last;
  for (;;) {
    try { last = await fn(); } catch (e) { last = undefined; }
    if (last) return last;
    if (now() >= deadline) throw new Error(`${label}: not within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}

const fingerprintOf = (msg) => msg.subarray(8, 24).toString('hex');
const nodeIdOf = (msg) => msg.subarray(24, 56).toString('hex');

test('--discovery refuses an unknown method by name', () => {
  const r = runLlmesh(['client', '--discovery', 'lan,carrier-pigeon', '--port', '0']);
  assert.notEqual(r.code, 0);
  assert.match(r.stderr, /carrier-pigeon/);
});

test('B, holding only the mesh secret, finds A on the LAN and joins', cluster.guard(async (t) => {
  if (skipUnless(t)) return;
  a = await cluster.startServer({ label: 'A', netns: 1, name: 'storyteller', args: lanArgs });
  const home = cluster.newHome();
  copyFileSync(path.join(a.home, 'mesh.json'), path.join(home, 'mesh.json'));  // the secret only
  const t0 = now();
  b = await cluster.startClient({ label: 'B', netns: 2, home, args: lanArgs });
  assert.equal(b.joined, undefined, 'B had nothing to join at start');
  await b.waitFor(/waiting for nodes of mesh [0-9a-f]{8} on the LAN/);
  const w = await waitUntilAllSee([a, b], (s) => aliveCount(s) === 2 && s.members.length === 2,
    { timeoutMs: 15000, start: t0, label: 'A and B alive' });
  figure('lan_join_ms', w.ms, 0);
  // Whichever heard the other first dialled: usually A, answering B's query.
  const joinedLine = /joined the mesh through node [0-9a-f]+ found on the LAN/;
  await Promise.any([a.waitFor(joinedLine), b.waitFor(joinedLine)]);
  // B hears A's announcements too (A may have dialled before the first of them arrived).
  const s = await until(async () => {
    const x = await b.status();
    return x.lan.peers.some((p) => p.node_id === a.id) && x;
  }, { label: 'B hears A' });
  assert.equal(memberOf(s, a).state.mesh_address, a.meshAddress);
  assert.equal(s.lan.group, GROUP);
  assert.ok(s.lan.matched >= 1, JSON.stringify(s.lan));
  assert.ok(s.lan.peers.some((p) => p.node_id === a.id && p.address === a.meshAddress), JSON.stringify(s.lan.peers));
  const sa = await a.status();
  assert.ok(s.lan.joins.ok + sa.lan.joins.ok >= 1, 'a join through the LAN');
  const announced = sa.lan.peers.find((p) => p.node_id === b.id);
  assert.ok(announced, 'A hears B');
  assert.equal(announced.role, 'client');
  assert.equal(announced.address, b.meshAddress);
}));

test('B answers a chat completion with A\'s model through the mesh', cluster.guard(async (t) => {
  if (skipUnless(t)) return;
  await until(async () => memberOf(await b.status(), a)?.state?.models?.length, { label: 'A\'s model known to B' });
  const r = await b.chat('storyteller', 'Once upon a time', { maxTokens: 6 });
  assert.equal(r.status, 200, JSON.stringify(r.body));
  assert.equal(r.body.model, 'storyteller');
  assert.equal(r.body.usage.completion_tokens, 6);
}));

test('C, of another mesh, hears the announcements and never joins', cluster.guard(async (t) => {
  if (skipUnless(t)) return;
  c = await cluster.startServer({ label: 'C', netns: 3, name: 'other', args: lanArgs });
  // Several announcements of A and B reach C (0.5 s apart), and C's reach A.
  await until(async () => (await c.status()).lan.other_mesh >= 6, { label: 'C counts A\'s and B\'s announcements' });
  await until(async () => (await a.status()).lan.other_mesh >= 1, { label: 'A counts C\'s announcements' });
  const sc = await c.status();
  assert.equal(sc.lan.matched, 0);
  assert.deepEqual(sc.lan.peers, []);
  assert.equal(sc.lan.joins.tried, 0);
  assert.equal(sc.members.length, 1, 'C is alone in its mesh');
  for (const n of [a, b]) {
    const s = await n.status();
    assert.equal(memberOf(s, c), undefined, `${n.label}'s members never include C`);
    assert.equal(s.members.length, 2);
    assert.ok(!s.lan.peers.some((p) => p.node_id === c.id));
  }
}));

test('the announcements on the wire carry no part of the secret or of a token', cluster.guard(async (t) => {
  if (skipUnless(t)) return;
  const secret = Buffer.from(readJsonFile(path.join(a.home, 'mesh.json')).secret, 'hex');
  const { token } = await a.invite();
  const fromA = captured.filter((x) => x.from === netnsAddr(1));
  const fromB = captured.filter((x) => x.from === netnsAddr(2));
  const fromC = captured.filter((x) => x.from === netnsAddr(3));
  for (const [who, list] of [['A', fromA], ['B', fromB], ['C', fromC]]) assert.ok(list.length >= 2, `captured ${who}'s announcements`);
  for (const { msg } of captured) {
    assert.equal(msg.subarray(0, 4).toString('latin1'), 'LMLD');
    assert.equal(msg.length, 72);
    for (let i = 0; i + 4 <= secret.length; i++) assert.equal(msg.indexOf(secret.subarray(i, i + 4)), -1, 'a piece of the secret');
    const text = msg.toString('latin1');
    for (let i = 0; i + 8 <= token.length; i++) assert.ok(!text.includes(token.slice(i, i + 8)), 'a piece of the token');
  }
  // One fingerprint for A's mesh, another for C's; the node ids are the nodes'.
  assert.equal(new Set([...fromA, ...fromB].map((x) => fingerprintOf(x.msg))).size, 1);
  assert.notEqual(fingerprintOf(fromC[0].msg), fingerprintOf(fromA[0].msg));
  assert.ok(fromA.every((x) => nodeIdOf(x.msg) === a.id));
  assert.ok(fromB.every((x) => nodeIdOf(x.msg) === b.id));
  assert.equal(fromA.at(-1).msg.readUInt16BE(56), Number(a.meshAddress.split(':')[1]));
  assert.equal(fromA.at(-1).msg.readUInt16BE(58), 2, 'A announces 2 members alive');
}));

test('after a rotation A and B announce the new fingerprint and stay one mesh', cluster.guard(async (t) => {
  if (skipUnless(t)) return;
  const old = fingerprintOf(captured.filter((x) => x.from === netnsAddr(1)).at(-1).msg);
  const since = captured.length;
  await a.invite({ rotate: true });
  const fresh = (who) => captured.slice(since).filter((x) => x.from === netnsAddr(who) && fingerprintOf(x.msg) !== old);
  await until(() => fresh(1).length && fresh(2).length, { timeoutMs: 10000, label: 'the new fingerprint from A and B' });
  assert.equal(fingerprintOf(fresh(1)[0].msg), fingerprintOf(fresh(2)[0].msg));
  const [sa, sb] = [await a.status(), await b.status()];
  assert.equal(sb.mesh.epoch, 2);
  assert.equal(aliveCount(sa), 2);
  assert.equal(aliveCount(sb), 2);
  assert.equal(memberOf(sa, c), undefined);
}));
