// The official `@anthropic-ai/sdk` against the scripted server: messages, tool use, streaming
// events, thinking blocks, stop sequences, count_tokens and typed errors.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import Anthropic from '@anthropic-ai/sdk';
import { Stream } from '@anthropic-ai/sdk/core/streaming';
import { startScripted } from './server.mjs';

let server, client;
before(async () => {
  server = await startScripted();
  // The SDK appends /v1/messages itself: the base URL is the server root.
  client = new Anthropic({ baseURL: server.root, apiKey: 'unused', maxRetries: 0, timeout: 60000 });
});
after(async () => { await server?.stop(); });

const tools = [{
  name: 'get_weather', description: 'Current weather',
  input_schema: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] },
}];
const ask = (content, extra = {}) => ({ model: 'scripted', max_tokens: 200, messages: [{ role: 'user', content }], ...extra });

test('messages.create: plain text', async () => {
  const m = await client.messages.create(ask('hello'));
  assert.equal(m.type, 'message');
  assert.equal(m.role, 'assistant');
  assert.equal(m.model, 'scripted');
  assert.match(m.id, /^msg_/);
  assert.deepEqual(m.content, [{ type: 'text', text: 'Hello there.' }]);
  assert.equal(m.stop_reason, 'end_turn');
  assert.equal(m.stop_sequence, null);
  assert.ok(Number.isInteger(m.usage.input_tokens) && m.usage.input_tokens > 0);
  assert.ok(Number.isInteger(m.usage.output_tokens) && m.usage.output_tokens > 0);

  const sys = await client.messages.create(ask('hello', { system: 'You are terse.', max_tokens: 2 }));
  assert.equal(sys.stop_reason, 'max_tokens');
  assert.equal(sys.usage.output_tokens, 2);
});

test('system blocks with cache_control, metadata and content blocks are accepted', async () => {
  const m = await client.messages.create({
    model: 'scripted', max_tokens: 50, metadata: { user_id: 'u-1' },
    system: [{ type: 'text', text: 'Be nice.', cache_control: { type: 'ephemeral' } }],
    messages: [{ role: 'user', content: [{ type: 'text', text: 'hello', cache_control: { type: 'ephemeral' } }] }],
  });
  assert.deepEqual(m.content, [{ type: 'text', text: 'Hello there.' }]);
});

test('tool_use round trip', async () => {
  const messages = [{ role: 'user', content: "What's the weather in Paris?" }];
  const m = await client.messages.create({ model: 'scripted', max_tokens: 200, tools, messages });
  assert.equal(m.stop_reason, 'tool_use');
  const uses = m.content.filter((b) => b.type === 'tool_use');
  assert.equal(uses.length, 1, JSON.stringify(m.content));
  assert.equal(uses[0].name, 'get_weather');
  assert.deepEqual(uses[0].input, { city: 'Paris' });
  assert.match(uses[0].id, /^toolu_/);

  messages.push({ role: 'assistant', content: m.content });
  messages.push({ role: 'user', content: [{ type: 'tool_result', tool_use_id: uses[0].id, content: 'sunny, 24 C' }] });
  const k = await client.messages.create({ model: 'scripted', max_tokens: 200, tools, messages });
  assert.equal(k.stop_reason, 'end_turn');
  assert.deepEqual(k.content, [{ type: 'text', text: 'It is sunny in Paris.' }]);
});

test('tool_choice forces the named tool', async () => {
  const m = await client.messages.create(ask('weather please', { tools, tool_choice: { type: 'tool', name: 'get_weather' } }));
  assert.equal(m.stop_reason, 'tool_use');
  const use = m.content.find((b) => b.type === 'tool_use');
  assert.equal(use?.name, 'get_weather', JSON.stringify(m.content));
  assert.deepEqual(use.input, { city: 'Paris' });
});

// Runs messages.stream() and returns the event types the SDK passes on, the events and the
// final message. (The SDK drops `ping` events: see wireEvents for the exact wire order.)
async function streamEvents(body) {
  const stream = client.messages.stream(body);
  const events = [];
  for await (const ev of stream) events.push(ev);
  return { types: events.map((e) => e.type), events, final: await stream.finalMessage() };
}

