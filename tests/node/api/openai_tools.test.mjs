// The `openai` SDK against the scripted server (Qwen3 template and output parser in front of
// scripted answers): tool calls, forced tool choice, reasoning_content.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import OpenAI from 'openai';
import { startScripted } from './server.mjs';

let server, client;
before(async () => {
  server = await startScripted();
  client = new OpenAI({ baseURL: server.baseURL, apiKey: 'unused', maxRetries: 0, timeout: 60000 });
});
after(async () => { await server?.stop(); });

const tools = [{
  type: 'function',
  function: {
    name: 'get_weather', description: 'Current weather',
    parameters: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] },
  },
}];

// Accumulates a streamed chat completion the way SDK users do.
async function collect(stream) {
  let content = '', reasoning = '', finish = null, role = null;
  const calls = [];
  for await (const chunk of stream) {
    const ch = chunk.choices[0];
    if (!ch) continue;
    const d = ch.delta ?? {};
    if (d.role) role = d.role;
    if (typeof d.content === 'string') content += d.content;
    if (typeof d.reasoning_content === 'string') reasoning += d.reasoning_content;
    for (const tc of d.tool_calls ?? []) {
      assert.ok(Number.isInteger(tc.index), 'each tool call delta has an index');
      const c = (calls[tc.index] ??= { id: '', type: 'function', function: { name: '', arguments: '' } });
      if (tc.id) c.id += tc.id;
      if (tc.function?.name) c.function.name += tc.function.name;
      if (tc.function?.arguments) c.function.arguments += tc.function.arguments;
    }
    if (ch.finish_reason) finish = ch.finish_reason;
  }
  return { role, content, reasoning, finish, calls };
}

test('tool call round trip', async () => {
  const messages = [{ role: 'user', content: "What's the weather in Paris?" }];
  const r = await client.chat.completions.create({ model: 'scripted', messages, tools });
  const c = r.choices[0];
  assert.equal(c.finish_reason, 'tool_calls');
  assert.ok(c.message.content === null || c.message.content === '', `content: ${c.message.content}`);
  assert.equal(c.message.tool_calls.length, 1);
  const call = c.message.tool_calls[0];
  assert.equal(call.type, 'function');
  assert.equal(call.function.name, 'get_weather');
  assert.deepEqual(JSON.parse(call.function.arguments), { city: 'Paris' });
  assert.equal(typeof call.id, 'string');
  assert.ok(call.id.length > 0);

  messages.push(c.message);
  messages.push({ role: 'tool', tool_call_id: call.id, content: 'sunny, 24 C' });
  const k = await client.chat.completions.create({ model: 'scripted', messages, tools });
  assert.equal(k.choices[0].message.content, 'It is sunny in Paris.');
  assert.equal(k.choices[0].finish_reason, 'stop');
  assert.equal(k.choices[0].message.tool_calls ?? undefined, undefined);
  assert.equal(k.usage.total_tokens, k.usage.prompt_tokens + k.usage.completion_tokens);
});

test('streamed tool call round trip', async () => {
  const messages = [{ role: 'user', content: 'weather in Paris?' }];
  const s = await collect(await client.chat.completions.create({ model: 'scripted', messages, tools, stream: true }));
  assert.equal(s.role, 'assistant');
  assert.equal(s.finish, 'tool_calls');
  assert.equal(s.calls.length, 1);
  assert.equal(s.calls[0].function.name, 'get_weather');
  assert.deepEqual(JSON.parse(s.calls[0].function.arguments), { city: 'Paris' });
  assert.ok(s.calls[0].id.length > 0);
  assert.ok(!s.content.includes('tool_call'), s.content);

  messages.push({ role: 'assistant', content: null, tool_calls: s.calls });
  messages.push({ role: 'tool', tool_call_id: s.calls[0].id, content: 'sunny' });
  const k = await collect(await client.chat.completions.create({ model: 'scripted', messages, tools, stream: true }));
  assert.equal(k.content, 'It is sunny in Paris.');
  assert.equal(k.finish, 'stop');
  assert.equal(k.calls.length, 0);
});

