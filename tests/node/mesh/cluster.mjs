// A harness for multi-node tests and benchmarks: real `llmesh serve` / `llmesh client`
// processes, each with its own temporary $LLMESH_HOME, on loopback or inside network namespaces
// (scripts/netns), optionally behind the fault relay (llmesh_fault_relay). docs/testing-mesh.md,
// "Multi-node tests", describes it.
//
//   const cluster = new Cluster();                       // after(() => cluster.stop())
//   const a = await cluster.startServer({ name: 'storyteller' });
//   const b = await cluster.startServer({ join: (await a.invite()).token });
//   const c = await cluster.startClient({ join: (await a.invite()).token });
//   const t = await waitUntilAllSee([a, b, c], (s) => aliveCount(s) === 3);   // t.ms, t.at
//   await b.kill();  await b.restart();  await c.terminate();
//   const relay = await cluster.startRelay();  const d = await cluster.startServer({ relay });
//   await relay.fault(d.link, 'latency=50 jitter=20 loss=0.05');
//
// Environment: LLMESH_BIN_DIR (llmesh, llmesh_fault_relay; default build/bin), LLMESH_SHARED
// (test data; default ../shared), LLMESH_MESH_KEEP=1 keeps the homes (and their stderr.log) after
// the run, LLMESH_MESH_VERBOSE=1 echoes every node's stderr as it comes.
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync, createWriteStream, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import net from 'node:net';
import path from 'node:path';
import readline from 'node:readline';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
export const repoDir = path.resolve(here, '..', '..', '..');
export const binDir = process.env.LLMESH_BIN_DIR ?? path.join(repoDir, 'build', 'bin');
export const sharedDir = process.env.LLMESH_SHARED ?? path.resolve(repoDir, '..', 'shared');
export const modelPath = (name) => path.join(sharedDir, 'models', name);
export const llmeshBin = path.join(binDir, 'llmesh');
export const relayBin = path.join(binDir, 'llmesh_fault_relay');
export const netnsScript = path.join(repoDir, 'scripts', 'netns');

const keepHomes = process.env.LLMESH_MESH_KEEP === '1';
const verbose = process.env.LLMESH_MESH_VERBOSE === '1';

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
export const now = () => performance.now();  // ms, monotonic: every timing helper uses it

// ---------------------------------------------------------------------------------------------
// Every child of every cluster, killed when this process exits however it exits (a failed
// assertion, an uncaught error, Ctrl-C, the test runner's SIGTERM on timeout).
const children = new Set();
const exitHandlers = [];
function killAllChildren() {
  for (const c of children) {
    try { c.kill('SIGKILL'); } catch { /* gone */ }
  }
  children.clear();
}
process.on('exit', (code) => {
  for (const h of exitHandlers) { try { h(code); } catch { /* best effort */ } }
  killAllChildren();
});
for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
  process.once(sig, () => { killAllChildren(); process.exit(128 + (sig === 'SIGINT' ? 2 : sig === 'SIGTERM' ? 15 : 1)); });
}

function track(child) {
  children.add(child);
  child.once('exit', () => children.delete(child));
  return child;
}

