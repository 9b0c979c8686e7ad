// Public meshes on nostr, against a local relay on loopback (tests/node/discovery/relay.mjs:
// npm @nostr-relay/core + ws; events checked with nostr-tools): a server publishes a signed
// listing of its public mesh; `llmesh discover` finds it (a dead relay skipped); a client and a
// server join it with --auto, falling back past a listed mesh that does not admit them; forged
// and tampered listings are refused; a listing expires when its publisher stops refreshing it;
// a private mesh is never published; per-peer limits answer 429.
import { test, after, before } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import net from 'node:net';
import path from 'node:path';
import { finalizeEvent, generateSecretKey, getPublicKey, verifyEvent, getEventHash } from 'nostr-tools/pure';
import { Cluster, llmeshBin, modelPath, readJsonFile, sleep, now, freePort, figure } from './cluster.mjs';
import { startRelay } from '../discovery/relay.mjs';

const cluster = new Cluster({ prefix: 'llmesh-nostr-' });
let relay;
let deadRelay;  // a ws:// URL where nothing listens
let a;          // the publishing server of the public mesh
let sink;       // a TCP server that closes every connection: the "node" of a trap listing
after(async () => {
  await cluster.stop();
  if (relay) await relay.stop();
  if (sink) sink.close();
});

// `llmesh ARGS` without blocking the event loop (the relay runs in this process).
function llmesh(args, { env = {}, timeoutMs = 30000 } = {}) {
  return new Promise((resolve) => {
    const child = spawn(llmeshBin, args, { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => { stdout += d; });
    child.stderr.on('data', (d) => { stderr += d; });
    const t = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('exit', (code, signal) => {
      clearTimeout(t);
      resolve({ code, signal, stdout, stderr });
    });
  });
}

async function discover(relays, extra = []) {
  const args = ['discover', '--json', '--timeout', '3000', ...extra];
  for (const r of relays) args.push('--relay', r);
  const r = await llmesh(args, { env: { LLMESH_HOME: cluster.newHome() } });
  assert.equal(r.code, 0, `discover exited ${r.code}: ${r.stderr}`);
  return JSON.parse(r.stdout);
}

// The listings of the relay, newest first.
const listings = () => relay.events().filter((e) => e.kind === 30078).sort((x, y) => y.created_at - x.created_at);
const meshIdOf = (node) => readJsonFile(path.join(node.home, 'mesh.json')).mesh_id;

async function until(what, fn, { timeoutMs = 20000, intervalMs = 200 } = {}) {
  const t0 = now();
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (now() - t0 > timeoutMs) throw new Error(`timed out waiting for ${what}`);
    await sleep(intervalMs);
  }
}

before(async () => {
  relay = await startRelay();
  deadRelay = `ws://127.0.0.1:${await freePort()}`;
});

