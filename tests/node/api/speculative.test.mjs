// Speculative decoding seen through the official SDKs: `llmesh serve --draft` and `--spec ngram`
// on stories260K must give, at temperature 0, exactly the text, token counts and finish reasons of
// the same server without speculation, on every endpoint (chat.completions, completions and
// Anthropic messages), streamed or not, with max_tokens, stop sequences and concurrent requests.
// Also: the speculative metrics and /health block, and a draft that cannot work is refused at
// startup.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import path from 'node:path';
import OpenAI from 'openai';
import Anthropic from '@anthropic-ai/sdk';
import { startServer, modelPath, binDir, getJson } from './server.mjs';

const MODEL = 'stories260K-f32';
const DRAFT = 'stories260K-q4_0.gguf';
const base = ['serve', '-m', modelPath(`${MODEL}.gguf`), '--no-mesh', '-c', '256', '--parallel', '4', '-q'];

// name -> { server, oa, an }; 'plain' is the reference the others must match. 'draft' and
// 'ngram' draft a full window every step (--draft-fixed), so every answer goes through
// verification and the metrics below are certain; 'adaptive' is the default policy, which on a
// model as small as stories260K may find that drafting does not pay and mostly decode plainly.
const S = {};
const SPEC = ['draft', 'ngram', 'adaptive'];

before(async () => {
  const started = await Promise.all([
    startServer('llmesh', base),
    startServer('llmesh', [...base, '--draft', modelPath(DRAFT), '--draft-fixed']),
    startServer('llmesh', [...base, '--spec', 'ngram', '--draft-fixed']),
    startServer('llmesh', [...base, '--draft', modelPath(DRAFT)]),
  ]);
  ['plain', 'draft', 'ngram', 'adaptive'].forEach((name, i) => {
    const server = started[i];
    S[name] = {
      server,
      oa: new OpenAI({ baseURL: server.baseURL, apiKey: 'unused', maxRetries: 0, timeout: 60000 }),
      an: new Anthropic({ baseURL: server.root, apiKey: 'unused', maxRetries: 0, timeout: 60000 }),
    };
  });
});
after(async () => { await Promise.all(Object.values(S).map((s) => s.server.stop())); });

// Each endpoint, streamed or not, reduced to { text, tokens, finish, stopSequence }.
const API = {
  async chat(s, prompt, opts, stream) {
    const body = { model: MODEL, messages: [{ role: 'user', content: prompt }], temperature: 0, ...opts };
    if (opts.stop_sequences) { body.stop = opts.stop_sequences; delete body.stop_sequences; }
    if (!stream) {
      const r = await s.oa.chat.completions.create(body);
      return { text: r.choices[0].message.content, tokens: r.usage.completion_tokens, finish: r.choices[0].finish_reason };
    }
    const st = await s.oa.chat.completions.create({ ...body, stream: true, stream_options: { include_usage: true } });
    let text = '', finish = null, tokens = null;
    for await (const c of st) {
      if (c.usage) { tokens = c.usage.completion_tokens; continue; }
      const ch = c.choices[0];
      if (ch.delta?.content) text += ch.delta.content;
      if (ch.finish_reason) finish = ch.finish_reason;
    }
    return { text, tokens, finish };
  },
  async completions(s, prompt, opts, stream) {
    const body = { model: MODEL, prompt, temperature: 0, ...opts };
    if (opts.stop_sequences) { body.stop = opts.stop_sequences; delete body.stop_sequences; }
    if (!stream) {
      const r = await s.oa.completions.create(body);
      return { text: r.choices[0].text, tokens: r.usage.completion_tokens, finish: r.choices[0].finish_reason };
    }
    const st = await s.oa.completions.create({ ...body, stream: true, stream_options: { include_usage: true } });
    let text = '', finish = null, tokens = null;
    for await (const c of st) {
      if (c.usage) tokens = c.usage.completion_tokens;
      const ch = c.choices?.[0];
      if (!ch) continue;
      if (ch.text) text += ch.text;
      if (ch.finish_reason) finish = ch.finish_reason;
    }
    return { text, tokens, finish };
  },
  async messages(s, prompt, opts, stream) {
    const body = { model: MODEL, messages: [{ role: 'user', content: prompt }], temperature: 0, ...opts };
    if (!stream) {
      const m = await s.an.messages.create(body);
      const text = m.content.filter((b) => b.type === 'text').map((b) => b.text).join('');
      return { text, tokens: m.usage.output_tokens, finish: m.stop_reason, stopSequence: m.stop_sequence };
    }
    const st = await s.an.messages.create({ ...body, stream: true });
    let text = '', finish = null, tokens = null, stopSequence;
    for await (const e of st) {
      if (e.type === 'content_block_delta' && e.delta.type === 'text_delta') text += e.delta.text;
      if (e.type === 'message_delta') {
        finish = e.delta.stop_reason;
        stopSequence = e.delta.stop_sequence;
        tokens = e.usage.output_tokens;
      }
    }
    return { text, tokens, finish, stopSequence };
  },
};
const LENGTH = { chat: 'length', completions: 'length', messages: 'max_tokens' };
const STOPPED = { chat: 'stop', completions: 'stop', messages: 'stop_sequence' };