// A free TCP port on `host` (bound and released: another process could take it in between, so
// use it at once).
export function freePort(host = '127.0.0.1') {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.unref();
    s.on('error', reject);
    s.listen(0, host, () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

// Runs `llmesh ARGS` to completion (invite, status...) with the given environment.
export function runLlmesh(args, { env = {}, timeoutMs = 20000 } = {}) {
  const r = spawnSync(llmeshBin, args, { env: { ...process.env, ...env }, encoding: 'utf8', timeout: timeoutMs });
  return { code: r.status, signal: r.signal, stdout: r.stdout ?? '', stderr: r.stderr ?? '', error: r.error };
}

// ---------------------------------------------------------------------------------------------
// Status helpers: `s` is a /mesh/status JSON object.
export const idOf = (x) => (typeof x === 'string' ? x : x.id);
export function memberOf(s, who) {
  const id = idOf(who);
  return s?.members?.find((m) => m.id === id || (id.length < 64 && m.id.startsWith(id)));
}
export const statusOf = (s, who) => memberOf(s, who)?.status;  // alive|suspect|dead|left|undefined
export const aliveCount = (s) => s?.members?.filter((m) => m.status === 'alive').length ?? 0;
export const countByStatus = (s) => {
  const out = { alive: 0, suspect: 0, dead: 0, left: 0 };
  for (const m of s?.members ?? []) out[m.status] = (out[m.status] ?? 0) + 1;
  return out;
};

async function fetchJson(url, { timeoutMs = 5000, ...init } = {}) {
  const r = await fetch(url, { ...init, signal: AbortSignal.timeout(timeoutMs) });
  const text = await r.text();
  let body;
  try { body = JSON.parse(text); } catch { body = text; }
  return { status: r.status, body };
}

// Polls every observer's /mesh/status (all at once, every `intervalMs`) until
// `predicate(status, observer)` holds for each of them. Resolves with
//   { ms, at, start, seen: Map(observer -> ms after start when it first held), polls }
// (`at` and `start` are performance.now() values: compare with other timings taken with now()).
// An observer whose status cannot be read counts as not seeing it yet. On timeout it rejects
// with what each observer that did not see it last saw (`describe(status)` if given).
export async function waitUntilAllSee(observers, predicate, {
  timeoutMs = 20000, intervalMs = 100, start = now(), label = 'condition', describe = summarize,
} = {}) {
  const seen = new Map();
  const last = new Map();
  let polls = 0;
  const deadline = now() + timeoutMs;
  for (;;) {
    polls++;
    const pending = observers.filter((o) => !seen.has(o));
    await Promise.all(pending.map(async (o) => {
      let s = null;
      try { s = await o.status({ timeoutMs: Math.max(500, Math.min(3000, deadline - now())) }); } catch (e) { last.set(o, `error: ${e.message}`); return; }
      last.set(o, s);
      let ok = false;
      try { ok = !!predicate(s, o); } catch { ok = false; }
      if (ok) seen.set(o, now() - start);
    }));
    if (seen.size === observers.length) {
      const at = now();
      return { ms: at - start, at, start, seen, polls };
    }
    if (now() >= deadline) {
      const lines = observers.filter((o) => !seen.has(o)).map((o) => {
        const s = last.get(o);
        return `  ${o.label}: ${typeof s === 'string' ? s : describe(s)}`;
      });
      throw new Error(`${label}: not seen by ${observers.length - seen.size} of ${observers.length} nodes within ${timeoutMs} ms\n${lines.join('\n')}`);
    }
    await sleep(intervalMs);
  }
}

// One line per member: "id12 status inc".
export function summarize(s) {
  if (!s || !s.members) return String(s);
  return s.members.map((m) => `${m.id.slice(0, 12)}${m.self ? '*' : ''}=${m.status}/${m.incarnation}`).join(' ');
}

// Gossip bytes sent per second by each node over `seconds` (from /mesh/status counters read at
// two times): [{ node, bytesPerS, receivedPerS }], plus the median.
export async function gossipRates(nodes, seconds) {
  const read = async () => Promise.all(nodes.map(async (n) => ({ t: now(), g: (await n.status()).gossip })));
  const a = await read();
  await sleep(seconds * 1000);
  const b = await read();
  const rows = nodes.map((n, i) => {
    const dt = (b[i].t - a[i].t) / 1000;
    return {
      node: n,
      bytesPerS: (b[i].g.bytes_sent - a[i].g.bytes_sent) / dt,
      receivedPerS: (b[i].g.bytes_received - a[i].g.bytes_received) / dt,
    };
  });
  return { rows, median: median(rows.map((r) => r.bytesPerS)), max: Math.max(...rows.map((r) => r.bytesPerS)) };
}

// A streamed greedy /v1/completions on `node`; onChunk(n) runs (awaited) after the n-th
// non-empty text chunk. Resolves with { text, times (arrival of each chunk), finish }; an error
// event in the stream throws.
export async function streamCompletion(node, model, prompt, maxTokens, onChunk = () => {}, { timeoutMs = 300000 } = {}) {
  const r = await fetch(`${node.baseURL}/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ model, prompt, max_tokens: maxTokens, temperature: 0, stream: true }),
    signal: AbortSignal.timeout(timeoutMs),
  });
  if (r.status !== 200) throw new Error(`${node.label}: HTTP ${r.status}: ${await r.text()}`);
  const decoder = new TextDecoder();
  let buf = '', text = '', finish = null;
  const times = [];
  for await (const part of r.body) {
    buf += decoder.decode(part, { stream: true });
    let i;
    while ((i = buf.indexOf('\n\n')) >= 0) {
      const ev = buf.slice(0, i);
      buf = buf.slice(i + 2);
      if (!ev.startsWith('data: ') || ev === 'data: [DONE]') continue;
      const j = JSON.parse(ev.slice(6));
      if (j.error) throw new Error(`stream error: ${JSON.stringify(j.error)}`);
      const c = j.choices?.[0];
      if (c?.text) {
        text += c.text;
        times.push(now());
        await onChunk(times.length);
      }
      if (c?.finish_reason) finish = c.finish_reason;
    }
  }
  return { text, times, finish };
}

export function median(xs) {
  const v = [...xs].sort((p, q) => p - q);
  if (!v.length) return NaN;
  const m = v.length >> 1;
  return v.length % 2 ? v[m] : (v[m - 1] + v[m]) / 2;
}

// A figure line the benchmark and the CI log parse: FIGURE name=value
export function figure(name, value, digits = 1) {
  const v = typeof value === 'number' ? Number(value.toFixed(digits)) : value;
  console.log(`FIGURE ${name}=${v}`);
  return v;
}

// ---------------------------------------------------------------------------------------------
// One llmesh process (a `serve` or `client` node). Made by Cluster.startServer/startClient.
export class Node {
  constructor(cluster, spec) {
    this.cluster = cluster;
    this.spec = spec;            // how to start it again: { kind, args, home, netns, label, ... }
    this.kind = spec.kind;
    this.label = spec.label;
    this.home = spec.home;
    this.lines = [];             // stderr, one entry per line, across restarts
    this.runs = 0;
    this.waiters = [];
  }

  get running() { return this.child && this.child.exitCode === null && this.child.signalCode === null; }
  get pid() { return this.child?.pid; }

  // Spawns the process; resolves once the {"event":"listening"} line arrived (the join, when
  // there is one, is done by then). Rejects if it exits first (`this.exit` tells how).
  async spawn({ timeoutMs = 30000, extraArgs = [] } = {}) {
    const { args, netns } = this.spec;
    const full = [...args, ...extraArgs];
    const env = { ...process.env, LLMESH_HOME: this.home, ...this.spec.env };
    delete env.LLMESH_JOIN;
    const [cmd, cargs] = netns ? [netnsScript, ['exec', String(netns), llmeshBin, ...full]] : [llmeshBin, full];
    this.runs++;
    this.exit = null;
    this.info = null;
    this.spawnedAt = now();
    this.lines.push(`--- run ${this.runs}: llmesh ${full.join(' ')}`);
    const child = track(spawn(cmd, cargs, { env, stdio: ['ignore', 'pipe', 'pipe'] }));
    this.child = child;
    const log = createWriteStream(path.join(this.home, 'stderr.log'), { flags: 'a' });
    this.exited = new Promise((resolve) => {
      child.once('exit', (code, signal) => {
        this.exit = { code, signal, at: now() };
        resolve(this.exit);
      });
    });
    readline.createInterface({ input: child.stderr }).on('line', (line) => {
      this.lines.push(line);
      log.write(line + '\n');
      if (verbose) process.stderr.write(`[${this.label}] ${line}\n`);
      this.waiters = this.waiters.filter((w) => !w.check(line));
    });
    child.once('exit', () => setTimeout(() => log.end(), 100));
    const listening = new Promise((resolve) => {
      readline.createInterface({ input: child.stdout }).on('line', (line) => {
        let j;
        try { j = JSON.parse(line); } catch { return; }
        if (j.event === 'listening') resolve(j);
      });
    });
    let timer;
    const info = await Promise.race([
      listening,
      this.exited.then((e) => { throw new Error(`${this.label} exited (code ${e.code}, signal ${e.signal}) before listening:\n${this.tail(15)}`); }),
      new Promise((_, reject) => { timer = setTimeout(() => reject(new Error(`${this.label} did not listen within ${timeoutMs} ms:\n${this.tail(15)}`)), timeoutMs); }),
    ]).finally(() => clearTimeout(timer));
    this.listeningAt = now();
    this.info = info;
    this.id = info.node_id;
    this.apiPort = info.port;
    this.apiHost = this.spec.apiHost;
    this.root = `http://${this.apiHost}:${info.port}`;
    this.baseURL = `${this.root}/v1`;
    this.meshAddress = info.mesh_address;
    this.joined = info.joined;
    this.joinMs = info.join_ms;
    // The web console's URL (docs/console.md) when the node serves one, e.g. with --console-port 0.
    this.console = info.console ?? null;
    return info;
  }

  // Starts without waiting for the listening line: for a node expected to exit (refused).
  spawnNoWait(opts) {
    const p = this.spawn(opts);
    p.catch(() => {});
    return p;
  }

  // The mark of "now" in the log: waitFor(re, { since }) looks only at lines after it.
  mark() { return this.lines.length; }

  // Resolves with the first stderr line matching `re` (from `since`, default the beginning of
  // all runs), or rejects after timeoutMs with the log's tail.
  waitFor(re, { timeoutMs = 10000, since = 0 } = {}) {
    for (let i = since; i < this.lines.length; i++) if (re.test(this.lines[i])) return Promise.resolve(this.lines[i]);
    return new Promise((resolve, reject) => {
      const w = {
        check: (line) => {
          if (!re.test(line)) return false;
          clearTimeout(w.timer);
          resolve(line);
          return true;
        },
      };
      w.timer = setTimeout(() => {
        this.waiters = this.waiters.filter((x) => x !== w);
        reject(new Error(`${this.label}: no log line matching ${re} within ${timeoutMs} ms:\n${this.tail(20)}`));
      }, timeoutMs);
      this.waiters.push(w);
    });
  }

  grep(re) { return this.lines.filter((l) => re.test(l)); }
  tail(n = 20) { return this.lines.slice(-n).map((l) => `    [${this.label}] ${l}`).join('\n'); }

  async status({ timeoutMs = 3000 } = {}) {
    const r = await fetchJson(`${this.root}/mesh/status`, { timeoutMs });
    if (r.status !== 200) throw new Error(`${this.label} /mesh/status: HTTP ${r.status}`);
    return r.body;
  }

  // POST /v1/chat/completions (non-streamed): { status, body }.
  chat(model, content, { maxTokens = 12, timeoutMs = 60000, extra = {} } = {}) {
    return fetchJson(`${this.baseURL}/chat/completions`, {
      method: 'POST', timeoutMs, headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ model, messages: [{ role: 'user', content }], max_tokens: maxTokens, temperature: 0, ...extra }),
    });
  }

  // `llmesh invite --json` against this node's home: { token, epoch, mesh_id, nodes, ... }.
  async invite({ rotate = false, expires } = {}) {
    const args = ['invite', '--json'];
    if (rotate) args.push('--rotate');
    if (expires) args.push('--expires', expires);
    const r = runLlmesh(args, { env: { LLMESH_HOME: this.home } });
    if (r.code !== 0) throw new Error(`llmesh invite (${this.label}) exited ${r.code}: ${r.stderr}`);
    return JSON.parse(r.stdout);
  }

  // kill -9; resolves when it is gone.
  async kill() {
    if (!this.running) return this.exit;
    this.child.kill('SIGKILL');
    return this.exited;
  }

  // SIGTERM (graceful leave); SIGKILL after graceMs. Resolves with { code, signal, at }.
  async terminate({ graceMs = 8000 } = {}) {
    if (!this.running) return this.exit;
    this.child.kill('SIGTERM');
    const t = setTimeout(() => this.child.kill('SIGKILL'), graceMs);
    const e = await this.exited;
    clearTimeout(t);
    return e;
  }

  // Starts again with the same home (identity, mesh secret, peers.json) and arguments; without
  // --join unless `join` is given, so it rejoins through its saved peers.
  async restart({ join, timeoutMs } = {}) {
    if (this.running) await this.terminate();
    const args = [];
    for (let i = 0; i < this.spec.args.length; i++) {
      if (this.spec.args[i] === '--join') { i++; continue; }
      args.push(this.spec.args[i]);
    }
    if (join) args.push('--join', join);
    this.spec.args = args;
    return this.spawn({ timeoutMs });
  }
}