test('serve --publish: a signed listing of a public mesh, without any secret', cluster.guard(async () => {
  a = await cluster.startServer({
    label: 'A', name: 'storyteller',
    args: ['--publish', '--mesh-name', 'nostr-test', '--region', 'loopback-1', '--relay', relay.url, '--relay', deadRelay,
      '--publish-interval', '2', '--peer-rate', '30', '--peer-burst', '6'],
  });
  assert.equal(a.info.public, true);
  const meshFile = readJsonFile(path.join(a.home, 'mesh.json'));
  const ev = await until('A\'s listing on the relay', () => listings().find((e) => e.pubkey === a.info.nostr_pubkey));
  assert.equal(verifyEvent(ev), true, 'nostr-tools verifies the signature and id');
  assert.equal(ev.kind, 30078);
  const tag = (n) => ev.tags.find((t) => t[0] === n)?.[1];
  assert.equal(tag('d'), `llmesh:${meshFile.mesh_id}`);
  assert.equal(tag('t'), 'llmesh');
  const exp = Number(tag('expiration'));
  assert.ok(exp > ev.created_at && exp <= ev.created_at + 6, `expiration ${exp} vs created ${ev.created_at}`);
  const c = JSON.parse(ev.content);
  figure('nostr_listing_event_bytes', JSON.stringify(ev).length, 0);
  assert.equal(c.v, 1);
  assert.equal(c.mesh_id, meshFile.mesh_id);
  assert.equal(c.public, true);
  assert.equal(c.name, 'nostr-test');
  assert.equal(c.region, 'loopback-1');
  assert.deepEqual(c.nodes, [{ address: a.meshAddress, node_id: a.id }]);
  assert.equal(c.models[0].name, 'storyteller');
  assert.equal(c.capacity.servers, 1);
  assert.equal(c.limits.requests_per_minute, 30);
  // The secret (derived from the id for a public mesh) is in neither the content nor the tags.
  assert.ok(!JSON.stringify(ev).includes(meshFile.secret), 'the listing carries no secret');
  // The dead relay does not stop publishing; the status says which relay failed.
  await a.waitFor(/publish: relay ws:\/\/127\.0\.0\.1:\d+ refused or failed/);
  const st = await a.status();
  assert.equal(st.discovery.public, true);
  const pub = st.discovery.publish;
  assert.ok(pub.accepted >= 1);
  assert.equal(pub.relays.find((r) => r.url === relay.url).ok, true);
  assert.equal(pub.relays.find((r) => r.url === deadRelay).ok, false);
  const text = await llmesh(['status'], { env: { LLMESH_HOME: a.home } });
  assert.equal(text.code, 0, text.stderr);
  assert.match(text.stdout, /public mesh \(anyone may join by its id\); listed on 1 of 2 relays, event [0-9a-f]{8}; per peer: 30\/min, 4 at once/);
  // A public mesh has no secret to rotate.
  await assert.rejects(a.invite({ rotate: true }), /public/);
}));

test('a private mesh is never published', cluster.guard(async () => {
  const p = await cluster.startServer({ label: 'P' });  // a private mesh of its own
  const token = (await p.invite()).token;
  const before = relay.received().length;
  // With the private mesh's token, and in the private mesh's own home.
  for (const [home, extra] of [[cluster.newHome(), ['--join', token]], [p.home, []]]) {
    const r = await llmesh(['serve', '-m', modelPath('stories260K-f32.gguf'), '--port', '0', '--mesh-port', '0', '--publish',
      '--relay', relay.url, ...extra], { env: { LLMESH_HOME: home } });
    assert.notEqual(r.code, 0, 'refused');
    assert.match(r.stderr, /is private, and a private mesh is never published/);
  }
  assert.equal(relay.received().length, before, 'nothing reached the relay');
  await p.terminate();
}));

test('discover lists the mesh, skipping a dead relay', cluster.guard(async () => {
  const t0 = now();
  const d = await discover([deadRelay, relay.url]);
  figure('nostr_discover_ms_dead_plus_live_relay', now() - t0, 0);
  const dead = d.relays.find((r) => r.url === deadRelay);
  assert.equal(dead.ok, false);
  assert.ok(dead.error.length > 0);
  assert.equal(d.relays.find((r) => r.url === relay.url).ok, true);
  const m = d.meshes.find((x) => x.mesh_id === meshIdOf(a));
  assert.ok(m, JSON.stringify(d));
  assert.equal(m.name, 'nostr-test');
  assert.equal(m.joinable, true);
  assert.equal(m.reachable_nodes, 1);
  assert.equal(typeof m.rtt_ms, 'number');
  assert.deepEqual(m.models.map((x) => x.name), ['storyteller']);
  // The text form names it too.
  const t = await llmesh(['discover', '--relay', relay.url, '--relay', deadRelay, '--timeout', '3000']);
  assert.equal(t.code, 0, t.stderr);
  assert.match(t.stdout, /nostr-test/);
  assert.match(t.stdout, /skipped/);
}));

