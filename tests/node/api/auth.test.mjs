// --api-key: both SDKs get their typed AuthenticationError with a wrong key, and work with the
// right one (OpenAI sends `Authorization: Bearer`, Anthropic `x-api-key`).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import OpenAI from 'openai';
import Anthropic from '@anthropic-ai/sdk';
import { startScripted } from './server.mjs';

const KEY = 'sk-llmesh-test-key';
let server;
before(async () => { server = await startScripted({ extra: ['--api-key', KEY] }); });
after(async () => { await server?.stop(); });

const openai = (apiKey) => new OpenAI({ baseURL: server.baseURL, apiKey, maxRetries: 0 });
const anthropic = (apiKey) => new Anthropic({ baseURL: server.root, apiKey, maxRetries: 0 });
const chat = { model: 'scripted', messages: [{ role: 'user', content: 'hello' }] };
const msg = { model: 'scripted', max_tokens: 50, messages: [{ role: 'user', content: 'hello' }] };

test('OpenAI SDK: wrong key is AuthenticationError, right key works', async () => {
  for (const call of [(c) => c.chat.completions.create(chat), (c) => c.models.list()]) {
    await assert.rejects(call(openai('wrong-key')), (e) => {
      assert.ok(e instanceof OpenAI.AuthenticationError, e.constructor.name);
      assert.equal(e.status, 401);
      assert.ok(e.message.length > 4);
      return true;
    });
  }
  const r = await openai(KEY).chat.completions.create(chat);
  assert.equal(r.choices[0].message.content, 'Hello there.');
  const ids = [];
  for await (const m of openai(KEY).models.list()) ids.push(m.id);
  assert.deepEqual(ids, ['scripted']);
});

test('Anthropic SDK: wrong key is AuthenticationError, right key works', async () => {
  await assert.rejects(anthropic('wrong-key').messages.create(msg), (e) => {
    assert.ok(e instanceof Anthropic.AuthenticationError, e.constructor.name);
    assert.equal(e.status, 401);
    assert.equal(e.error?.error?.type, 'authentication_error');
    return true;
  });
  await assert.rejects(anthropic('wrong-key').messages.countTokens({ model: 'scripted', messages: msg.messages }),
    Anthropic.AuthenticationError);
  const m = await anthropic(KEY).messages.create(msg);
  assert.equal(m.content[0].text, 'Hello there.');
  const s = await anthropic(KEY).messages.stream(msg).finalMessage();
  assert.equal(s.content[0].text, 'Hello there.');
});

test('Anthropic SDK with an Authorization bearer token (authToken) works too', async () => {
  const c = new Anthropic({ baseURL: server.root, apiKey: null, authToken: KEY, maxRetries: 0 });
  const m = await c.messages.create(msg);
  assert.equal(m.content[0].text, 'Hello there.');
});

test('health stays open without a key', async () => {
  const r = await fetch(`${server.root}/health`);
  assert.equal(r.status, 200);
});