// ---------------------------------------------------------------------------------------------
// The fault relay: one llmesh_fault_relay process, driven over its control port.
export class Relay {
  constructor(cluster, { bind = '127.0.0.1', seed } = {}) {
    this.cluster = cluster;
    this.bind = bind;
    this.seed = seed;
    this.queue = [];
    this.buffer = '';
    this.links = new Map();  // name -> { port, host, targetPort }
  }

  async start({ timeoutMs = 10000 } = {}) {
    const args = ['--control', '0', '--bind', this.bind];
    if (this.seed !== undefined) args.push('--seed', String(this.seed));
    this.child = track(spawn(relayBin, args, { stdio: ['pipe', 'pipe', 'pipe'] }));
    this.lines = [];
    this.child.stderr.on('data', (d) => this.lines.push(String(d)));
    this.controlPort = await new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`the fault relay did not start: ${this.lines.join('')}`)), timeoutMs);
      readline.createInterface({ input: this.child.stdout }).on('line', (line) => {
        const m = /^control (\d+)/.exec(line);
        if (m) { clearTimeout(timer); resolve(Number(m[1])); }
      });
      this.child.once('exit', (code) => { clearTimeout(timer); reject(new Error(`the fault relay exited (${code}): ${this.lines.join('')}`)); });
    });
    this.socket = net.connect(this.controlPort, this.bind);
    await new Promise((resolve, reject) => { this.socket.once('connect', resolve); this.socket.once('error', reject); });
    this.socket.setEncoding('utf8');
    this.socket.on('data', (d) => {
      this.buffer += d;
      let i;
      while ((i = this.buffer.indexOf('\n')) >= 0) {
        const line = this.buffer.slice(0, i);
        this.buffer = this.buffer.slice(i + 1);
        const w = this.queue.shift();
        if (w) w(line);
      }
    });
    this.socket.on('error', () => {});
    return this;
  }

  // Sends one command line; resolves with the reply line, rejects on `error: ...`.
  command(line) {
    return new Promise((resolve, reject) => {
      this.queue.push((reply) => (reply.startsWith('error') ? reject(new Error(`relay: ${line}: ${reply}`)) : resolve(reply)));
      this.socket.write(line + '\n');
    });
  }

  // A link NAME: connections to the returned port go to host:port.
  async addLink(name, host, port, listenPort = 0) {
    const r = await this.command(`link add ${name} ${listenPort} ${host} ${port}`);
    const p = Number(/port=(\d+)/.exec(r)[1]);
    this.links.set(name, { port: p, host, targetPort: port });
    return p;
  }
  fault(name, settings, direction = 'both') { return this.command(`fault ${name} ${direction} ${settings}`); }
  async faultAll(settings, direction = 'both') { for (const n of this.links.keys()) await this.fault(n, settings, direction); }
  blackhole(name, on = true) { return this.command(`blackhole ${name} ${on ? 'on' : 'off'}`); }
  restore(name) { return this.command(`restore ${name}`); }
  cut(name) { return this.command(`cut ${name}`); }
  reset(name) { return this.command(`reset ${name}`); }
  // { up, down, connections, active, stalls_up, stalls_down, blackhole }
  async stats(name) {
    const r = await this.command(`stats ${name}`);
    const out = {};
    for (const [, k, v] of r.matchAll(/(\w+)=(\S+)/g)) out[k] = /^\d+$/.test(v) ? Number(v) : v;
    return out;
  }

  async stop() {
    if (!this.child || this.child.exitCode !== null || this.child.signalCode !== null) return;
    const gone = new Promise((r) => this.child.once('exit', r));
    try { this.socket.write('shutdown\n'); } catch { /* closed */ }
    const t = setTimeout(() => this.child.kill('SIGKILL'), 2000);
    await gone;
    clearTimeout(t);
    this.socket.destroy();
  }
}