test('forged and tampered listings are refused', cluster.guard(async () => {
  // On a relay of their own: a relay keeps one event per id, and A keeps publishing to the main one.
  const evilRelay = await startRelay();
  try {
    const genuine = listings().find((e) => e.pubkey === a.info.nostr_pubkey);
    const c = JSON.parse(genuine.content);
    const evil = { ...c, nodes: [{ address: '127.0.0.1:9', node_id: 'ee'.repeat(32) }] };
    // 1. Content changed, id and signature kept: the id no longer matches.
    evilRelay.inject({ ...genuine, content: JSON.stringify(evil), created_at: genuine.created_at + 1 });
    // 2. Content changed and the id recomputed, the old signature kept.
    const t2 = { ...genuine, content: JSON.stringify({ ...evil, name: 'evil-2' }), created_at: genuine.created_at + 2 };
    t2.id = getEventHash(t2);
    evilRelay.inject(t2);
    // 3. A's public key claimed, signed by another key (id computed over A's key).
    const forged = finalizeEvent({ kind: 30078, created_at: genuine.created_at + 3, tags: genuine.tags, content: JSON.stringify(evil) },
      generateSecretKey());
    const f3 = { ...forged, pubkey: genuine.pubkey };
    f3.id = getEventHash(f3);
    evilRelay.inject(f3);
    const d = await discover([evilRelay.url, relay.url]);
    const r = d.relays.find((x) => x.url === evilRelay.url);
    assert.equal(r.ok, true);
    assert.equal(r.events, 0, JSON.stringify(d));
    assert.equal(r.rejected, 3, JSON.stringify(d));
    assert.equal(r.rejections.filter((x) => /^bad_id/.test(x)).length, 1, JSON.stringify(r.rejections));
    assert.equal(r.rejections.filter((x) => /^bad_signature/.test(x)).length, 2, JSON.stringify(r.rejections));
    const m = d.meshes.find((x) => x.mesh_id === c.mesh_id);
    assert.deepEqual(m.nodes, [{ address: a.meshAddress, node_id: a.id }], 'only the genuine listing counts');
    assert.equal(m.name, 'nostr-test');
    assert.deepEqual(m.relays, [relay.url]);
  } finally {
    await evilRelay.stop();
  }
}));

test('client --auto joins the best mesh, past one that does not admit it, and chats', cluster.guard(async () => {
  // A listing (validly signed by someone else) that ranks higher: a region match and more
  // capacity, but its "node" accepts TCP and closes: joining it fails and the next is tried.
  sink = net.createServer((s) => s.destroy());
  await new Promise((r) => sink.listen(0, '127.0.0.1', r));
  const trapKey = generateSecretKey();
  const trapId = 'ab'.repeat(16);
  const created = Math.floor(Date.now() / 1000);
  relay.inject(finalizeEvent({
    kind: 30078, created_at: created,
    tags: [['d', `llmesh:${trapId}`], ['t', 'llmesh'], ['expiration', String(created + 600)]],
    content: JSON.stringify({
      v: 1, mesh_id: trapId, name: 'trap', region: 'loopback-1', public: true,
      nodes: [{ address: `127.0.0.1:${sink.address().port}`, node_id: getPublicKey(trapKey) }],
      models: [{ name: 'storyteller', nodes: 9, context_length: 4096 }],
      capacity: { nodes: 9, servers: 9, clients: 0, slots: 90, free_slots: 90, tokens_per_second: 5000 },
    }),
  }, trapKey));

  const c = await cluster.startClient({
    label: 'C', args: ['--auto', '--model', 'storyteller', '--region', 'loopback-1', '--relay', deadRelay, '--relay', relay.url,
      '--want', 'qwen3-8b'],
  });
  assert.equal(c.joined, true, c.tail(20));
  figure('nostr_auto_join_ms_after_a_failed_mesh', c.listeningAt - c.spawnedAt, 0);
  assert.equal(c.info.public, true);
  assert.equal(c.info.mesh_id, meshIdOf(a));
  await c.waitFor(/mesh 'trap' abababab did not admit this node: .*trying the next/);
  await c.waitFor(/relay ws:\/\/127\.0\.0\.1:\d+ skipped/);
  const st = await c.status();
  assert.equal(st.discovery.auto.joined, meshIdOf(a));
  assert.equal(st.discovery.auto.tried.length, 2);
  assert.equal(st.discovery.auto.tried[0].ok, false);
  // The client never had a secret: the public mesh admitted it by its id. It serves A's model.
  const r = await c.chat('storyteller', 'Once upon a time', { maxTokens: 8 });
  assert.equal(r.status, 200, JSON.stringify(r.body));
  assert.ok(r.body.choices[0].message.content.length > 0);
  // What the client wants reaches A's listing through gossip.
  await until('qwen3-8b in the listing', () => {
    const l = listings().find((e) => e.pubkey === a.info.nostr_pubkey);
    return l && JSON.parse(l.content).wanted?.includes('qwen3-8b');
  });
  // Per-peer limits of a public mesh: A takes 30 per minute with a burst of 6 from C.
  let limited;
  for (let i = 0; i < 12 && !limited; i++) {
    const x = await c.chat('storyteller', 'Hi', { maxTokens: 1 });
    if (x.status === 429) limited = x;
    else assert.equal(x.status, 200, JSON.stringify(x.body));
  }
  assert.ok(limited, 'a 429 within 12 quick requests');
  assert.equal(limited.body.error.code, 'peer_rate_limited');
  assert.equal(limited.body.error.type, 'rate_limit_error');
  const sa = await a.status();
  assert.ok(sa.discovery.peer_limits.rate_limited >= 1);
  await a.waitFor(/reason peer_rate_limited/);
}));

