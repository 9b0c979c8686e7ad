// The official `openai` npm SDK against `llmesh serve` on the real stories260K model.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import OpenAI from 'openai';
import { startStories, getJson } from './server.mjs';

const MODEL = 'stories260K-f32';
let server, client;

before(async () => {
  server = await startStories();
  client = new OpenAI({ baseURL: server.baseURL, apiKey: 'unused', maxRetries: 0, timeout: 60000 });
});
after(async () => { await server?.stop(); });

const chat = (content, extra = {}) => ({
  model: MODEL, messages: [{ role: 'user', content }], max_tokens: 12, temperature: 0, ...extra,
});

function checkUsage(u) {
  for (const k of ['prompt_tokens', 'completion_tokens', 'total_tokens']) assert.ok(Number.isInteger(u[k]), `${k}: ${u[k]}`);
  assert.ok(u.prompt_tokens > 0);
  assert.equal(u.total_tokens, u.prompt_tokens + u.completion_tokens);
}

test('models.list names the served model', async () => {
  const ids = [];
  for await (const m of client.models.list()) ids.push(m.id);
  assert.deepEqual(ids, [MODEL]);
  const m = await client.models.retrieve(MODEL);
  assert.equal(m.id, MODEL);
  assert.equal(m.object, 'model');
  await assert.rejects(client.models.retrieve('no-such-model'), OpenAI.NotFoundError);
});

test('chat.completions.create: text, usage, finish_reason length', async () => {
  const r = await client.chat.completions.create(chat('Once upon a time', { max_tokens: 8 }));
  assert.equal(r.object, 'chat.completion');
  assert.equal(r.model, MODEL);
  assert.equal(r.choices.length, 1);
  const c = r.choices[0];
  assert.equal(c.message.role, 'assistant');
  assert.equal(typeof c.message.content, 'string');
  assert.ok(c.message.content.length > 0);
  assert.equal(c.finish_reason, 'length');
  checkUsage(r.usage);
  assert.equal(r.usage.completion_tokens, 8);
});

test('streaming with include_usage matches the non-streamed text', async () => {
  const body = chat('Once upon a time', { max_tokens: 20 });
  const whole = await client.chat.completions.create(body);
  const stream = await client.chat.completions.create({ ...body, stream: true, stream_options: { include_usage: true } });
  let text = '', finish = null, usage = null, chunks = 0, afterUsage = 0;
  for await (const chunk of stream) {
    chunks++;
    assert.equal(chunk.object, 'chat.completion.chunk');
    if (usage) afterUsage++;
    if (chunk.usage) {
      assert.deepEqual(chunk.choices, []);
      usage = chunk.usage;
      continue;
    }
    assert.equal(chunk.usage ?? null, null);
    const ch = chunk.choices[0];
    if (ch.delta?.content) text += ch.delta.content;
    if (ch.finish_reason) finish = ch.finish_reason;
  }
  assert.ok(chunks > 2);
  assert.equal(text, whole.choices[0].message.content);
  assert.equal(finish, whole.choices[0].finish_reason);
  assert.ok(usage, 'final usage chunk');
  assert.equal(afterUsage, 0, 'usage chunk is the last one');
  checkUsage(usage);
  assert.deepEqual(
    [usage.prompt_tokens, usage.completion_tokens],
    [whole.usage.prompt_tokens, whole.usage.completion_tokens]);
});

test('completions.create with a string and with a list of two prompts', async () => {
  const one = await client.completions.create({ model: MODEL, prompt: 'The cat', max_tokens: 6, temperature: 0 });
  assert.equal(one.object, 'text_completion');
  assert.equal(one.choices.length, 1);
  assert.equal(typeof one.choices[0].text, 'string');
  assert.ok(one.choices[0].text.length > 0);
  assert.equal(one.choices[0].finish_reason, 'length');
  checkUsage(one.usage);

  const two = await client.completions.create({ model: MODEL, prompt: ['Once upon a time', 'The cat'], max_tokens: 6, temperature: 0 });
  assert.equal(two.choices.length, 2);
  assert.deepEqual(two.choices.map((c) => c.index), [0, 1]);
  assert.equal(two.choices[1].text, one.choices[0].text);
  checkUsage(two.usage);
  assert.ok(two.usage.prompt_tokens > one.usage.prompt_tokens);
});

test('stop strings cut the answer', async () => {
  const body = chat('Once upon a time', { max_tokens: 40 });
  const full = (await client.chat.completions.create(body)).choices[0].message.content;
  assert.ok(full.length > 12, full);
  const stop = full.slice(8, 11);
  const r = await client.chat.completions.create({ ...body, stop: [stop] });
  assert.equal(r.choices[0].message.content, full.slice(0, full.indexOf(stop)));
  assert.equal(r.choices[0].finish_reason, 'stop');

  const c = await client.completions.create({ model: MODEL, prompt: 'Once upon a time', max_tokens: 40, temperature: 0 });
  const ctext = c.choices[0].text;
  const cstop = ctext.slice(6, 9);
  const cut = await client.completions.create({ model: MODEL, prompt: 'Once upon a time', max_tokens: 40, temperature: 0, stop: cstop });
  assert.equal(cut.choices[0].text, ctext.slice(0, ctext.indexOf(cstop)));
  assert.equal(cut.choices[0].finish_reason, 'stop');
});