// ---------------------------------------------------------------------------------------------
// Network namespaces (scripts/netns): up(n) -> true, or false when this machine cannot make them
// (exit status 77: not root, no `ip netns`...), with the reason in `netnsReason`.
export function netnsUp(n) {
  const r = spawnSync(netnsScript, ['up', String(n)], { encoding: 'utf8', timeout: 60000 });
  if (r.status === 77) return { ok: false, skip: true, reason: (r.stderr || '').trim() };
  if (r.status !== 0) return { ok: false, skip: false, reason: `scripts/netns up ${n} exited ${r.status}: ${r.stderr}` };
  return { ok: true };
}
export function netnsDown() {
  return spawnSync(netnsScript, ['down'], { encoding: 'utf8', timeout: 60000 });
}
export const netnsAddr = (i) => `10.77.0.${i}`;
export const netnsHostAddr = '10.77.0.254';

// ---------------------------------------------------------------------------------------------
export class Cluster {
  // quiet: pass -q to every node (no per-request log lines). ctx: -c for servers.
  constructor({ quiet = false, ctx = 128, threads = 1, parallel = 1, prefix = 'llmesh-mesh-' } = {}) {
    this.quiet = quiet;
    this.ctx = ctx;
    this.threads = threads;
    this.parallel = parallel;
    this.prefix = prefix;
    this.nodes = [];
    this.relays = [];
    this.homes = [];
    this.netnsCount = 0;
    this.stopped = false;
    exitHandlers.push((code) => {
      if (code !== 0 && !this.dumped) this.dumpLogs();
      if (!keepHomes) for (const h of this.homes) rmSync(h, { recursive: true, force: true });
    });
  }

