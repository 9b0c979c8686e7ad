// 5 nodes on loopback whose every mesh connection goes through the fault relay (one link per
// node: whoever dials node X goes through X's link). With 50 ms latency, 20 ms jitter and 5 %
// loss both ways for FAULT_S seconds, no node may ever see another as dead (suspicions are
// counted, not failed) and requests through a client keep working. Then one node's link is
// blackholed: the others declare it dead within a bound; restored, it refutes and is alive again
// without a restart.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { Cluster, waitUntilAllSee, aliveCount, statusOf, memberOf, figure, now, sleep, summarize } from './cluster.mjs';

const FAULT_S = Number(process.env.LLMESH_MESH_FAULT_S ?? 40);
const FAULTS = 'latency=50 jitter=20 loss=0.05';
const DEAD_BOUND_MS = 8000;     // blackhole -> declared dead by every other node
const REFUTE_BOUND_MS = 15000;  // restore -> alive again everywhere
const MODEL = 'storyteller';

const cluster = new Cluster();
after(() => cluster.stop());

let relay, nodes, servers, clients;

test('5 nodes, every link through the relay', cluster.guard(async () => {
  relay = await cluster.startRelay({ seed: 42 });
  const s1 = await cluster.startServer({ label: 's1', name: MODEL, relay });
  const { token } = await s1.invite();
  const s2 = await cluster.startServer({ label: 's2', name: MODEL, relay, join: token });
  clients = [];
  for (let i = 1; i <= 3; i++) clients.push(await cluster.startClient({ label: `c${i}`, relay, join: token }));
  servers = [s1, s2];
  nodes = [...servers, ...clients];
  // Each node advertises its link: the token and every member's record name relay ports.
  assert.equal(s1.meshAddress, `127.0.0.1:${relay.links.get(s1.link).port}`);
  await waitUntilAllSee(nodes, (s) => aliveCount(s) === 5 && s.members.filter((m) => m.state?.models?.length).length === 2,
    { timeoutMs: 15000, label: '5 alive' });
  // Every pair ends up with one connection (dialed on demand, duplicates dropped), through the
  // link of the node that was dialed.
  let active = 0;
  for (const deadline = now() + 10000; now() < deadline; await sleep(200)) {
    active = 0;
    for (const n of nodes) active += (await relay.stats(n.link)).active;
    if (active === 10) break;
  }
  assert.equal(active, 10, 'the 10 pairs are connected through the relay');
}));

test(`${FAULTS} on every link for ${FAULT_S} s: no node ever seen dead, requests work`, cluster.guard(async () => {
  for (const n of nodes) await relay.fault(n.link, FAULTS);
  const t0 = now();
  const end = t0 + FAULT_S * 1000;
  const suspicions = new Map();  // "observer>target" -> number of polls it was suspect
  const deaths = [];
  let polls = 0, pollErrors = 0;
  const requests = { ok: 0, failed: [] };
  const requester = (async () => {
    let i = 0;
    while (now() < end) {
      const c = clients[i++ % clients.length];
      const r = await c.chat(MODEL, 'Once upon a time', { maxTokens: 8, timeoutMs: 30000, extra: { user: `u${i % 4}` } })
        .catch((e) => ({ status: 0, body: String(e) }));
      if (r.status === 200 && r.body.usage?.completion_tokens === 8) requests.ok++;
      else requests.failed.push(`${c.label}: ${r.status} ${JSON.stringify(r.body).slice(0, 200)}`);
      await sleep(1000);
    }
  })();
  while (now() < end) {
    const tick = now();
    await Promise.all(nodes.map(async (o) => {
      let s;
      try { s = await o.status({ timeoutMs: 2000 }); } catch { pollErrors++; return; }
      for (const m of s.members) {
        if (m.self) continue;
        const target = nodes.find((n) => n.id === m.id)?.label ?? m.id.slice(0, 8);
        if (m.status === 'suspect') suspicions.set(`${o.label}>${target}`, (suspicions.get(`${o.label}>${target}`) ?? 0) + 1);
        if (m.status !== 'alive' && m.status !== 'suspect') deaths.push(`${((now() - t0) / 1000).toFixed(1)} s: ${o.label} sees ${target} ${m.status}`);
      }
      if (s.members.length !== 5) deaths.push(`${o.label} knows ${s.members.length} members: ${summarize(s)}`);
    }));
    polls++;
    await sleep(Math.max(0, 500 - (now() - tick)));
  }
  await requester;
  const stalls = [];
  for (const n of nodes) {
    const st = await relay.stats(n.link);
    stalls.push(st.stalls_up + st.stalls_down);
  }
  const suspectPolls = [...suspicions.values()].reduce((a, b) => a + b, 0);
  console.log(`fault phase: ${polls} polls of 5 nodes, suspect sightings ${JSON.stringify(Object.fromEntries(suspicions))}, relay stalls per link ${stalls.join(' ')}`);
  figure('faults_seconds', FAULT_S, 0);
  figure('faults_suspect_pairs', suspicions.size, 0);
  figure('faults_suspect_polls', suspectPolls, 0);
  figure('faults_relay_stalls', stalls.reduce((a, b) => a + b, 0), 0);
  figure('faults_requests_ok', requests.ok, 0);
  assert.ok(stalls.reduce((a, b) => a + b, 0) > 0, 'the relay did inject losses');
  assert.deepEqual(deaths, [], 'no node was ever seen dead (or missing) under latency, jitter and loss');
  assert.ok(pollErrors <= polls, `status polls failing: ${pollErrors}`);
  assert.deepEqual(requests.failed, [], 'every request through a client was answered');
  assert.ok(requests.ok >= FAULT_S / 3, `requests answered: ${requests.ok}`);
}));