// The SSE events as sent, pings included: the SDK's own request and SSE parser, unfiltered.
async function wireEvents(body) {
  const response = await client.messages.create({ ...body, stream: true }).asResponse();
  const out = [];
  for await (const sse of Stream.rawEvents(response)) {
    const data = JSON.parse(sse.data);
    assert.equal(data.type, sse.event, 'the event name matches the data type');
    out.push(data);
  }
  return out;
}

// message_start, content_block_start, ping, content_block_delta..., content_block_stop,
// [content_block_start, content_block_delta..., content_block_stop]..., message_delta, message_stop
function checkOrder(types) {
  assert.deepEqual(types.slice(0, 3), ['message_start', 'content_block_start', 'ping'], types.join(','));
  assert.deepEqual(types.slice(-2), ['message_delta', 'message_stop'], types.join(','));
  const blocks = types.slice(1, -2).filter((t) => t !== 'ping');
  let open = false;
  for (const t of blocks) {
    if (t === 'content_block_start') { assert.ok(!open, types.join(',')); open = true; }
    else if (t === 'content_block_stop') { assert.ok(open, types.join(',')); open = false; }
    else assert.ok(open && t === 'content_block_delta', types.join(','));
  }
  assert.ok(!open);
  assert.equal(types.filter((t) => t === 'ping').length, 1);
}

test('streamed tool_use: exact wire event order; finalMessage holds the input as an object', async () => {
  const body = ask('weather in Paris?', { tools });
  const wire = await wireEvents(body);
  const types = wire.map((e) => e.type);
  checkOrder(types);
  // One tool_use block: start, ping, deltas, stop.
  assert.deepEqual(types.filter((t) => t !== 'content_block_delta'),
    ['message_start', 'content_block_start', 'ping', 'content_block_stop', 'message_delta', 'message_stop']);
  assert.equal(wire[1].content_block.type, 'tool_use');
  assert.equal(wire[1].content_block.name, 'get_weather');
  assert.deepEqual(wire[1].content_block.input, {});
  const deltas = wire.filter((e) => e.type === 'content_block_delta');
  assert.ok(deltas.length > 0);
  for (const e of deltas) {
    assert.equal(e.delta.type, 'input_json_delta');
    assert.equal(e.index, 0);
  }
  assert.deepEqual(JSON.parse(deltas.map((e) => e.delta.partial_json).join('')), { city: 'Paris' });
  assert.equal(wire.at(-2).delta.stop_reason, 'tool_use');
  assert.ok(wire.at(-2).usage.output_tokens > 0);
  assert.equal(wire[0].message.content.length, 0);
  assert.equal(wire[0].message.stop_reason, null);

  const { types: seen, final } = await streamEvents(body);
  assert.deepEqual(seen, types.filter((t) => t !== 'ping'));
  assert.equal(final.stop_reason, 'tool_use');
  assert.equal(final.content.length, 1);
  assert.equal(final.content[0].type, 'tool_use');
  assert.equal(final.content[0].name, 'get_weather');
  assert.deepEqual(final.content[0].input, { city: 'Paris' });
  assert.match(final.content[0].id, /^toolu_/);
});

test('messages.stream(): text events and finalText', async () => {
  const stream = client.messages.stream(ask('hello'));
  let text = '';
  stream.on('text', (delta) => { text += delta; });
  const final = await stream.finalMessage();
  assert.equal(text, 'Hello there.');
  assert.equal(final.content[0].text, 'Hello there.');
  assert.equal(final.stop_reason, 'end_turn');
  const types = (await wireEvents(ask('hello'))).map((e) => e.type);
  checkOrder(types);
  assert.deepEqual(types.filter((t) => t !== 'content_block_delta'),
    ['message_start', 'content_block_start', 'ping', 'content_block_stop', 'message_delta', 'message_stop']);
});