test('the SDK stream helper assembles the tool call', async () => {
  const stream = client.chat.completions.stream({
    model: 'scripted', messages: [{ role: 'user', content: 'weather in Paris?' }], tools,
  });
  const done = await stream.finalChatCompletion();
  const m = done.choices[0].message;
  assert.equal(done.choices[0].finish_reason, 'tool_calls');
  assert.equal(m.tool_calls[0].function.name, 'get_weather');
  assert.deepEqual(JSON.parse(m.tool_calls[0].function.arguments), { city: 'Paris' });
});

test('tool_choice forcing a named function', async () => {
  // The server starts the answer with the call itself (a prefill); the script completes it.
  const body = { model: 'scripted', messages: [{ role: 'user', content: 'weather please' }], tools };
  for (const tool_choice of [{ type: 'function', function: { name: 'get_weather' } }, 'required']) {
    const r = await client.chat.completions.create({ ...body, tool_choice });
    const m = r.choices[0].message;
    assert.equal(m.tool_calls?.length, 1, JSON.stringify(r));
    assert.equal(m.tool_calls[0].function.name, 'get_weather');
    assert.deepEqual(JSON.parse(m.tool_calls[0].function.arguments), { city: 'Paris' });
    assert.equal(r.choices[0].finish_reason, 'tool_calls');
    assert.ok(m.content === null || m.content === '');
  }
  const s = await collect(await client.chat.completions.create({
    ...body, stream: true, tool_choice: { type: 'function', function: { name: 'get_weather' } },
  }));
  assert.equal(s.finish, 'tool_calls');
  assert.equal(s.calls[0].function.name, 'get_weather');
  assert.deepEqual(JSON.parse(s.calls[0].function.arguments), { city: 'Paris' });
  // 'none': the tools are hidden, no tool_calls come back.
  const none = await client.chat.completions.create({ ...body, messages: [{ role: 'user', content: 'hello' }], tool_choice: 'none' });
  assert.equal(none.choices[0].message.tool_calls ?? undefined, undefined, JSON.stringify(none));
  assert.equal(none.choices[0].message.content, 'Hello there.');
});

// The script would greet instead of calling: the model ends right after the server's prefill.
test('a forced call the model abandons does not leak the prefill markup', async () => {
  const r = await client.chat.completions.create({
    model: 'scripted', messages: [{ role: 'user', content: 'hello, please' }], tools,
    tool_choice: { type: 'function', function: { name: 'get_weather' } },
  });
  const m = r.choices[0].message;
  assert.ok(!(m.content ?? '').includes('<tool_call>'), JSON.stringify(r));
});

test('thinking is reasoning_content, never <think> in content', async () => {
  const body = { model: 'scripted', messages: [{ role: 'user', content: 'think: what is 2+2?' }] };
  const r = await client.chat.completions.create(body);
  const m = r.choices[0].message;
  assert.equal(m.content, 'The answer is 4.');
  assert.equal(m.reasoning_content, 'Two and two make four.');
  assert.equal(r.choices[0].finish_reason, 'stop');

  const s = await collect(await client.chat.completions.create({ ...body, stream: true }));
  assert.equal(s.content, 'The answer is 4.');
  assert.equal(s.reasoning, 'Two and two make four.');
  assert.ok(!s.content.includes('<think>') && !s.content.includes('</think>'));
  assert.ok(!s.reasoning.includes('<think>') && !s.reasoning.includes('</think>'));
  assert.equal(s.finish, 'stop');
});

test('newer SDK request shapes: developer role, content parts, max_completion_tokens', async () => {
  const r = await client.chat.completions.create({
    model: 'scripted', max_completion_tokens: 2,
    messages: [{ role: 'developer', content: 'Be nice.' }, { role: 'user', content: [{ type: 'text', text: 'hello' }] }],
  });
  assert.equal(r.choices[0].message.content, 'Hello there');
  assert.equal(r.choices[0].finish_reason, 'length');
  assert.equal(r.usage.completion_tokens, 2);
  const all = await Promise.all(['hello', 'weather?', 'think: 1+1', 'hi'].map((content) =>
    client.chat.completions.create({ model: 'scripted', messages: [{ role: 'user', content }], tools })));
  assert.deepEqual(all.map((x) => x.choices[0].finish_reason), ['stop', 'tool_calls', 'stop', 'stop']);
  assert.equal(all[2].choices[0].message.reasoning_content, 'Two and two make four.');
});