// The plain server's answers, each asked once.
const plainCache = new Map();
function plain(api, prompt, opts = {}, stream = false) {
  const key = JSON.stringify([api, prompt, opts, stream]);
  if (!plainCache.has(key)) plainCache.set(key, API[api](S.plain, prompt, opts, stream));
  return plainCache.get(key);
}
const show = (api, prompt, opts, stream, who) =>
  `${who} ${api} ${stream ? 'streamed' : 'whole'} ${JSON.stringify({ prompt, ...opts })}`;

// Asks every speculative server (streamed and not) and compares with the plain answer.
async function sameAsPlain(api, prompt, opts) {
  const ref = await plain(api, prompt, opts);
  const refStream = await plain(api, prompt, opts, true);
  assert.deepEqual(refStream, ref, `plain server: streaming differs from non-streaming: ${show(api, prompt, opts, true, 'plain')}`);
  const got = await Promise.all(SPEC.flatMap((who) => [false, true].map(async (stream) =>
    [who, stream, await API[api](S[who], prompt, opts, stream)])));
  for (const [who, stream, r] of got)
    assert.deepEqual(r, ref, `speculative output differs from plain: ${show(api, prompt, opts, stream, who)}`);
  return ref;
}

const PROMPTS = ['Once upon a time', 'The little dog', 'Lily and Tom went to the park', 'One day, a big bird',
  'Sam had a red ball', 'The sun was hot and'];
// Repeats itself, so prompt lookup (--spec ngram) finds drafts the model keeps.
const REPEAT = 'Tom said: "I like the big red ball. I like the big red ball. I like the big';

test('greedy text, token count and finish reason equal plain serving (whole and streamed, 3 endpoints)', async () => {
  for (const api of Object.keys(API)) {
    for (const prompt of [PROMPTS[0], PROMPTS[1], REPEAT]) {
      const r = await sameAsPlain(api, prompt, { max_tokens: 64 });
      assert.ok(r.text.length > 40, `${api} ${prompt}: long enough to speculate: ${JSON.stringify(r.text)}`);
      assert.ok(r.tokens > 0 && r.tokens <= 64);
    }
  }
});

test('max_tokens honoured: same count and a length finish', async () => {
  for (const api of Object.keys(API)) {
    for (const n of [1, 5, 33, 48]) {
      const r = await sameAsPlain(api, PROMPTS[2], { max_tokens: n });
      assert.equal(r.tokens, n, `${api} max_tokens ${n}: ${JSON.stringify(r)}`);
      assert.equal(r.finish, LENGTH[api]);
    }
  }
  // Up to the last position of the slot's context: windows must not run past it.
  const pt = (await S.plain.oa.completions.create({ model: MODEL, prompt: PROMPTS[0], max_tokens: 1 })).usage.prompt_tokens;
  const n = 256 - pt;
  const r = await sameAsPlain('completions', PROMPTS[0], { max_tokens: n });
  assert.equal(r.tokens, n);
  assert.equal(r.finish, 'length');
});

