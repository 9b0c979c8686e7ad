// The local test relay (relay.mjs) against nostr-tools-signed events and a raw WebSocket client:
//   cd tests/node && node --test discovery/relay_selftest.mjs
import { test, after, before } from 'node:test';
import assert from 'node:assert/strict';
import WebSocket from 'ws';
import { finalizeEvent, generateSecretKey } from 'nostr-tools/pure';
import { startRelay } from './relay.mjs';

let relay;
before(async () => {
  relay = await startRelay();
});
after(async () => {
  await relay.stop();
});

// Sends `messages` on one connection and collects relay messages until `done(message)` is true.
async function exchange(messages, done) {
  const ws = new WebSocket(relay.url);
  const got = [];
  await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no answer; got ${JSON.stringify(got)}`)), 10000);
    ws.on('error', reject);
    ws.on('open', () => messages.forEach((m) => ws.send(JSON.stringify(m))));
    ws.on('message', (data) => {
      const m = JSON.parse(data.toString());
      got.push(m);
      if (done(m)) {
        clearTimeout(timer);
        resolve();
      }
    });
  });
  ws.close();
  return got;
}

const publish = (event) => exchange([['EVENT', event]], (m) => m[0] === 'OK' && m[1] === event.id);
const query = async (filter) => {
  const got = await exchange([['REQ', 'q', filter]], (m) => ['EOSE', 'CLOSED'].includes(m[0]) && m[1] === 'q');
  assert.equal(got.at(-1)[0], 'EOSE', JSON.stringify(got.at(-1)));
  return got.filter((m) => m[0] === 'EVENT' && m[1] === 'q').map((m) => m[2]);
};

const sk = generateSecretKey();
// Plain JSON (finalizeEvent marks its result with a `verified` symbol that the wire drops).
const sign = (fields) =>
  JSON.parse(JSON.stringify(finalizeEvent({ tags: [], content: '', created_at: 1_700_000_000, ...fields }, sk)));

test('a signed event is stored and served back', async () => {
  const event = sign({ kind: 1, content: 'hello "relay"\n🚀', tags: [['t', 'llmesh']] });
  const [ok] = await publish(event);
  assert.deepEqual(ok.slice(0, 3), ['OK', event.id, true]);
  assert.ok(relay.received().some((e) => e.id === event.id));
  const found = await query({ kinds: [1], '#t': ['llmesh'] });
  assert.deepEqual(found, [event]);
  assert.deepEqual(await query({ authors: [event.pubkey], since: 1_700_000_001 }), []);
  assert.deepEqual(await query({ ids: [event.id], until: 1_700_000_000 }), [event]);
});

test('a forged event is refused, and an injected one is served as is', async () => {
  const forged = { ...sign({ kind: 1, content: 'original' }), content: 'forged' };
  const [ok] = await publish(forged);
  assert.equal(ok[2], false);
  assert.ok(!relay.events().some((e) => e.id === forged.id && e.content === 'forged'));
  relay.inject(forged);
  const found = await query({ ids: [forged.id] });
  assert.equal(found.length, 1);
  assert.equal(found[0].content, 'forged');
});

test('an addressable event is replaced by a newer one with the same d tag', async () => {
  const listing = (created_at, content, d = 'mesh-1') => sign({ kind: 30078, created_at, content, tags: [['d', d]] });
  const v1 = listing(1_700_000_100, 'v1');
  const v2 = listing(1_700_000_200, 'v2');
  const older = listing(1_700_000_050, 'older');
  const other = listing(1_700_000_100, 'other mesh', 'mesh-2');
  for (const e of [v1, v2, older, other]) await publish(e);
  const found = await query({ kinds: [30078] });
  assert.deepEqual(found.map((e) => e.content).sort(), ['other mesh', 'v2']);
  assert.deepEqual(await query({ kinds: [30078], '#d': ['mesh-1'] }), [v2]);
  assert.equal((await query({ kinds: [30078], limit: 1 })).length, 1);
});

test('a replaceable event keeps only the newest per author and kind', async () => {
  const a = sign({ kind: 10002, created_at: 1_700_000_001, content: 'a' });
  const b = sign({ kind: 10002, created_at: 1_700_000_002, content: 'b' });
  await publish(a);
  await publish(b);
  assert.deepEqual(await query({ kinds: [10002] }), [b]);
});

test('a message that is not nostr gets a NOTICE', async () => {
  const got = await exchange([{ not: 'an array' }], (m) => m[0] === 'NOTICE');
  assert.equal(got.at(-1)[0], 'NOTICE');
});