  newHome() {
    const h = mkdtempSync(path.join(tmpdir(), this.prefix));
    this.homes.push(h);
    return h;
  }

  // Common options of startServer/startClient:
  //   join      invite token (--join)
  //   label     a name for logs and messages (default: s1, s2... / c1, c2...)
  //   home      an existing home to use (default: a new temporary one)
  //   relay     a Relay: every connection to this node goes through a new link on it; the node
  //             listens on a free port and advertises the link's port (`node.link` is the
  //             link's name)
  //   netns     I: run inside llmesh-tI (scripts/netns exec), mesh and API on 10.77.0.I
  //   meshPort, advertise, args (more arguments), env, timeoutMs, quiet
  // startServer also takes model (a file in shared/models) or modelPath (any -m: a package
  // directory...), name (--name), ctx, threads, parallel.
  async startServer(o = {}) {
    const model = o.model ?? 'stories260K-f32.gguf';
    const args = ['serve', '-m', o.modelPath ?? modelPath(model), '-c', String(o.ctx ?? this.ctx), '-t', String(o.threads ?? this.threads),
      '--parallel', String(o.parallel ?? this.parallel)];
    if (o.name) args.push('--name', o.name);
    return this.#start('server', args, o);
  }

  async startClient(o = {}) {
    return this.#start('client', ['client'], o);
  }