// Stop strings from the plain text: a word that begins after the first 20 characters, and a
// 7-character fragment from mid-word, past character 40, that likely spans tokens.
function pickStops(text) {
  const out = [];
  const m = /\s([A-Za-z]{3,})/g;
  for (let x; (x = m.exec(text));) if (x.index > 20) { out.push(x[1]); break; }
  const w = /[A-Za-z]{4,}/g;
  for (let x; (x = w.exec(text));) if (x.index > 40) { out.push(text.slice(x.index + 2, x.index + 9)); break; }
  return out.map((stop) => ({ stop, at: text.indexOf(stop) }));
}

test('stop sequences cut the text at the same place, finish stop / stop_sequence', async () => {
  for (const api of Object.keys(API)) {
    const prompt = PROMPTS[3];
    const full = await plain(api, prompt, { max_tokens: 64 });
    const picks = pickStops(full.text);
    assert.equal(picks.length, 2, `stop strings from ${JSON.stringify(full.text)}`);
    for (const p of picks) {
      const r = await sameAsPlain(api, prompt, { max_tokens: 64, stop_sequences: ['@@never@@', p.stop] });
      assert.equal(r.text, full.text.slice(0, p.at), `${api} stop ${JSON.stringify(p.stop)}`);
      assert.equal(r.finish, STOPPED[api]);
      assert.ok(r.tokens < full.tokens);
      if (api === 'messages') assert.equal(r.stopSequence, p.stop);
    }
  }
});

test('concurrent requests (6 at once per server, both SDKs) each equal the plain answer', async () => {
  const apis = ['chat', 'messages', 'completions', 'chat', 'messages', 'completions'];  // odd ones streamed
  const jobs = PROMPTS.map((prompt, i) => ({ api: apis[i], prompt, opts: { max_tokens: 48 + i }, stream: i % 2 === 1 }));
  const refs = [];
  for (const j of jobs) refs.push(await plain(j.api, j.prompt, j.opts));  // one at a time
  const runs = await Promise.all(SPEC.flatMap((who) => jobs.map(async (j, i) =>
    [who, i, await API[j.api](S[who], j.prompt, j.opts, j.stream)])));
  for (const [who, i, r] of runs) {
    const j = jobs[i];
    assert.deepEqual(r, refs[i], `concurrent: ${show(j.api, j.prompt, j.opts, j.stream, who)}`);
  }
});

test('a sampled streamed request on the draft server completes with the asked number of tokens', async () => {
  const N = 40;
  const st = await S.draft.oa.chat.completions.create({
    model: MODEL, messages: [{ role: 'user', content: PROMPTS[0] }], max_tokens: N, temperature: 0.9, seed: 7,
    stream: true, stream_options: { include_usage: true },
  });
  let text = '', finish = null, usage = null;
  for await (const c of st) {
    if (c.usage) { usage = c.usage; continue; }
    if (c.choices[0].delta?.content) text += c.choices[0].delta.content;
    if (c.choices[0].finish_reason) finish = c.choices[0].finish_reason;
  }
  assert.ok(usage, 'usage chunk');
  assert.ok(text.length > 0);
  if (finish === 'length') assert.equal(usage.completion_tokens, N);
  else {
    assert.equal(finish, 'stop', `finish ${finish}`);
    assert.ok(usage.completion_tokens > 0 && usage.completion_tokens <= N, `${usage.completion_tokens}`);
  }
});

function metric(text, name) {
  const m = text.match(new RegExp(`^${name}(?:\\{[^}]*\\})? (\\S+)$`, 'm'));
  assert.ok(m, `${name} missing from /metrics`);
  return Number(m[1]);
}

