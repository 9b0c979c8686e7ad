// llmesh console: renders the node's /api/state (and the `state` events of /api/events) and
// drives a chat playground against the node's own OpenAI-compatible API. Plain ES2020, no
// framework, no external resource.
//
// Every string in the state comes from the network (other nodes gossip their own records), so
// it is only ever inserted as text (textContent, setAttribute): never as HTML.
'use strict';

(() => {
  const SVG_NS = 'http://www.w3.org/2000/svg';
  const KEY_STORAGE = 'llmesh.console.apiKey';
  const MODEL_STORAGE = 'llmesh.console.model';
  const $ = (id) => document.getElementById(id);
  // localStorage may be disabled (privacy settings, file:// pages): the page works without it.
  const store = {
    get(k) { try { return localStorage.getItem(k) || ''; } catch { return ''; } },
    set(k, v) { try { if (v) localStorage.setItem(k, v); else localStorage.removeItem(k); } catch { /* disabled */ } },
  };

  // ---------------------------------------------------------------------------------------------
  // Small helpers.

  // Creates an element: attrs are set with setAttribute (`text` sets textContent, `class` the
  // class list); children are nodes or strings (made text nodes).
  function build(ns, tag, attrs, children) {
    const e = ns ? document.createElementNS(ns, tag) : document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === 'text') e.textContent = String(v);
      else e.setAttribute(k, String(v));
    }
    for (const c of children || []) {
      if (c === undefined || c === null || c === false) continue;
      e.append(typeof c === 'string' || typeof c === 'number' ? String(c) : c);
    }
    return e;
  }
  const h = (tag, attrs, ...children) => build(null, tag, attrs, children);
  const s = (tag, attrs, ...children) => build(SVG_NS, tag, attrs, children);

  const str = (x) => (typeof x === 'string' ? x : x === undefined || x === null ? '' : String(x));
  const num = (x) => (typeof x === 'number' && Number.isFinite(x) ? x : null);
  const int = (x) => (num(x) === null ? null : Math.trunc(x));
  const obj = (x) => (x && typeof x === 'object' && !Array.isArray(x) ? x : {});
  const arr = (x) => (Array.isArray(x) ? x : []);
  const shortId = (id, n = 8) => str(id).slice(0, n) || '?';
  const byId = (a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0);

  function fmtNum(x, digits = 1) {
    const v = num(x);
    if (v === null) return '—';
    if (v === 0) return '0';
    return Math.abs(v) >= 100 ? v.toFixed(0) : v.toFixed(digits);
  }
  function fmtMs(x) {
    const v = num(x);
    if (v === null) return '—';
    return `${v < 1 ? v.toFixed(2) : v < 10 ? v.toFixed(1) : v.toFixed(0)} ms`;
  }
  function fmtBytes(x) {
    const v = num(x);
    if (v === null) return '—';
    const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
    let u = 0, n = v;
    while (n >= 1024 && u < units.length - 1) { n /= 1024; u++; }
    return `${n >= 100 || u === 0 ? n.toFixed(0) : n.toFixed(1)} ${units[u]}`;
  }
  function fmtDuration(sec) {
    const v = num(sec);
    if (v === null) return '—';
    if (v < 60) return `${v.toFixed(1)} s`;
    if (v < 3600) return `${Math.floor(v / 60)} m ${Math.floor(v % 60)} s`;
    if (v < 86400) return `${Math.floor(v / 3600)} h ${Math.floor((v % 3600) / 60)} m`;
    return `${Math.floor(v / 86400)} d ${Math.floor((v % 86400) / 3600)} h`;
  }

  // A colour per node, distinct among the nodes of the page and kept while the page is open: the
  // first free one of the palette, nodes taken in the order of their ids (so a reload of the same
  // mesh gives the same colours).
  const PALETTE = ['#1c7ed6', '#e8590c', '#2f9e44', '#ae3ec9', '#c92a2a', '#0c8599', '#f08c00', '#6741d9',
    '#66a80f', '#d6336c', '#5c677d', '#1098ad'];
  const colors = new Map();
  function assignColors(ids) {
    const taken = new Set(ids.filter((id) => colors.has(id)).map((id) => colors.get(id)));
    for (const id of [...ids].sort()) {
      if (colors.has(id)) continue;
      const free = PALETTE.find((c) => !taken.has(c)) || PALETTE[colors.size % PALETTE.length];
      colors.set(id, free);
      taken.add(free);
    }
  }
  function nodeColor(id) {
    if (!colors.has(id)) assignColors([id]);
    return colors.get(id);
  }
  function swatch(id) {
    const e = h('i', { class: 'swatch node', 'aria-hidden': 'true' });
    e.style.background = nodeColor(id);
    return e;
  }

  // ---------------------------------------------------------------------------------------------
  // What the state means: the live members, the links between them, the placement of models.
  // The keys links/placement/totals are newer than the rest: without them they are derived from
  // the members, so the page also works against an older node.

  const hiddenStatus = (st) => st === 'dead' || st === 'left';

  function liveMembers(state) {
    return arr(state.members)
      .filter((m) => m && typeof m.id === 'string' && m.id && !hiddenStatus(m.status))
      .sort(byId);
  }

  function linksOf(state, live) {
    const ids = new Set(live.map((m) => m.id));
    // A link may name a node by an id prefix (gossip carries 16 hex characters): resolved to the
    // one live member it names.
    const resolve = (x) => {
      if (ids.has(x)) return x;
      if (x.length < 8) return null;
      const found = live.filter((m) => m.id.startsWith(x));
      return found.length === 1 ? found[0].id : null;
    };
    const links = new Map();
    const add = (from, to, rtt) => {
      const a = resolve(from), b = resolve(to);
      if (!a || !b || a === b) return;
      const [x, y] = a < b ? [a, b] : [b, a];
      const key = `${x} ${y}`;
      const l = links.get(key) || { a: x, b: y, rtts: [] };
      if (num(rtt) !== null) l.rtts.push(rtt);
      links.set(key, l);
    };
    // The links the node reports (round trips measured on both sides), then this node's own
    // connections that have no measured round trip yet (or come from a node without `links`).
    for (const l of arr(state.links)) add(str(obj(l).from), str(obj(l).to), obj(l).rtt_ms);
    const self = live.find((m) => m.self);
    if (self) {
      for (const m of live) {
        const key = self.id < m.id ? `${self.id} ${m.id}` : `${m.id} ${self.id}`;
        if (!m.self && !links.has(key) && (m.connected || num(m.rtt_ms) !== null)) add(self.id, m.id, m.rtt_ms);
      }
    }
    return [...links.values()].map((l) => ({
      a: l.a, b: l.b, rtt: l.rtts.length ? l.rtts.reduce((p, q) => p + q, 0) / l.rtts.length : null,
    }));
  }

  // The parts of [0, total) that no range covers: [[first, last), ...].
  function missingOf(total, ranges) {
    const out = [];
    const sorted = [...ranges].sort((p, q) => p.first - q.first);
    let at = 0;
    for (const r of sorted) {
      if (r.first > at) out.push([at, Math.min(r.first, total)]);
      at = Math.max(at, r.last);
      if (at >= total) break;
    }
    if (at < total) out.push([at, total]);
    return out.filter(([a, b]) => b > a);
  }

  function placementOf(state, live) {
    const hidden = new Set(arr(state.members).filter((m) => hiddenStatus(obj(m).status)).map((m) => m.id));
    const models = new Map();
    const model = (name, total) => {
      const m = models.get(name) || { name, total: 0, ranges: [], experts: [] };
      if (total !== null && total > m.total) m.total = total;
      models.set(name, m);
      return m;
    };
    const range = (node, first, last, entry) => {
      const a = int(first), b = int(last);
      if (a === null || b === null || b <= a || a < 0) return null;
      return { node: str(node), first: a, last: b, entry: !!entry };
    };
    if (Array.isArray(state.placement)) {
      for (const p of state.placement.map(obj)) {
        const m = model(str(p.model), int(p.total_layers));
        for (const r of arr(p.ranges).map(obj)) {
          if (hidden.has(r.node)) continue;
          const x = range(r.node, r.first, r.last, r.entry);
          if (x) m.ranges.push(x);
        }
        for (const g of arr(p.expert_groups).map(obj)) {
          if (!hidden.has(g.node)) m.experts.push({ node: str(g.node), index: int(g.index), count: int(g.count), plan: str(g.plan) });
        }
      }
    } else {
      for (const mem of live) {
        for (const md of arr(obj(mem.state).models).map(obj)) {
          const m = model(str(md.name), int(md.total_layers));
          const ld = arr(md.layers_loaded);
          const x = range(mem.id, ld[0], ld[1], md.entry);
          if (x) m.ranges.push(x);
          const es = md.expert_shard;
          if (es && typeof es === 'object') m.experts.push({ node: mem.id, index: int(es.index), count: int(es.count), plan: str(es.plan) });
        }
      }
    }
    const out = [...models.values()].sort((p, q) => (p.name < q.name ? -1 : p.name > q.name ? 1 : 0));
    for (const m of out) {
      m.ranges.sort((p, q) => p.first - q.first || p.last - q.last || (p.node < q.node ? -1 : 1));
      if (!m.total) m.total = Math.max(0, ...m.ranges.map((r) => r.last));
      m.missing = missingOf(m.total, m.ranges);
    }
    return out;
  }

  function totalsOf(state, live) {
    const t = obj(state.totals);
    const sum = (k) => live.reduce((acc, m) => acc + (num(obj(obj(m.state).load)[k]) || 0), 0);
    return {
      nodes: live.length,
      tps: num(t.tokens_per_second) ?? sum('tokens_per_second'),
      active: num(t.active_requests) ?? sum('active_requests'),
      queued: num(t.queued) ?? sum('queued'),
      slots: num(t.parallel_slots) ?? sum('parallel_slots'),
      requests: num(t.requests_total) ?? (live.some((m) => num(obj(obj(m.state).load).requests_total) !== null) ? sum('requests_total') : null),
    };
  }

  // ---------------------------------------------------------------------------------------------
  // Rendering.

  function renderHeader(state, live, totals) {
    const mesh = obj(state.mesh);
    const meshId = str(mesh.id);
    const idEl = $('mesh-id');
    idEl.textContent = meshId ? shortId(meshId) : '—';
    idEl.title = meshId ? `mesh ${meshId}, epoch ${str(mesh.epoch)}, fingerprint ${str(mesh.fingerprint)}` : '';
    const kind = $('mesh-kind');
    const disc = state.discovery && typeof state.discovery === 'object' ? state.discovery : null;
    const isPublic = disc ? disc.public === true : null;
    kind.textContent = isPublic === null ? '—' : isPublic ? 'public' : 'private';
    kind.className = `pill ${isPublic === null ? '' : isPublic ? 'public' : 'private'}`;
    const suspect = live.filter((m) => m.status === 'suspect').length;
    $('node-count').textContent = String(live.length);
    $('node-count').title = `${live.length - suspect} alive, ${suspect} suspect`;
    $('total-tps').textContent = fmtNum(totals.tps);
    $('total-load').textContent = `${fmtNum(totals.active, 0)} active · ${fmtNum(totals.queued, 0)} queued`;
    $('total-load').title = `${fmtNum(totals.slots, 0)} parallel slots in all` +
      (totals.requests !== null ? `, ${fmtNum(totals.requests, 0)} requests served` : '');
    const self = obj(state.node);
    $('self-id').textContent = shortId(self.id, 12);
    $('self-id').title = str(self.id);
    const me = live.find((m) => m.self);
    const version = str(obj(me && me.state).software_version);
    $('foot-version').textContent = [version, num(self.uptime_s) !== null ? `up ${fmtDuration(self.uptime_s)}` : '']
      .filter(Boolean).join(' · ');
    document.title = `llmesh console · ${live.length} node${live.length === 1 ? '' : 's'}`;
  }

  function renderTopology(state, live) {
    const svg = $('topology');
    const W = 640, H = 340, cx = W / 2, cy = H / 2 - 12;
    const n = live.length;
    const R = n <= 1 ? 0 : n === 2 ? 160 : Math.min(115, 70 + n * 12);
    const pos = new Map();
    live.forEach((m, i) => {
      const a = (n === 2 ? Math.PI : -Math.PI / 2) + (2 * Math.PI * i) / Math.max(n, 1);
      pos.set(m.id, { x: cx + R * Math.cos(a), y: cy + R * Math.sin(a) });
    });
    const parts = [];
    if (!n) parts.push(s('text', { class: 'empty', x: cx, y: cy, text: 'No live node' }));
    const linkLayer = s('g', { class: 'links' });
    for (const l of linksOf(state, live)) {
      const p = pos.get(l.a), q = pos.get(l.b);
      const g = s('g', { 'data-testid': 'topology-link', 'data-from': l.a, 'data-to': l.b },
        s('line', { class: `link${l.rtt === null ? ' unknown' : ''}`, x1: p.x, y1: p.y, x2: q.x, y2: q.y }),
        s('text', { class: 'link-label', x: (p.x + q.x) / 2, y: (p.y + q.y) / 2, text: l.rtt === null ? '' : fmtMs(l.rtt) }),
        s('title', { text: `${shortId(l.a, 12)} ↔ ${shortId(l.b, 12)}: ${l.rtt === null ? 'round trip not measured yet' : fmtMs(l.rtt)}` }));
      linkLayer.append(g);
    }
    parts.push(linkLayer);
    const r = 22;
    const ringR = r + 6;
    const circumference = 2 * Math.PI * ringR;
    for (const m of live) {
      const p = pos.get(m.id);
      const st = obj(m.state);
      const role = st.role === 'client' ? 'client' : st.role === 'server' ? 'server' : 'server';
      const load = obj(st.load);
      const slots = Math.max(1, num(load.parallel_slots) || 1);
      const busy = (num(load.active_requests) || 0) + (num(load.queued) || 0);
      const frac = Math.min(1, busy / slots);
      const tps = num(load.tokens_per_second);
      const g = s('g', {
        class: `node ${role} ${m.status === 'suspect' ? 'suspect' : 'alive'}${m.self ? ' self' : ''}`,
        'data-testid': 'topology-node', 'data-node-id': m.id, transform: `translate(${p.x.toFixed(1)} ${p.y.toFixed(1)})`,
      });
      g.append(s('circle', { class: 'load-track', r: ringR }));
      if (frac > 0) {
        g.append(s('circle', {
          class: `load-arc${frac >= 1 ? ' busy' : ''}`, r: ringR, transform: 'rotate(-90)',
          'stroke-dasharray': `${(frac * circumference).toFixed(1)} ${circumference.toFixed(1)}`,
        }));
      }
      const core = s('circle', { class: `node-core ${role}`, r });
      g.append(core);
      if (m.self) g.append(s('circle', { class: 'self-ring', r: ringR + 5 }));
      g.append(s('text', { class: 'node-initial', y: 0, text: role === 'client' ? 'C' : 'S' }));
      g.append(s('text', { class: 'node-label', y: ringR + 20, text: `${shortId(m.id)}${m.self ? ' ★' : ''}` }));
      const sub = [role, m.status === 'suspect' ? 'suspect' : '', tps ? `${fmtNum(tps)} tok/s` : ''].filter(Boolean).join(' · ');
      g.append(s('text', { class: 'node-sub', y: ringR + 34, text: sub }));
      g.append(s('title', {
        text: `${m.id}\n${role}${m.self ? ' (this node)' : ''}, ${str(m.status)}\nAPI ${str(st.api_address) || '—'}\n` +
          `mesh ${str(st.mesh_address) || '—'}\nload ${busy} of ${slots} slots`,
      }));
      parts.push(g);
    }
    svg.replaceChildren(...parts);
  }

  function layerRangeText(first, last) { return `[${first}, ${last})`; }

  function renderNodes(state, live) {
    const body = $('nodes-body');
    const rows = live.map((m) => {
      const st = obj(m.state);
      const load = obj(st.load);
      const hw = obj(st.hardware);
      const role = str(st.role) || '?';
      const models = arr(st.models).map(obj);
      const modelCell = h('td', { class: 'model' });
      if (!models.length) modelCell.append(h('span', { class: 'muted', text: m.state ? 'none' : 'not heard from yet' }));
      models.forEach((md, i) => {
        if (i) modelCell.append(h('br'));
        const ld = arr(md.layers_loaded);
        const a = int(ld[0]), b = int(ld[1]);
        const total = int(md.total_layers);
        modelCell.append(h('span', { text: str(md.name) || '?' }));
        if (a !== null && b !== null && b > a) {
          modelCell.append(h('span', {
            class: 'layer-range', 'data-testid': 'layer-range', 'data-node-id': m.id, 'data-model': str(md.name),
            title: total !== null ? `layers ${a} to ${b - 1} of ${total}` : '', text: layerRangeText(a, b),
          }));
          if (total !== null) modelCell.append(h('span', { class: 'tag', text: `/${total}` }));
        } else {
          modelCell.append(h('span', { class: 'tag', text: 'no layers' }));
        }
        const tags = [md.entry ? 'entry' : '', md.split ? 'split' : ''].filter(Boolean);
        if (tags.length) {
          modelCell.append(h('span', {
            class: 'tag', text: `· ${tags.join(' · ')}`,
            title: [md.entry ? 'answers requests for this model' : '', md.split ? `placed by the planner${md.plan ? ` (${str(md.plan)})` : ''}` : '']
              .filter(Boolean).join('; '),
          }));
        }
      });
      const experts = models.filter((md) => md.expert_shard && typeof md.expert_shard === 'object').map((md) => {
        const es = obj(md.expert_shard);
        const cov = arr(es.covers_permille).map(num).filter((v) => v !== null);
        const avg = cov.length ? cov.reduce((p, q) => p + q, 0) / cov.length / 10 : null;
        return h('span', {
          title: `${str(md.name)}: shard ${str(es.index)} of ${str(es.count)}${es.plan ? `, plan ${str(es.plan)}` : ''}` +
            (avg !== null ? `, covers ${avg.toFixed(0)}% of routing on average` : ''),
          text: `${str(es.index)}/${str(es.count)}${avg !== null ? ` · ${avg.toFixed(0)}%` : ''}`,
        });
      });
      const slots = num(load.parallel_slots);
      const hwCell = h('td', { class: 'hw', title: num(hw.matmul_gflops) !== null ? `${fmtNum(hw.matmul_gflops)} GFLOP/s measured (matmul)` : null });
      const cores = [num(hw.cores) !== null ? `${hw.cores} cores` : '', str(hw.accelerator)].filter(Boolean).join(' · ');
      if (cores) hwCell.append(h('div', { text: cores }));
      if (num(hw.ram_bytes) !== null) hwCell.append(h('div', { text: `${fmtBytes(hw.free_ram_bytes)} free of ${fmtBytes(hw.ram_bytes)}` }));
      if (!hwCell.childNodes.length) hwCell.textContent = '—';
      const idCell = h('td', { class: 'id', title: m.id }, swatch(m.id), shortId(m.id, 12));
      if (m.self) idCell.append(h('span', { class: 'pill self', text: 'this node' }));
      const statusCell = h('td', {}, h('span', { class: `pill ${m.status === 'suspect' ? 'suspect' : 'alive'}`, text: str(m.status) || '?' }));
      if (!m.self && m.connected === false) statusCell.append(h('span', { class: 'tag', text: 'not connected' }));
      return h('tr', {
        'data-testid': 'node-row', 'data-node-id': m.id, 'data-status': str(m.status),
        class: [m.self ? 'self' : '', m.status === 'suspect' ? 'suspect' : ''].filter(Boolean).join(' ') || null,
      },
      idCell,
      h('td', {}, h('span', { class: `pill role-${role === 'client' ? 'client' : 'server'}`, text: role })),
      statusCell,
      h('td', { class: 'addr' },
        h('div', {}, h('span', { class: 'k', text: 'api' }), str(st.api_address) || '—'),
        h('div', {}, h('span', { class: 'k', text: 'mesh' }), str(st.mesh_address) || '—')),
      modelCell,
      h('td', {}, ...(experts.length ? experts : [h('span', { class: 'muted', text: '—' })])),
      h('td', { class: 'num', text: fmtNum(load.tokens_per_second) }),
      h('td', { class: 'num', title: 'active / queued / slots', text: `${fmtNum(load.active_requests, 0)} / ${fmtNum(load.queued, 0)} / ${slots === null ? '—' : fmtNum(slots, 0)}` }),
      h('td', {
        class: 'num', text: fmtNum(load.requests_total, 0),
        title: num(load.generated_tokens_total) !== null ? `${fmtNum(load.generated_tokens_total, 0)} tokens generated` : null,
      }),
      h('td', { class: 'num', text: m.self ? 'self' : fmtMs(m.rtt_ms) }),
      hwCell);
    });
    if (!rows.length) rows.push(h('tr', { class: 'empty' }, h('td', { colspan: 11, text: 'No live node.' })));
    body.replaceChildren(...rows);
    const all = arr(state.members).length;
    const gone = all - live.length;
    $('nodes-hint').textContent = `${live.length} live${gone > 0 ? `, ${gone} dead or left (hidden)` : ''} · updated ${new Date().toLocaleTimeString()}`;
  }

  function scaleTicks(total) {
    if (total <= 0) return [0];
    const step = total <= 12 ? 1 : Math.ceil(total / 8);
    const ticks = [];
    for (let t = 0; t < total; t += step) ticks.push(t);
    if (total - ticks[ticks.length - 1] < step / 2 && ticks.length > 1) ticks.pop();
    ticks.push(total);
    return ticks;
  }

  function renderPlacement(state, live) {
    const root = $('placement');
    const models = placementOf(state, live);
    const blocks = [];
    for (const m of models) {
      const total = m.total;
      // Ranges that overlap (replicas) go to separate lanes.
      const lanes = [];
      for (const r of m.ranges) {
        let lane = lanes.find((l) => l[l.length - 1].last <= r.first);
        if (!lane) { lane = []; lanes.push(lane); }
        lane.push(r);
      }
      if (!lanes.length) lanes.push([]);
      const pct = (x) => `${((100 * x) / Math.max(1, total)).toFixed(3)}%`;
      const bar = h('div', { class: 'bar', 'data-testid': 'placement-bar', 'data-model': m.name });
      lanes.forEach((lane, i) => {
        const el = h('div', { class: 'lane' });
        for (const r of lane) {
          const seg = h('div', {
            class: 'seg', 'data-testid': 'placement-segment', 'data-node-id': r.node,
            title: `${r.node}\nlayers ${layerRangeText(r.first, r.last)} of ${total}${r.entry ? ', entry' : ''}`,
          }, h('span', { class: 'seg-node', text: shortId(r.node) }), h('span', { class: 'seg-range', text: layerRangeText(r.first, r.last) }));
          seg.style.left = pct(r.first);
          seg.style.width = `calc(${pct(r.last - r.first)} - 2px)`;
          seg.style.background = nodeColor(r.node);
          el.append(seg);
        }
        if (i === 0) {
          for (const [a, b] of m.missing) {
            const seg = h('div', { class: 'seg missing', 'data-testid': 'placement-missing', title: `no live node holds layers ${layerRangeText(a, b)}` },
              h('span', { class: 'seg-node', text: 'missing' }), h('span', { class: 'seg-range', text: layerRangeText(a, b) }));
            seg.style.left = pct(a);
            seg.style.width = `calc(${pct(b - a)} - 2px)`;
            el.append(seg);
          }
        }
        bar.append(el);
      });
      const scale = h('div', { class: 'scale', 'aria-hidden': 'true' });
      for (const t of scaleTicks(total)) {
        const tick = h('span', { text: String(t) });
        tick.style.left = pct(t);
        scale.append(tick);
      }
      const holders = new Set(m.ranges.map((r) => r.node)).size;
      const meta = m.missing.length
        ? h('span', { class: 'model-meta bad', text: `${m.missing.map(([a, b]) => layerRangeText(a, b)).join(' ')} missing` })
        : h('span', { class: 'model-meta', text: `${total} layers · ${holders} node${holders === 1 ? '' : 's'}` });
      const block = h('div', { class: 'model-block' },
        h('div', { class: 'model-head' }, h('span', { class: 'model-name', text: m.name || '?' }), meta),
        bar, scale);
      if (m.experts.length) {
        const list = h('ul', { class: 'experts' });
        for (const g of [...m.experts].sort((p, q) => (p.index ?? 0) - (q.index ?? 0))) {
          list.append(h('li', { title: g.plan ? `plan ${g.plan}` : null }, swatch(g.node), `${shortId(g.node)}: experts group ${g.index ?? '?'} of ${g.count ?? '?'}`));
        }
        block.append(list);
      }
      const sp = obj(state.split);
      const route = arr(obj(sp.pipeline).route).map(obj);
      if (str(sp.model) === m.name && route.length) {
        const line = h('div', { class: 'route' }, 'route from this node: ');
        route.forEach((hop, i) => {
          const l = arr(hop.layers);
          if (i) line.append(' → ');
          const gone = !live.some((m) => m.id === str(hop.node));
          line.append(h('span', {
            class: `mono${gone ? ' gone' : ''}`, text: `${shortId(hop.node)}${layerRangeText(str(l[0]), str(l[1]))}`,
            title: gone ? 'this node is gone: the next request takes another route' : str(hop.node),
          }));
        });
        block.append(line);
      }
      blocks.push(block);
    }
    if (!blocks.length) blocks.push(h('p', { class: 'empty', text: 'No model is served in this mesh yet.' }));
    root.replaceChildren(...blocks);
  }

  function renderMeshFacts(state, live, totals) {
    const mesh = obj(state.mesh);
    const gossip = obj(state.gossip);
    const disc = obj(state.discovery);
    const servers = live.filter((m) => obj(m.state).role !== 'client').length;
    const rows = [
      ['id', str(mesh.id) || '—'],
      ['epoch · fingerprint', `${str(mesh.epoch) || '—'} · ${str(mesh.fingerprint) || '—'}`],
      ['nodes', `${servers} server${servers === 1 ? '' : 's'}, ${live.length - servers} client${live.length - servers === 1 ? '' : 's'}`],
      ['slots', `${fmtNum(totals.active, 0)} active, ${fmtNum(totals.queued, 0)} queued of ${fmtNum(totals.slots, 0)}`],
      ['requests served', totals.requests === null ? '—' : fmtNum(totals.requests, 0)],
      ['gossip', num(gossip.bytes_sent_per_s) !== null ? `${fmtBytes(gossip.bytes_sent_per_s)}/s sent by this node` : '—'],
      ['listing', disc.public === true ? (obj(disc.publish).relays ? 'public, listed on nostr relays' : 'public') : 'private (invite only)'],
    ];
    $('mesh-facts').replaceChildren(...rows.flatMap(([k, v]) => [h('dt', { text: k }), h('dd', { text: v })]));
  }

  function renderEvents(state) {
    const list = $('events');
    const evs = arr(state.events).map(obj).slice(-14).reverse();
    const items = evs.map((e) => h('li', {},
      h('span', { class: 't', text: num(e.uptime_s) !== null ? `+${fmtDuration(e.uptime_s)}` : '' }),
      h('span', { class: `ev ${str(e.event).replace(/[^a-z_-]/gi, '')}`, text: str(e.event) || '?' }),
      h('span', { class: 'mono', title: str(e.node) }, swatch(e.node), shortId(e.node, 12))));
    if (!items.length) items.push(h('li', { class: 'empty' }, h('span'), h('span', { text: 'none yet' })));
    list.replaceChildren(...items);
  }

  let current = null;
  let scheduled = false;
  function render() {
    scheduled = false;
    const state = current;
    if (!state) return;
    const live = liveMembers(state);
    assignColors(arr(state.members).map((m) => str(obj(m).id)).filter(Boolean));
    const totals = totalsOf(state, live);
    const steps = [
      () => renderHeader(state, live, totals), () => renderTopology(state, live), () => renderNodes(state, live),
      () => renderPlacement(state, live), () => renderMeshFacts(state, live, totals), () => renderEvents(state),
    ];
    for (const step of steps) {
      try { step(); } catch (e) { console.error('llmesh console: render failed', e); }
    }
    maybeReloadModels(state, live);
  }
  function applyState(state) {
    if (!state || typeof state !== 'object') return;
    current = state;
    if (!scheduled) { scheduled = true; requestAnimationFrame(render); }
  }

  function showBanner(text, ...extra) {
    const b = $('banner');
    b.replaceChildren(...(text ? [h('span', { text })] : []), ...extra);
    b.hidden = !text;
  }

  // ---------------------------------------------------------------------------------------------
  // The API key. A node started with --api-key asks for it on /api/state and /api/events too.
  // EventSource cannot send headers: the key goes in the cookie the console server reads
  // (llmesh_console_key, this path only), and in `Authorization: Bearer` on fetch requests.

  const KEY_COOKIE = 'llmesh_console_key';
  let needKey = false;

  function apiKey() { return $('chat-api-key').value.trim(); }
  function authHeaders(extra) {
    const headers = Object.assign({}, extra || {});
    const key = apiKey();
    if (key) headers.authorization = `Bearer ${key}`;
    return headers;
  }
  function saveKey(key) {
    $('chat-api-key').value = key;
    store.set(KEY_STORAGE, key);
    document.cookie = key
      ? `${KEY_COOKIE}=${encodeURIComponent(key)}; path=/; SameSite=Strict`
      : `${KEY_COOKIE}=; path=/; SameSite=Strict; max-age=0`;
  }
  function keyChanged(key) {
    saveKey(key);
    loadModels();
    if (needKey) start();
  }
  function askForKey() {
    const input = h('input', { type: 'password', placeholder: 'API key', spellcheck: 'false', autocomplete: 'off', 'aria-label': 'API key' });
    const form = h('form', { class: 'key-form' }, input, h('button', { type: 'submit', class: 'primary', text: 'Unlock' }));
    form.addEventListener('submit', (e) => { e.preventDefault(); keyChanged(input.value.trim()); });
    showBanner(apiKey() ? 'This key was refused: ' : 'This node was started with --api-key: enter the key to see the mesh. ', form);
    setConnection('locked', 'API key needed');
    input.focus();
  }

  // ---------------------------------------------------------------------------------------------
  // Live updates: the first state from /api/state, then every `state` event of /api/events.
  // EventSource reconnects by itself after a dropped connection; when it gives up (the server
  // answered with an error), the page reads /api/state again a few seconds later and makes a new
  // one, unless the answer was that the key is missing.

  function setConnection(state, text) {
    const c = $('connection');
    c.dataset.state = state;
    c.querySelector('.label').textContent = text || state;
  }

  async function loadState() {
    try {
      const r = await fetch('/api/state', { cache: 'no-store', headers: authHeaders() });
      if (r.status === 401) {
        needKey = true;
        askForKey();
        return;
      }
      const text = await r.text();
      if (!r.ok) throw new Error(apiErrorText(r.status, text));
      needKey = false;
      applyState(JSON.parse(text));
      showBanner('');
    } catch (e) {
      showBanner(`Could not read this node's state (/api/state): ${e.message}. The page keeps trying.`);
    }
  }

  let source = null;
  function connectEvents() {
    if (source) source.close();
    source = null;
    if (needKey) return;
    setConnection(current ? 'reconnecting' : 'connecting', current ? 'reconnecting' : 'connecting');
    const es = new EventSource('/api/events');
    source = es;
    const onState = (ev) => {
      let state;
      try { state = JSON.parse(ev.data); } catch { return; }
      applyState(state);
      setConnection('live', 'live');
      showBanner('');
    };
    es.addEventListener('state', onState);
    es.onmessage = onState;  // an unnamed event with the same payload
    es.onopen = () => setConnection('live', 'live');
    es.onerror = () => {
      if (source !== es) return;
      if (es.readyState === EventSource.CLOSED) {
        setConnection('offline', 'offline, retrying');
        es.close();
        setTimeout(() => { if (source === es) start(); }, 3000);
      } else {
        setConnection('reconnecting', 'reconnecting');
      }
    };
  }

  async function start() {
    await loadState();
    connectEvents();
  }

  // ---------------------------------------------------------------------------------------------
  // The playground: POST /v1/chat/completions with "stream": true, read as server-sent events.

  const chat = {
    history: [],       // [{ role, content }] of finished turns
    controller: null,  // AbortController of the running request
    modelNames: null,  // the model names of the last state, to reload /v1/models when they change
    loadingModels: false,
  };

  // A readable message from an API error body ({"error": {"message", "type", "code"}}) or text.
  function apiErrorText(status, text) {
    let detail = (text || '').trim();
    try {
      const j = JSON.parse(text);
      const e = j && typeof j.error === 'object' && j.error ? j.error : j;
      const bits = [str(e.type), e.code !== undefined && e.code !== null ? str(e.code) : ''].filter(Boolean);
      detail = `${str(e.message) || str(j.error) || detail}${bits.length ? ` (${[...new Set(bits)].join(', ')})` : ''}`;
    } catch { /* not JSON: the text as it is */ }
    const hint = status === 401 ? ` — enter the node's key in the API key field (it was started with --api-key).` : '';
    return `HTTP ${status}${detail ? `: ${detail.slice(0, 500)}` : ''}${hint}`;
  }

  async function loadModels() {
    if (chat.loadingModels) return;
    chat.loadingModels = true;
    const sel = $('chat-model');
    const previous = sel.value || store.get(MODEL_STORAGE);
    try {
      const r = await fetch('/v1/models', { headers: authHeaders(), cache: 'no-store' });
      const text = await r.text();
      if (!r.ok) throw new Error(apiErrorText(r.status, text));
      const ids = arr(obj(JSON.parse(text)).data).map((m) => str(obj(m).id)).filter(Boolean);
      const options = ids.map((id) => h('option', { value: id, text: id }));
      if (!options.length) options.push(h('option', { value: '', text: 'no model in the mesh yet' }));
      sel.replaceChildren(...options);
      if (ids.includes(previous)) sel.value = previous;
      if ($('chat-stats').dataset.state === 'models-error') setStats('idle', '');
    } catch (e) {
      sel.replaceChildren(h('option', { value: '', text: 'models unavailable' }));
      setStats('models-error', `Could not list the models (/v1/models): ${e.message}`);
    } finally {
      chat.loadingModels = false;
    }
  }

  function maybeReloadModels(state, live) {
    const names = [...new Set(live.flatMap((m) => arr(obj(m.state).models).map((md) => str(obj(md).name))))].sort().join('\n');
    if (names !== chat.modelNames) {
      const first = chat.modelNames === null;  // setupPlayground loaded them already
      chat.modelNames = names;
      if (!first) loadModels();
    }
  }

  function setStats(state, text) {
    const el = $('chat-stats');
    el.dataset.state = state;
    el.textContent = text;
  }

  function addMessage(role, text) {
    const out = $('chat-output');
    const empty = out.querySelector('.empty');
    if (empty) empty.remove();
    const content = h('span', { class: 'content', text: text || '' });
    const msg = h('div', { class: `msg ${role}`, 'data-role': role },
      h('span', { class: 'who', text: role === 'user' ? 'you' : role === 'error' ? 'error' : 'assistant' }), content);
    out.append(msg);
    out.scrollTop = out.scrollHeight;
    return { msg, content };
  }

  function setBusy(busy) {
    $('chat-send').disabled = busy;
    $('chat-stop').disabled = !busy;
    $('chat-model').disabled = busy;
  }

  // Reads an SSE body: calls onData(payload) for each event's data (lines joined by "\n").
  async function readSse(body, onData) {
    const reader = body.getReader();
    const decoder = new TextDecoder();
    let buf = '';
    let data = [];
    const flush = () => {
      if (data.length) { const d = data.join('\n'); data = []; onData(d); }
    };
    for (;;) {
      const { value, done } = await reader.read();
      buf += decoder.decode(value || new Uint8Array(), { stream: !done });
      let i;
      while ((i = buf.search(/\r\n|\r|\n/)) >= 0) {
        const line = buf.slice(0, i);
        buf = buf.slice(i + (buf[i] === '\r' && buf[i + 1] === '\n' ? 2 : 1));
        if (line === '') flush();
        else if (line.startsWith('data:')) data.push(line.slice(5).replace(/^ /, ''));
        // comments (":") and other fields (event:, id:, retry:) are not needed here
      }
      if (done) { if (buf.startsWith('data:')) data.push(buf.slice(5).replace(/^ /, '')); flush(); return; }
    }
  }

  async function send() {
    const input = $('chat-input');
    const text = input.value.trim();
    const model = $('chat-model').value;
    if (!text) { input.focus(); return; }
    if (!model) { setStats('error', 'No model to send to: the mesh serves none yet (or /v1/models failed).'); return; }
    store.set(MODEL_STORAGE, model);
    const maxTokens = Math.max(1, Math.trunc(Number($('chat-max-tokens').value) || 128));
    const temperature = Math.min(2, Math.max(0, Number($('chat-temperature').value)));
    const system = $('chat-system').value.trim();
    const messages = [...(system ? [{ role: 'system', content: system }] : []), ...chat.history, { role: 'user', content: text }];
    addMessage('user', text);
    input.value = '';
    const answer = addMessage('assistant', '');
    answer.msg.classList.add('streaming');
    const reasoning = h('span', { class: 'reasoning' });
    let content = '', thinking = '', chunks = 0, usageTokens = null, finish = null;
    const t0 = performance.now();
    let tFirst = null;
    const stats = (state, extra) => {
      const n = usageTokens ?? chunks;
      const now = performance.now();
      const genS = tFirst === null ? 0 : (now - tFirst) / 1000;
      const tps = n > 1 && genS > 0 ? (n - 1) / genS : null;
      const bits = [`${n} token${n === 1 ? '' : 's'}`];
      if (tps !== null) bits.push(`${tps.toFixed(1)} tok/s`);
      if (tFirst !== null) bits.push(`first token ${((tFirst - t0) / 1000).toFixed(2)} s`);
      if (extra) bits.push(extra);
      setStats(state, bits.join(' · '));
    };
    const controller = new AbortController();
    chat.controller = controller;
    setBusy(true);
    setStats('streaming', 'waiting for the first token…');
    const out = $('chat-output');
    try {
      const r = await fetch('/v1/chat/completions', {
        method: 'POST',
        headers: authHeaders({ 'content-type': 'application/json', accept: 'text/event-stream' }),
        body: JSON.stringify({ model, messages, stream: true, stream_options: { include_usage: true }, max_tokens: maxTokens, temperature }),
        signal: controller.signal,
      });
      if (!r.ok) throw new Error(apiErrorText(r.status, await r.text()));
      if (!r.body) throw new Error('the response has no body to stream');
      let streamError = null;
      await readSse(r.body, (data) => {
        if (data === '[DONE]' || streamError) return;
        let j;
        try { j = JSON.parse(data); } catch { return; }
        if (j && j.error) { streamError = apiErrorText(200, JSON.stringify(j)).replace(/^HTTP 200: /, ''); return; }
        const choice = obj(arr(obj(j).choices)[0]);
        const delta = obj(choice.delta);
        const piece = str(delta.content);
        const think = str(delta.reasoning_content);
        if (piece || think) {
          if (tFirst === null) tFirst = performance.now();
          chunks++;
          if (piece) { content += piece; answer.content.textContent = content; }
          if (think) {
            thinking += think;
            reasoning.textContent = thinking;
            if (!reasoning.isConnected) answer.msg.insertBefore(reasoning, answer.content);
          }
          out.scrollTop = out.scrollHeight;
        }
        if (choice.finish_reason) finish = str(choice.finish_reason);
        const usage = obj(j.usage);
        if (num(usage.completion_tokens) !== null) usageTokens = usage.completion_tokens;
        stats('streaming');
      });
      if (streamError) throw new Error(streamError);
      chat.history.push({ role: 'user', content: text }, { role: 'assistant', content });
      if (!content && !thinking) answer.content.textContent = '(empty answer)';
      stats('done', `done${finish ? ` (${finish})` : ''}`);
    } catch (e) {
      if (controller.signal.aborted) {
        chat.history.push({ role: 'user', content: text }, { role: 'assistant', content });
        stats('stopped', 'stopped');
      } else {
        const msg = e instanceof TypeError ? `Could not reach this node's API: ${e.message}` : e.message;
        addMessage('error', msg);
        stats('error', 'failed');
        if (!content) answer.msg.remove();
      }
    } finally {
      answer.msg.classList.remove('streaming');
      chat.controller = null;
      setBusy(false);
    }
  }

  function setupPlayground() {
    const keyInput = $('chat-api-key');
    saveKey(store.get(KEY_STORAGE));
    keyInput.addEventListener('change', () => keyChanged(apiKey()));
    $('chat-form').addEventListener('submit', (e) => { e.preventDefault(); if (!chat.controller) send(); });
    $('chat-input').addEventListener('keydown', (e) => {
      if (e.key === 'Enter' && (e.ctrlKey || e.metaKey)) { e.preventDefault(); if (!chat.controller) send(); }
    });
    $('chat-stop').addEventListener('click', () => { if (chat.controller) chat.controller.abort(); });
    $('chat-clear').addEventListener('click', () => {
      if (chat.controller) chat.controller.abort();
      chat.history = [];
      $('chat-output').replaceChildren(h('p', { class: 'empty', text: 'Send a message to try the mesh\'s models from this page.' }));
      setStats('idle', '');
    });
    $('chat-model').addEventListener('change', () => {
      store.set(MODEL_STORAGE, $('chat-model').value);
    });
    loadModels();
  }

  // ---------------------------------------------------------------------------------------------
  setupPlayground();
  start();
})();
