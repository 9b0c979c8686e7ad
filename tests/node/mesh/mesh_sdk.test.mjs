// The official SDKs against a client node (no model) of a 3-node loopback mesh: two servers with
// different models, every request routed over the mesh to the node that serves it.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import OpenAI from 'openai';
import Anthropic from '@anthropic-ai/sdk';
import { Cluster, waitUntilAllSee, aliveCount, sleep } from './cluster.mjs';

// -c 2048: room for a long generation to abort midway (stories260K makes ~1500 tokens/s).
const cluster = new Cluster({ ctx: 2048 });
let f32, q8, client, viaMesh;
const direct = new Map();  // model -> OpenAI SDK on the serving node itself

before(async () => {
  f32 = await cluster.startServer({ label: 'f32', name: 'storyteller', model: 'stories260K-f32.gguf' });
  const { token } = await f32.invite();
  q8 = await cluster.startServer({ label: 'q8', name: 'storyteller-q8', model: 'stories260K-q8_0.gguf', join: token });
  client = await cluster.startClient({ label: 'client', join: token });
  // Routing needs each server's state record (models, API address), not just membership.
  await waitUntilAllSee([client], (s) => aliveCount(s) === 3 &&
    s.members.filter((m) => m.state?.models?.length).length === 2, { timeoutMs: 10000, label: 'both models known' });
  const sdk = (baseURL) => new OpenAI({ baseURL, apiKey: 'unused', maxRetries: 0, timeout: 60000 });
  viaMesh = sdk(client.baseURL);
  direct.set('storyteller', sdk(f32.baseURL));
  direct.set('storyteller-q8', sdk(q8.baseURL));
});
after(() => cluster.stop());

const MODELS = ['storyteller', 'storyteller-q8'];
const chat = (model, content, extra = {}) => ({
  model, messages: [{ role: 'user', content }], max_tokens: 16, temperature: 0, ...extra,
});

function checkUsage(u) {
  for (const k of ['prompt_tokens', 'completion_tokens', 'total_tokens']) assert.ok(Number.isInteger(u[k]), `${k}: ${u[k]}`);
  assert.ok(u.prompt_tokens > 0 && u.completion_tokens > 0);
  assert.equal(u.total_tokens, u.prompt_tokens + u.completion_tokens);
}

async function busySlots(node) {
  const h = await (await fetch(`${node.root}/health`)).json();
  return h.slots.busy;
}

test('models.list through the client names both servers\' models', cluster.guard(async () => {
  const ids = [];
  for await (const m of viaMesh.models.list()) ids.push(m.id);
  assert.deepEqual(ids.sort(), MODELS);
  const m = await viaMesh.models.retrieve('storyteller-q8');
  assert.equal(m.id, 'storyteller-q8');
}));

for (const model of MODELS) {
  test(`chat.completions via the client = the serving node's own answer (${model})`, cluster.guard(async () => {
    const body = chat(model, 'Once upon a time');
    const r = await viaMesh.chat.completions.create(body);
    assert.equal(r.model, model);
    assert.equal(r.choices[0].message.role, 'assistant');
    assert.ok(r.choices[0].message.content.length > 0);
    checkUsage(r.usage);
    assert.equal(r.usage.completion_tokens, 16);
    const d = await direct.get(model).chat.completions.create(body);
    assert.equal(r.choices[0].message.content, d.choices[0].message.content);
    // (cached_tokens may differ: the second identical prompt finds its prefix in the KV cache)
    for (const k of ['prompt_tokens', 'completion_tokens', 'total_tokens']) assert.equal(r.usage[k], d.usage[k], k);

    // Streamed, with usage: the same text.
    const stream = await viaMesh.chat.completions.create({ ...body, stream: true, stream_options: { include_usage: true } });
    let text = '', usage = null, finish = null;
    for await (const chunk of stream) {
      assert.equal(chunk.model, model);
      if (chunk.usage) usage = chunk.usage;
      const c = chunk.choices[0];
      if (c?.delta?.content) text += c.delta.content;
      if (c?.finish_reason) finish = c.finish_reason;
    }
    assert.equal(text, d.choices[0].message.content);
    assert.equal(finish, 'length');
    checkUsage(usage);
    assert.equal(usage.completion_tokens, 16);
  }));
}

const generated = async (node) =>
  Number((await (await fetch(`${node.root}/metrics`)).text()).match(/^llmesh_generated_tokens_total (\d+)/m)[1]);

test('each request is generated on the node that holds its model, and only there', cluster.guard(async () => {
  for (const [model, server, other] of [['storyteller-q8', q8, f32], ['storyteller', f32, q8]]) {
    const [s0, o0] = [await generated(server), await generated(other)];
    const r = await viaMesh.chat.completions.create(chat(model, 'The cat', { max_tokens: 5 }));
    assert.equal(r.usage.completion_tokens, 5);
    assert.equal(await generated(server) - s0, 5, `${server.label} generated the answer for ${model}`);
    assert.equal(await generated(other) - o0, 0, `${other.label} did not`);
  }
}));