  async #start(kind, args, o) {
    const n = this.nodes.filter((x) => x.kind === kind).length + 1;
    const label = o.label ?? `${kind === 'server' ? 's' : 'c'}${n}`;
    const home = o.home ?? this.newHome();
    const host = o.netns ? netnsAddr(o.netns) : (o.host ?? '127.0.0.1');
    let meshPort = o.meshPort ?? 0;
    let advertise = o.advertise;
    let link;
    if (o.relay) {
      if (!meshPort) meshPort = await freePort(host);
      link = o.linkName ?? `to-${label}`;
      const p = await o.relay.addLink(link, host, meshPort);
      advertise = `${o.relay.bind}:${p}`;
    }
    args = [...args, '--port', String(o.port ?? 0), '--json', '--listen', host, '--mesh-listen', host, '--mesh-port', String(meshPort)];
    if (advertise) args.push('--advertise', advertise);
    if (o.quiet ?? this.quiet) args.push('-q');
    if (o.join) args.push('--join', o.join);
    if (o.args) args.push(...o.args);
    // Every node its own console on a free port (3131, the default, would go to the first node).
    if (!args.includes('--console-port') && !args.includes('--no-console')) args.push('--console-port', '0');
    const node = new Node(this, { kind, args, home, netns: o.netns, label, apiHost: host, env: o.env ?? {} });
    node.link = link;
    node.relay = o.relay;
    this.nodes.push(node);
    if (o.wait === false) {
      node.started = node.spawnNoWait({ timeoutMs: o.timeoutMs });
      return node;
    }
    await node.spawn({ timeoutMs: o.timeoutMs });
    return node;
  }

  // A whole mesh: `servers` serve nodes then `clients` client nodes, each joining with a token
  // from a node already running (a different one each time, servers and clients alike), then
  // waits until every node sees all of them alive. `server(i)` / `client(i)` give per-node
  // options (model, name, relay, netns...). Resolves with
  //   { nodes, servers, clients, startMs (first spawn to last listening), converged }
  // where converged is waitUntilAllSee's result, timed from the last node's listening line.
  async startMesh({ servers = 1, clients = 0, server = () => ({}), client = () => ({}), convergeTimeoutMs = 30000,
    intervalMs = 250 } = {}) {
    if (servers < 1) throw new Error('startMesh: at least one server starts the mesh');
    const t0 = now();
    const nodes = [];
    for (let i = 0; i < servers + clients; i++) {
      const join = i === 0 ? undefined : (await nodes[(i * 7) % nodes.length].invite()).token;
      const node = i < servers
        ? await this.startServer({ label: `s${i + 1}`, ...server(i), join })
        : await this.startClient({ label: `c${i - servers + 1}`, ...client(i - servers), join });
      if (join && !node.joined) throw new Error(`${node.label} did not join: ${node.info.join_error ?? ''}\n${node.tail(10)}`);
      nodes.push(node);
    }
    const last = nodes.at(-1).listeningAt;
    const n = nodes.length;
    const converged = await waitUntilAllSee(nodes, (s) => aliveCount(s) === n && s.members.length === n,
      { timeoutMs: convergeTimeoutMs, start: last, intervalMs, label: `${n} alive` });
    return { nodes, servers: nodes.slice(0, servers), clients: nodes.slice(servers), startMs: last - t0, converged };
  }

  async startRelay(o = {}) {
    const r = new Relay(this, o);
    this.relays.push(r);
    return r.start();
  }

  running() { return this.nodes.filter((n) => n.running); }

  // Wraps a test body: on failure the tail of every node's log is printed before the error goes on.
  guard(fn) {
    return async (...a) => {
      try {
        return await fn(...a);
      } catch (e) {
        this.dumpLogs();
        throw e;
      }
    };
  }

  dumpLogs(lines = 25) {
    this.dumped = true;
    for (const n of this.nodes) process.stderr.write(`--- ${n.label} (${n.kind}, ${n.id?.slice(0, 12) ?? '?'}, home ${n.home}):\n${n.tail(lines)}\n`);
  }

  // Stops every node (SIGTERM, all at once; SIGKILL after graceMs) and relay, removes the homes
  // (unless LLMESH_MESH_KEEP=1).
  async stop({ graceMs = 3000 } = {}) {
    this.stopped = true;
    await Promise.all(this.nodes.map((n) => n.terminate({ graceMs }).catch(() => {})));
    await Promise.all(this.relays.map((r) => r.stop().catch(() => {})));
    if (!keepHomes) {
      for (const h of this.homes) rmSync(h, { recursive: true, force: true });
      this.homes = [];
    }
  }
}

// Writes $home/mesh.json and $home/peers.json the way a node saves them (mode 0600).
export function writeMeshFiles(home, { meshId, secret, epoch, peers }) {
  writeFileSync(path.join(home, 'mesh.json'), JSON.stringify({ version: 1, mesh_id: meshId, secret, epoch }) + '\n', { mode: 0o600 });
  if (peers) writeFileSync(path.join(home, 'peers.json'), JSON.stringify({ version: 1, mesh_id: meshId, peers }) + '\n', { mode: 0o600 });
}

export function readJsonFile(p) { return JSON.parse(readFileSync(p, 'utf8')); }