test('thinking blocks when thinking is enabled', async () => {
  const body = ask('think: what is 2+2?', { thinking: { type: 'enabled', budget_tokens: 1024 } });
  const m = await client.messages.create(body);
  assert.equal(m.content.length, 2, JSON.stringify(m.content));
  assert.equal(m.content[0].type, 'thinking');
  assert.equal(m.content[0].thinking, 'Two and two make four.');
  assert.equal(typeof m.content[0].signature, 'string');
  assert.deepEqual(m.content[1], { type: 'text', text: 'The answer is 4.' });
  assert.equal(m.stop_reason, 'end_turn');

  const wire = await wireEvents(body);
  checkOrder(wire.map((e) => e.type));
  assert.equal(wire[1].content_block.type, 'thinking');
  const { events, final } = await streamEvents(body);
  const starts = events.filter((e) => e.type === 'content_block_start').map((e) => [e.index, e.content_block.type]);
  assert.deepEqual(starts, [[0, 'thinking'], [1, 'text']]);
  assert.deepEqual(final.content.map((b) => b.type), ['thinking', 'text']);
  assert.equal(final.content[0].thinking, 'Two and two make four.');
  assert.equal(final.content[1].text, 'The answer is 4.');
  assert.ok(!final.content[1].text.includes('<think>'));

  // The thinking block goes back in the next turn as the SDK returned it.
  const again = await client.messages.create({
    ...body, messages: [...body.messages, { role: 'assistant', content: final.content }, { role: 'user', content: 'hello' }],
  });
  assert.equal(again.content.at(-1).text, 'Hello there.');
});

test('stop_sequences give stop_reason stop_sequence', async () => {
  const m = await client.messages.create(ask('hello', { stop_sequences: ['there'] }));
  assert.equal(m.stop_reason, 'stop_sequence');
  assert.equal(m.stop_sequence, 'there');
  assert.deepEqual(m.content, [{ type: 'text', text: 'Hello ' }]);

  const s = client.messages.stream(ask('hello', { stop_sequences: ['there'] }));
  const f = await s.finalMessage();
  assert.equal(f.stop_reason, 'stop_sequence');
  assert.equal(f.stop_sequence, 'there');
  assert.equal(f.content[0].text, 'Hello ');
});

test('messages.countTokens', async () => {
  const short = await client.messages.countTokens({ model: 'scripted', messages: [{ role: 'user', content: 'hi' }] });
  assert.ok(Number.isInteger(short.input_tokens) && short.input_tokens > 0);
  const long = await client.messages.countTokens({
    model: 'scripted', messages: [{ role: 'user', content: 'hi there, how is the weather in Paris today?' }], tools,
  });
  assert.ok(long.input_tokens > short.input_tokens);
  // The count matches what a request with the same messages is billed.
  const m = await client.messages.create(ask('hi'));
  assert.equal(short.input_tokens, m.usage.input_tokens + (m.usage.cache_read_input_tokens ?? 0) + (m.usage.cache_creation_input_tokens ?? 0));
});

test('errors are the SDK typed errors', async () => {
  await assert.rejects(client.messages.create(ask('hi', { temperature: 3 })), (e) => {
    assert.ok(e instanceof Anthropic.BadRequestError, e.constructor.name);
    assert.equal(e.status, 400);
    assert.match(e.message, /temperature/);
    assert.equal(e.error?.type, 'error');
    assert.equal(e.error?.error?.type, 'invalid_request_error');
    return true;
  });
  await assert.rejects(client.messages.create({ model: 'scripted', messages: [{ role: 'user', content: 'hi' }] }),
    Anthropic.BadRequestError, 'max_tokens is required');
  await assert.rejects(client.messages.create(ask('hi', { model: 'no-such-model' })), (e) => {
    assert.ok(e instanceof Anthropic.NotFoundError, e.constructor.name);
    assert.equal(e.status, 404);
    assert.match(e.message, /no-such-model/);
    assert.equal(e.error?.error?.type, 'not_found_error');
    return true;
  });
  await assert.rejects(client.messages.countTokens({ model: 'no-such-model', messages: [{ role: 'user', content: 'hi' }] }),
    Anthropic.NotFoundError);
});

// Anthropic's message_start already carries the final input split (uncached input_tokens and
// cache_read_input_tokens); message_delta repeats it. Clients that read usage at message_start
// (or only the SDK's snapshot before the end) should see the same numbers as at the end.
test('streamed message_start usage has the same input split as message_delta', async () => {
  const body = ask('hello again, friend');
  await client.messages.create(body);  // the prompt prefix is now cached
  const wire = await wireEvents(body);
  const start = wire[0].message.usage, end = wire.at(-2).usage;
  assert.equal(start.input_tokens + start.cache_read_input_tokens, end.input_tokens + end.cache_read_input_tokens);
  assert.deepEqual([start.input_tokens, start.cache_read_input_tokens], [end.input_tokens, end.cache_read_input_tokens],
    JSON.stringify({ start, end }));
});
