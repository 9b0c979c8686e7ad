// Spawns an llmesh server for the SDK tests and hands back its base URL.
//   LLMESH_BIN_DIR  where llmesh and llmesh_scripted_server live (default: build/bin)
//   LLMESH_SHARED   test data (default: ../shared relative to the repository)
import { spawn } from 'node:child_process';
import { mkdtempSync, writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import readline from 'node:readline';

const here = path.dirname(fileURLToPath(import.meta.url));
const repo = path.resolve(here, '..', '..', '..');
export const binDir = process.env.LLMESH_BIN_DIR ?? path.join(repo, 'build', 'bin');
export const sharedDir = process.env.LLMESH_SHARED ?? path.resolve(repo, '..', 'shared');
export const modelPath = (name) => path.join(sharedDir, 'models', name);

// Starts `binary args...`, waits for its {"event":"listening"} line and returns
// { root, baseURL, port, stop() }: root is http://127.0.0.1:PORT, baseURL adds /v1.
export async function startServer(binary, args, { timeoutMs = 30000 } = {}) {
  const child = spawn(path.join(binDir, binary), [...args, '--port', '0', '--json'], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stderr = '';
  child.stderr.on('data', (d) => { stderr += d; });
  const port = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`${binary} did not start within ${timeoutMs} ms: ${stderr}`));
    }, timeoutMs);
    const lines = readline.createInterface({ input: child.stdout });
    lines.on('line', (line) => {
      let j;
      try { j = JSON.parse(line); } catch { return; }
      if (j.event === 'listening') {
        clearTimeout(timer);
        resolve(j.port);
      }
    });
    child.on('error', (e) => { clearTimeout(timer); reject(e); });
    child.on('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`${binary} exited (${code}) before listening: ${stderr}`));
    });
  });
  const root = `http://127.0.0.1:${port}`;
  return {
    root,
    baseURL: `${root}/v1`,
    port,
    child,
    // SIGTERM, then SIGKILL after graceMs; resolves with how the process ended.
    async stop({ graceMs = 1500 } = {}) {
      if (child.exitCode !== null || child.signalCode !== null) return { code: child.exitCode, signal: child.signalCode };
      const exited = new Promise((r) => child.once('exit', (code, signal) => r({ code, signal })));
      child.kill('SIGTERM');
      const t = setTimeout(() => child.kill('SIGKILL'), graceMs);
      const how = await exited;
      clearTimeout(t);
      return how;
    },
  };
}

// `llmesh serve` on the real stories260K model.
export function startStories(extra = []) {
  return startServer('llmesh', ['serve', '-m', modelPath('stories260K-f32.gguf'), '--no-mesh', '-c', '256', '--parallel', '2', ...extra]);
}

export const defaultRules = [
  { when: 'weather', say: '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>' },
  { when: '<tool_response>', say: 'It is sunny in Paris.' },
  { when: 'think', say: '<think>\nTwo and two make four.\n</think>\n\nThe answer is 4.' },
  { when: '', say: 'Hello there.' },
];

// llmesh_scripted_server: Qwen3's tokenizer, template and parser in front of scripted answers.
export async function startScripted({ rules = defaultRules, extra = [] } = {}) {
  const dir = mkdtempSync(path.join(tmpdir(), 'llmesh-sdk-'));
  const script = path.join(dir, 'rules.json');
  writeFileSync(script, JSON.stringify(rules));
  const s = await startServer('llmesh_scripted_server',
    ['--gguf', modelPath('qwen3-tiny-q8_0.gguf'), '--script', script, '--name', 'scripted', '--parallel', '2', ...extra]);
  const stop = s.stop;
  s.stop = async (o) => { const how = await stop(o); rmSync(dir, { recursive: true, force: true }); return how; };
  return s;
}

export async function getJson(url) {
  const r = await fetch(url);
  return r.json();
}
