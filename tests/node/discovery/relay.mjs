// A local nostr relay for tests (never shipped): @nostr-relay/core over a `ws` WebSocketServer,
// with an in-memory event repository that follows NIP-01's storage rules. Tests can also
// inject events without validation, to serve tampered or forged events to a client.
//
//   import { startRelay } from './discovery/relay.mjs';
//   const relay = await startRelay();            // { url, port, stop, events, inject, received }
//
//   node tests/node/discovery/relay.mjs --port 7447   # prints {"url":"ws://127.0.0.1:7447"}
import { EventRepository } from '@nostr-relay/common';
import { NostrRelay } from '@nostr-relay/core';
import { WebSocketServer } from 'ws';
import { pathToFileURL } from 'node:url';

const isReplaceable = (kind) => kind === 0 || kind === 3 || (kind >= 10000 && kind < 20000);
const isEphemeral = (kind) => kind >= 20000 && kind < 30000;
const isAddressable = (kind) => kind >= 30000 && kind < 40000;
const dTag = (event) => (event.tags.find((t) => t[0] === 'd') ?? [])[1] ?? '';

// The key under which a newer event replaces an older one, or null for a regular event.
function replacementKey(event) {
  if (isReplaceable(event.kind)) return `${event.kind}:${event.pubkey}`;
  if (isAddressable(event.kind)) return `${event.kind}:${event.pubkey}:${dTag(event)}`;
  return null;
}

// NIP-01: the newer event wins; at equal created_at, the lowest id.
const newer = (a, b) => a.created_at > b.created_at || (a.created_at === b.created_at && a.id < b.id);

// NIP-01 filters: ids, authors, kinds, #<letter> tag filters, since, until (limit in find).
export function matchesFilter(event, filter) {
  if (filter.ids && !filter.ids.includes(event.id)) return false;
  if (filter.authors && !filter.authors.includes(event.pubkey)) return false;
  if (filter.kinds && !filter.kinds.includes(event.kind)) return false;
  if (filter.since !== undefined && event.created_at < filter.since) return false;
  if (filter.until !== undefined && event.created_at > filter.until) return false;
  for (const [key, values] of Object.entries(filter)) {
    if (!/^#[a-zA-Z]$/.test(key)) continue;
    const name = key.slice(1);
    if (!event.tags.some((t) => t[0] === name && values.includes(t[1]))) return false;
  }
  return true;
}

// An in-memory EventRepository for @nostr-relay/core (the base class adds find$).
export class MemoryEventRepository extends EventRepository {
  constructor() {
    super();
    this.events = [];
  }
  isSearchSupported() {
    return false;
  }
  upsert(event) {
    if (this.events.some((e) => e.id === event.id)) return { isDuplicate: true };
    if (isEphemeral(event.kind)) return { isDuplicate: false };
    const key = replacementKey(event);
    if (key !== null) {
      const old = this.events.find((e) => replacementKey(e) === key);
      if (old && !newer(event, old)) return { isDuplicate: true };
      if (old) this.events = this.events.filter((e) => e !== old);
    }
    this.events.push(event);
    return { isDuplicate: false };
  }
  // Stored as is, without validation or replacement (tests' tampered events).
  inject(event) {
    this.events.push(event);
  }
  find(filter) {
    const found = this.events
      .filter((e) => matchesFilter(e, filter))
      .sort((a, b) => b.created_at - a.created_at || (a.id < b.id ? -1 : 1));
    return filter.limit !== undefined ? found.slice(0, filter.limit) : found;
  }
  async findOne(filter) {
    return this.find({ ...filter, limit: 1 })[0] ?? null;
  }
  async deleteByDeletionRequest() {}
  async destroy() {}
}

// The shape @nostr-relay/core expects (no @nostr-relay/validator here): a JSON array naming a
// known message with the right argument types. Returns the message, or null.
function validMessage(text) {
  let m;
  try {
    m = JSON.parse(text);
  } catch {
    return null;
  }
  if (!Array.isArray(m) || typeof m[0] !== 'string') return null;
  const isObject = (v) => v !== null && typeof v === 'object' && !Array.isArray(v);
  switch (m[0]) {
    case 'EVENT':
    case 'AUTH':
      return m.length === 2 && isObject(m[1]) ? m : null;
    case 'REQ':
      return m.length >= 3 && typeof m[1] === 'string' && m.slice(2).every(isObject) ? m : null;
    case 'CLOSE':
      return m.length === 2 && typeof m[1] === 'string' ? m : null;
    default:
      return null;
  }
}

export async function startRelay({ port = 0, host = '127.0.0.1' } = {}) {
  const repository = new MemoryEventRepository();
  // No filter-result cache: events injected by a test are served at once.
  const relay = new NostrRelay(repository, { filterResultCacheTtl: 0 });
  const received = [];
  const wss = new WebSocketServer({ port, host });
  await new Promise((resolve, reject) => {
    wss.once('listening', resolve);
    wss.once('error', reject);
  });
  wss.on('connection', (ws, req) => {
    relay.handleConnection(ws, req.socket.remoteAddress);
    ws.on('message', async (data) => {
      const message = validMessage(data.toString());
      if (!message) {
        ws.send(JSON.stringify(['NOTICE', 'invalid: not a nostr message']));
        return;
      }
      if (message[0] === 'EVENT') received.push(message[1]);
      await relay.handleMessage(ws, message);
    });
    ws.on('close', () => relay.handleDisconnect(ws));
    ws.on('error', () => {});
  });
  const actualPort = wss.address().port;
  const shownHost = host.includes(':') ? `[${host}]` : host;
  return {
    url: `ws://${shownHost}:${actualPort}`,
    port: actualPort,
    events: () => [...repository.events],
    inject: (event) => repository.inject(event),
    received: () => [...received],
    stop: async () => {
      for (const client of wss.clients) client.terminate();
      await new Promise((resolve) => wss.close(resolve));
      await relay.destroy();
    },
  };
}

// As a program: node relay.mjs [--port N] [--host H]
if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const arg = (name) => {
    const i = process.argv.indexOf(name);
    return i > 0 ? process.argv[i + 1] : undefined;
  };
  const relay = await startRelay({ port: Number(arg('--port') ?? 0), host: arg('--host') ?? '127.0.0.1' });
  console.log(JSON.stringify({ url: relay.url, port: relay.port }));
  const stop = async () => {
    await relay.stop();
    process.exit(0);
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}
