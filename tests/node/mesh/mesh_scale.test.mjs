// 20 nodes on loopback (3 servers, 17 API-only clients), each joining with a token from a node
// already running: every node sees 20 alive; then the idle gossip traffic per node.
// Figures (FIGURE name=value): start time of the 20, convergence after the last start, idle
// gossip bytes/s sent per node (median and max).
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { Cluster, waitUntilAllSee, aliveCount, gossipRates, figure, median, sleep } from './cluster.mjs';

const N = Number(process.env.LLMESH_MESH_SCALE_N ?? 20);
const SERVERS = 3;
const IDLE_S = Number(process.env.LLMESH_MESH_IDLE_S ?? 10);

const cluster = new Cluster({ quiet: true, ctx: 64 });
after(() => cluster.stop());

let nodes = [];

test(`${N} nodes (${SERVERS} servers) join by tokens of running nodes and all see ${N} alive`, cluster.guard(async () => {
  // Each joins with a token from a node already running, a different one each time.
  const m = await cluster.startMesh({ servers: SERVERS, clients: N - SERVERS, server: () => ({ name: 'storyteller' }) });
  nodes = m.nodes;
  figure('scale_nodes', N, 0);
  figure('scale_start_all_ms', m.startMs, 0);
  figure('scale_join_ms_median', median(nodes.slice(1).map((n) => n.joinMs)), 0);
  figure('scale_converge_ms', m.converged.ms, 0);
  const s = await nodes[0].status();
  assert.equal(s.mesh.alive, N);
  assert.equal(s.members.filter((m) => m.state?.role === 'server').length, SERVERS);
}));

test('idle gossip traffic per node', cluster.guard(async () => {
  await sleep(2000);  // let the joins' state updates finish spreading
  const r = await gossipRates(nodes, IDLE_S);
  const rows = r.rows.map((x) => `${x.node.label}=${x.bytesPerS.toFixed(0)}`).join(' ');
  console.log(`gossip bytes/s sent per node over ${IDLE_S} s: ${rows}`);
  figure('scale_idle_gossip_bytes_per_s_median', r.median, 0);
  figure('scale_idle_gossip_bytes_per_s_max', r.max, 0);
  figure('scale_idle_gossip_received_bytes_per_s_median', median(r.rows.map((x) => x.receivedPerS)), 0);
  // Sanity bounds, not a benchmark: SWIM probes every 500 ms and gossips every 200 ms, so an idle
  // node sends a little, and never floods.
  assert.ok(r.median > 0, 'idle nodes still probe each other');
  assert.ok(r.max < 50000, `an idle node sends ${r.max.toFixed(0)} B/s`);
  // Still converged after the idle period: nobody was suspected while idle.
  await waitUntilAllSee(nodes, (s) => aliveCount(s) === N, { timeoutMs: 5000, intervalMs: 250, label: `${N} still alive` });
}));