test('serve --auto joins the mesh that serves its model; with no relay answering it starts its own', cluster.guard(async () => {
  const b = await cluster.startServer({ label: 'B', name: 'storyteller', args: ['--auto', '--relay', relay.url] });
  assert.equal(b.joined, true, b.tail(20));
  assert.equal(b.info.mesh_id, meshIdOf(a));
  const alone = await cluster.startServer({ label: 'E', args: ['--auto', '--relay', deadRelay] });
  await alone.waitFor(/no public mesh to join; started the public mesh/);
  assert.equal(alone.info.public, true);
  assert.notEqual(alone.info.mesh_id, meshIdOf(a));
  // A client that wants a model nobody serves finds nothing, and says so.
  const r = await llmesh(['client', '--auto', '--model', 'no-such-model', '--relay', relay.url, '--port', '0'],
    { env: { LLMESH_HOME: cluster.newHome() } });
  assert.notEqual(r.code, 0);
  assert.match(r.stderr, /no public mesh serving no-such-model to join/);
  await b.terminate();
  await alone.terminate();
}));

test('bad discovery options are refused, naming the option', async () => {
  const home = cluster.newHome();
  const cases = [
    [['client', '--auto', '--relay', 'http://127.0.0.1:1'], /--relay: .*http/],
    [['client', '--auto', '--join', 'llmesh1x', '--relay', relay.url], /--auto and --join/],
    [['client', '--auto', '--region', 'r'.repeat(33), '--relay', relay.url], /--region: at most 32 characters/],
    [['client', '--auto', '--relay', relay.url, ...Array.from({ length: 17 }, (_, i) => ['--want', `m${i}`]).flat()], /--want: at most 16/],
    [['serve', '-m', modelPath('stories260K-f32.gguf'), '--no-mesh', '--publish'], /need the mesh: drop --no-mesh/],
    [['serve', '-m', modelPath('stories260K-f32.gguf'), '--publish', '--mesh-name', 'n'.repeat(65)], /--mesh-name: at most 64/],
    [['discover', '--timeout', '5'], /--timeout/],
  ];
  for (const [args, re] of cases) {
    const r = await llmesh(args, { env: { LLMESH_HOME: home } });
    assert.notEqual(r.code, 0, args.join(' '));
    assert.match(r.stderr, re, args.join(' '));
  }
});

test('a listing expires when its publisher stops refreshing it', cluster.guard(async () => {
  const d = await cluster.startServer({ label: 'D', args: ['--publish', '--mesh-name', 'short-lived', '--relay', relay.url, '--publish-interval', '1'] });
  const id = meshIdOf(d);
  await until('D listed', async () => (await discover([relay.url], ['--no-probe'])).meshes.some((m) => m.mesh_id === id));
  await d.kill();
  const last = listings().find((e) => e.pubkey === d.info.nostr_pubkey);
  const exp = Number(last.tags.find((t) => t[0] === 'expiration')[1]);
  const wait = exp * 1000 - Date.now() + 1200;
  if (wait > 0) await sleep(wait);
  const after = await discover([relay.url], ['--no-probe']);
  assert.ok(!after.meshes.some((m) => m.mesh_id === id), 'the expired listing is gone');
  // A's listing, refreshed every 2 s, is still there.
  assert.ok(after.meshes.some((m) => m.mesh_id === meshIdOf(a)));
}));