test('anthropic messages.create and messages.stream via the client', cluster.guard(async () => {
  const anth = new Anthropic({ baseURL: client.root, apiKey: 'unused', maxRetries: 0, timeout: 60000 });
  const directAnth = new Anthropic({ baseURL: q8.root, apiKey: 'unused', maxRetries: 0, timeout: 60000 });
  const body = { model: 'storyteller-q8', max_tokens: 12, temperature: 0, messages: [{ role: 'user', content: 'Once upon a time' }] };
  const m = await anth.messages.create(body);
  assert.equal(m.type, 'message');
  assert.equal(m.model, 'storyteller-q8');
  assert.equal(m.stop_reason, 'max_tokens');
  assert.equal(m.usage.output_tokens, 12);
  assert.ok(m.usage.input_tokens > 0);
  assert.equal(m.content[0].type, 'text');
  assert.ok(m.content[0].text.length > 0);
  const d = await directAnth.messages.create(body);
  assert.deepEqual(m.content, d.content);

  const stream = anth.messages.stream({ ...body, model: 'storyteller' });
  const types = [];
  let text = '';
  for await (const ev of stream) {
    types.push(ev.type);
    if (ev.type === 'content_block_delta' && ev.delta.type === 'text_delta') text += ev.delta.text;
  }
  const final = await stream.finalMessage();
  assert.equal(types[0], 'message_start');
  assert.equal(types.at(-1), 'message_stop');
  assert.equal(final.model, 'storyteller');
  assert.equal(final.stop_reason, 'max_tokens');
  assert.equal(final.usage.output_tokens, 12);
  assert.equal(final.content[0].text, text);
  const d2 = await new Anthropic({ baseURL: f32.root, apiKey: 'unused', maxRetries: 0 }).messages.create({ ...body, model: 'storyteller' });
  assert.equal(text, d2.content[0].text);
}));

test('an unknown model: 404 model_not_found from the client', cluster.guard(async () => {
  await assert.rejects(viaMesh.chat.completions.create(chat('no-such-model', 'hi')), (e) => {
    assert.ok(e instanceof OpenAI.NotFoundError, `${e.constructor.name}: ${e.message}`);
    assert.equal(e.status, 404);
    assert.equal(e.code, 'model_not_found');
    assert.match(e.message, /no-such-model/);
    return true;
  });
  const anth = new Anthropic({ baseURL: client.root, apiKey: 'unused', maxRetries: 0 });
  await assert.rejects(anth.messages.create({ model: 'no-such-model', max_tokens: 4, messages: [{ role: 'user', content: 'hi' }] }),
    (e) => { assert.equal(e.status, 404); return true; });
}));

const disconnects = async (node) =>
  Number((await (await fetch(`${node.root}/metrics`)).text()).match(/^llmesh_client_disconnects_total (\d+)/m)[1]);

test('aborting a streamed request midway cancels the far generation; later requests work', cluster.guard(async () => {
  for (const model of MODELS) {
    const server = model === 'storyteller' ? f32 : q8;
    const disc0 = await disconnects(server);
    const ac = new AbortController();
    const stream = await viaMesh.chat.completions.create(
      chat(model, 'Once upon a time', { max_tokens: 1900, temperature: 1, seed: 7, stream: true }), { signal: ac.signal });
    let got = 0, finish = null;
    for await (const chunk of stream) {
      if (chunk.choices[0]?.finish_reason) finish = chunk.choices[0].finish_reason;
      if (chunk.choices[0]?.delta?.content && ++got === 3) {
        ac.abort();
        break;
      }
    }
    const abortedAt = Date.now();
    assert.equal(got, 3);
    assert.equal(finish, null);
    // The serving node sees its (forwarded) client go away (a disconnect is counted only for a
    // request cut short: a finished one counts none) and frees the slot.
    const deadline = Date.now() + 5000;
    let busy, disc;
    while (Date.now() < deadline) {
      [busy, disc] = [await busySlots(server), await disconnects(server)];
      if (busy === 0 && disc > disc0) break;
      await sleep(25);
    }
    assert.equal(busy, 0, `${server.label} still generating 5 s after the abort`);
    assert.equal(disc, disc0 + 1, `${server.label} saw the request cancelled`);
    console.log(`${server.label}: slot free ${Date.now() - abortedAt} ms after the abort`);
    // Both models keep answering through the client, streamed and not.
    for (const m of MODELS) {
      const r = await viaMesh.chat.completions.create(chat(m, 'Hello', { max_tokens: 3 }));
      assert.equal(r.usage.completion_tokens, 3);
    }
    const s = await viaMesh.chat.completions.create({ ...chat(model, 'Hello', { max_tokens: 3 }), stream: true });
    let n = 0;
    for await (const chunk of s) if (chunk.choices[0]?.delta?.content) n++;
    assert.ok(n > 0);
    assert.equal(await disconnects(server), disc0 + 1, 'finished forwarded requests count no disconnect');
  }
}));