test('/metrics and /health report the speculation that happened', async () => {
  const text = await (await fetch(`${S.draft.server.root}/metrics`)).text();
  const drafted = metric(text, 'llmesh_spec_drafted_tokens_total');
  const accepted = metric(text, 'llmesh_spec_accepted_tokens_total');
  assert.ok(metric(text, 'llmesh_spec_windows_total') > 0);
  assert.ok(drafted > 0, `drafted ${drafted}`);
  assert.ok(accepted > 0, `accepted ${accepted}`);
  assert.ok(accepted <= drafted, `accepted ${accepted} > drafted ${drafted}`);
  assert.ok(metric(text, 'llmesh_spec_tokens_total') > 0);
  assert.equal(metric(text, 'llmesh_spec_failures_total'), 0);
  assert.ok(metric(text, 'llmesh_spec_tokens_per_verification') > 1);
  const ratio = metric(text, 'llmesh_spec_acceptance_ratio');
  assert.ok(ratio > 0 && ratio <= 1, `acceptance ${ratio}`);
  assert.match(text, new RegExp(`^llmesh_spec_info\\{proposer="[^"]*${DRAFT.replace(/\./g, '\\.')}[^"]*"\\} 1$`, 'm'));

  const h = await getJson(`${S.draft.server.root}/health`);
  assert.equal(h.status, 'ok');
  assert.ok(h.speculative, JSON.stringify(h));
  assert.match(h.speculative.proposer, new RegExp(DRAFT.replace(/\./g, '\\.')));
  assert.equal(h.speculative.drafted, drafted);
  assert.equal(h.speculative.accepted, accepted);
  assert.ok(h.speculative.tokens_per_verification > 1);

  const ng = await (await fetch(`${S.ngram.server.root}/metrics`)).text();
  assert.match(ng, /^llmesh_spec_info\{proposer="n-gram[^"]*"\} 1$/m);
  const ngDrafted = metric(ng, 'llmesh_spec_drafted_tokens_total');
  const ngAccepted = metric(ng, 'llmesh_spec_accepted_tokens_total');
  assert.ok(ngAccepted > 0, `n-gram accepted ${ngAccepted} (the REPEAT prompt should give some)`);
  assert.ok(ngAccepted <= ngDrafted, `n-gram accepted ${ngAccepted} > drafted ${ngDrafted}`);
  assert.match((await getJson(`${S.ngram.server.root}/health`)).speculative.proposer, /n-gram/);

  const plainMetrics = await (await fetch(`${S.plain.server.root}/metrics`)).text();
  assert.doesNotMatch(plainMetrics, /llmesh_spec_/);
  assert.equal((await getJson(`${S.plain.server.root}/health`)).speculative, undefined);
});

// Runs llmesh to its exit; { code, stderr }.
function runToExit(args, timeoutMs = 20000) {
  return new Promise((resolve, reject) => {
    const child = spawn(path.join(binDir, 'llmesh'), args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (d) => { stderr += d; });
    child.stdout.resume();
    const t = setTimeout(() => { child.kill('SIGKILL'); reject(new Error(`llmesh ${args.join(' ')} still running: ${stderr}`)); }, timeoutMs);
    child.on('error', (e) => { clearTimeout(t); reject(e); });
    child.on('exit', (code, signal) => { clearTimeout(t); resolve({ code, signal, stderr }); });
  });
}

test('a draft with another vocabulary, or --spec draft without one, is refused at startup', async () => {
  const serve = ['serve', '-m', modelPath(`${MODEL}.gguf`), '--no-mesh', '--port', '0', '--json'];
  const bad = await runToExit([...serve, '--draft', modelPath('llama-2-tiny-random.gguf')]);
  assert.equal(bad.signal, null, bad.stderr);
  assert.notEqual(bad.code, 0, bad.stderr);
  assert.match(bad.stderr, /vocabulary/, bad.stderr);
  assert.match(bad.stderr, /llama-2-tiny-random/, bad.stderr);

  const none = await runToExit([...serve, '--spec', 'draft']);
  assert.equal(none.signal, null, none.stderr);
  assert.notEqual(none.code, 0, none.stderr);
  assert.match(none.stderr, /--spec draft needs --draft/, none.stderr);
});