test('logprobs in chat and completions', async () => {
  const r = await client.chat.completions.create(chat('Once upon a time', { max_tokens: 5, logprobs: true, top_logprobs: 3 }));
  const content = r.choices[0].logprobs.content;
  assert.equal(content.length, r.usage.completion_tokens);
  assert.equal(content.map((t) => t.token).join(''), r.choices[0].message.content);
  for (const t of content) {
    assert.ok(t.logprob <= 0);
    assert.equal(t.top_logprobs.length, 3);
    assert.ok(Math.abs(t.top_logprobs[0].logprob - t.logprob) < 1e-5, 'greedy picks the most likely token');
    assert.ok(Array.isArray(t.bytes));
  }
  const c = await client.completions.create({ model: MODEL, prompt: 'The cat', max_tokens: 4, temperature: 0, logprobs: 2 });
  const lp = c.choices[0].logprobs;
  assert.equal(lp.tokens.length, 4);
  assert.equal(lp.token_logprobs.length, 4);
  assert.equal(lp.top_logprobs.length, 4);
  assert.equal(lp.tokens.join(''), c.choices[0].text);
});

test('seed makes temperature 1 reproducible', async () => {
  const body = chat('Once upon a time', { max_tokens: 24, temperature: 1, seed: 1234 });
  const a = await client.chat.completions.create(body);
  const b = await client.chat.completions.create(body);
  assert.equal(a.choices[0].message.content, b.choices[0].message.content);
  const others = await Promise.all([5, 6, 7].map((seed) => client.chat.completions.create({ ...body, seed })));
  assert.ok(others.some((o) => o.choices[0].message.content !== a.choices[0].message.content),
    'different seeds give different text');
});

test('errors are the SDK typed errors', async () => {
  await assert.rejects(client.chat.completions.create(chat('hi', { n: 2 })), (e) => {
    assert.ok(e instanceof OpenAI.BadRequestError, e.constructor.name);
    assert.equal(e.status, 400);
    assert.match(e.message, /'n'/);
    assert.equal(e.param, 'n');
    assert.equal(e.type, 'invalid_request_error');
    return true;
  });
  await assert.rejects(client.chat.completions.create(chat('hi', { temperature: 7 })), (e) => {
    assert.ok(e instanceof OpenAI.BadRequestError, e.constructor.name);
    assert.equal(e.status, 400);
    assert.match(e.message, /temperature/);
    return true;
  });
  await assert.rejects(client.chat.completions.create(chat('hi', { model: 'no-such-model' })), (e) => {
    assert.ok(e instanceof OpenAI.NotFoundError, e.constructor.name);
    assert.equal(e.status, 404);
    assert.match(e.message, /no-such-model/);
    assert.equal(e.code, 'model_not_found');
    return true;
  });
  await assert.rejects(client.completions.create({ model: MODEL, prompt: 'x', suffix: 'y' }), OpenAI.BadRequestError);
});

const disconnects = async () =>
  Number((await (await fetch(`${server.root}/metrics`)).text()).match(/^llmesh_client_disconnects_total (\d+)/m)[1]);

test('aborting a stream midway frees the slot', async () => {
  const before = await disconnects();
  const ac = new AbortController();
  const stream = await client.chat.completions.create(
    chat('Once upon a time', { max_tokens: 200, temperature: 1, seed: 3, stream: true }), { signal: ac.signal });
  let got = 0, finish = null;
  for await (const chunk of stream) {
    if (chunk.choices[0]?.finish_reason) finish = chunk.choices[0].finish_reason;
    if (chunk.choices[0]?.delta?.content && ++got === 2) {
      ac.abort();
      break;
    }
  }
  assert.equal(got, 2);
  assert.equal(finish, null);
  const deadline = Date.now() + 5000;
  let h;
  while (Date.now() < deadline) {
    h = await getJson(`${server.root}/health`);
    if (h.slots.busy === 0 && await disconnects() > before) break;
    await new Promise((r) => setTimeout(r, 25));
  }
  assert.equal(h.status, 'ok');
  assert.equal(h.slots.busy, 0);
  assert.equal(await disconnects(), before + 1, 'the server saw the client go away');
  const r = await client.chat.completions.create(chat('Hello', { max_tokens: 2 }));
  assert.equal(r.usage.completion_tokens, 2);
});

// SIGTERM should stop the server promptly even while the SDK keeps an idle keep-alive
// connection open (every SDK client does, between requests).
test('SIGTERM exits promptly with an idle keep-alive connection open', async () => {
  const s = await startStories();
  const c = new OpenAI({ baseURL: s.baseURL, apiKey: 'unused', maxRetries: 0 });
  await c.models.list();
  const t = Date.now();
  const how = await s.stop({ graceMs: 3000 });
  assert.deepEqual(how, { code: 0, signal: null }, `ended after ${Date.now() - t} ms`);
});