test('blackholing a node\'s link: dead everywhere within the bound; restored, it refutes without a restart', cluster.guard(async () => {
  // The victim must have every one of its connections on its own link (the others dialed it),
  // or its own dials through the others' links would keep it reachable: a partial partition.
  // The first node is the one every joiner dialed.
  let victim = null;
  const perLink = [];
  for (const n of nodes) {
    const st = await relay.stats(n.link);
    perLink.push(`${n.label}:${st.active}`);
    if (!victim && st.active === nodes.length - 1) victim = n;
  }
  assert.ok(victim, `a node whose ${nodes.length - 1} connections all go through its own link (active per link: ${perLink.join(' ')})`);
  const others = nodes.filter((n) => n !== victim);
  const before = memberOf(await others[0].status(), victim);
  const pid = victim.pid;

  const t0 = now();
  await relay.blackhole(victim.link, true);
  const t = await waitUntilAllSee(others, (s) => statusOf(s, victim) === 'dead',
    { timeoutMs: DEAD_BOUND_MS + 10000, start: t0, intervalMs: 100, label: `${victim.label} dead` });
  const slowest = Math.max(...t.seen.values());
  figure('faults_blackhole_dead_ms', slowest, 0);
  assert.ok(slowest < DEAD_BOUND_MS, `declared dead by every node within ${DEAD_BOUND_MS} ms (slowest ${slowest.toFixed(0)} ms)`);
  // Requests through the clients that remain still work (the two servers stay reachable, unless
  // the victim is one of them: the other one serves).
  const c = clients.find((x) => x !== victim);
  const r = await c.chat(MODEL, 'Hello', { maxTokens: 4, timeoutMs: 30000 });
  assert.equal(r.status, 200, JSON.stringify(r.body));

  const t1 = now();
  await relay.restore(victim.link);
  await relay.fault(victim.link, FAULTS);
  const back = await waitUntilAllSee(nodes, (s) => aliveCount(s) === 5,
    { timeoutMs: REFUTE_BOUND_MS + 10000, start: t1, intervalMs: 100, label: 'all 5 alive again' });
  figure('faults_refute_ms', back.ms, 0);
  assert.ok(back.ms < REFUTE_BOUND_MS, `alive again everywhere within ${REFUTE_BOUND_MS} ms (took ${back.ms.toFixed(0)} ms)`);
  assert.equal(victim.pid, pid);
  assert.ok(victim.running, 'the victim was never restarted');
  const after = memberOf(await others[0].status(), victim);
  assert.ok(after.incarnation > before.incarnation, `it refuted with a higher incarnation (${before.incarnation} -> ${after.incarnation})`);
}));
