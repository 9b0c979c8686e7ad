#!/usr/bin/env node
// llama.cpp reference benchmark through node-llama-cpp's prebuilt CPU binary.
//
// Measures like llama-bench (pp/tg), on one context sequence:
//   prefill: one llama_decode of P prompt tokens in a single batch (batch size >= P),
//            logits for the last token only; tok/s = P / time.
//   decode:  N steps of [llama_decode of 1 token, greedy (argmax) sample on the CPU
//            sampler] (EOS ignored), starting from an EMPTY cache like llama-bench's tg test
//            and `llmesh bench` (positions 0..N-1); tok/s = N / time.  With
//            --decode-after-prompt it continues after the prompt instead (positions P..P+N-1).
// The KV cache is cleared before each test. One un-timed warm-up repetition first.
// The timed loop calls the addon's context methods directly (initBatch / addToBatch /
// decodeBatch / sampleToken), i.e. no per-token JS queueing of LlamaContextSequence.
//
// usage: node bench/llamacpp_bench.mjs -m MODEL.gguf [-t 2] [-p 128] [-n 128] [-r 3]
//        [--fa auto|on|off] [--warmup 1] [--decode-after-prompt] [--nlc-dir DIR] [-v]
// Prints one JSON object on stdout; progress/diagnostics on stderr.
import path from "node:path";
import fs from "node:fs";
import os from "node:os";
import { fileURLToPath, pathToFileURL } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));

function parseArgs(argv) {
  const a = { model: null, threads: 2, p: 128, n: 128, reps: 3, warmup: 1, fa: "off", afterPrompt: false,
    nlcDir: path.resolve(here, "../tests/node/node_modules/node-llama-cpp"), verbose: false };
  for (let i = 0; i < argv.length; i++) {
    const k = argv[i];
    const v = () => {
      if (i + 1 >= argv.length) throw new Error(`missing value for ${k}`);
      return argv[++i];
    };
    if (k === "-m" || k === "--model") a.model = v();
    else if (k === "-t" || k === "--threads") a.threads = parseInt(v(), 10);
    else if (k === "-p") a.p = parseInt(v(), 10);
    else if (k === "-n") a.n = parseInt(v(), 10);
    else if (k === "-r" || k === "--reps") a.reps = parseInt(v(), 10);
    else if (k === "--warmup") a.warmup = parseInt(v(), 10);
    else if (k === "--fa") a.fa = v();
    else if (k === "--decode-after-prompt") a.afterPrompt = true;
    else if (k === "--nlc-dir") a.nlcDir = path.resolve(v());
    else if (k === "-v" || k === "--verbose") a.verbose = true;
    else if (k === "-h" || k === "--help") {
      process.stdout.write(fs.readFileSync(fileURLToPath(import.meta.url), "utf8")
        .split("\n").filter((l) => l.startsWith("//")).map((l) => l.slice(3)).join("\n") + "\n");
      process.exit(0);
    } else throw new Error(`unknown argument ${k}`);
  }
  if (!a.model) throw new Error("-m MODEL.gguf is required");
  if (!(a.threads >= 1 && a.p >= 1 && a.n >= 1 && a.reps >= 1 && a.warmup >= 0))
    throw new Error("threads, -p, -n, -r must be >= 1 (warmup >= 0)");
  if (!["auto", "on", "off"].includes(a.fa)) throw new Error("--fa must be auto|on|off");
  return a;
}

const median = (xs) => {
  const s = [...xs].sort((x, y) => x - y);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};
const nowNs = () => process.hrtime.bigint();
const secs = (t0, t1) => Number(t1 - t0) / 1e9;
const log = (...x) => process.stderr.write(x.join(" ") + "\n");

async function main() {
  const args = parseArgs(process.argv.slice(2));
  const nlc = await import(pathToFileURL(path.join(args.nlcDir, "dist/index.js")).href);
  const nlcPkg = JSON.parse(fs.readFileSync(path.join(args.nlcDir, "package.json"), "utf8"));
  const { getLlama, LlamaLogLevel } = nlc;

  const llamaLogs = [];
  const llama = await getLlama({
    gpu: false,              // CPU backend only
    build: "never",          // prebuilt binary only: no compilation, no downloads
    usePrebuiltBinaries: true,
    skipDownload: true,
    progressLogs: false,
    maxThreads: args.threads, // hard cap of the thread splitter
    logLevel: args.verbose ? LlamaLogLevel.debug : LlamaLogLevel.warn,
    logger: (level, msg) => {
      llamaLogs.push(String(msg));
      if (args.verbose || level === LlamaLogLevel.error || level === LlamaLogLevel.fatal
          || level === LlamaLogLevel.warn) process.stderr.write(String(msg));
    },
  });
  if (llama.gpu !== false) throw new Error(`expected CPU backend, got gpu=${llama.gpu}`);

  const model = await llama.loadModel({ modelPath: path.resolve(args.model), gpuLayers: 0,
    useMmap: true });
  const ctxSize = Math.max(256, args.p + args.n + 16);
  const context = await model.createContext({
    contextSize: ctxSize,
    batchSize: Math.max(args.p, 512), // whole prompt in one llama_decode
    sequences: 1,
    threads: { ideal: args.threads, min: args.threads },
    flashAttention: args.fa === "auto" ? "auto" : args.fa === "on",
  });
  const sequence = context.getSequence();

  const ctx = context._ctx;             // the native AddonContext
  const seqId = sequence._sequenceId;
  if (ctx == null || seqId == null || typeof ctx.decodeBatch !== "function")
    throw new Error("node-llama-cpp internals changed: no AddonContext / sequence id");
  ctx.setThreads(args.threads);
  const threadsUsed = ctx.getThreads();
  if (threadsUsed !== args.threads)
    throw new Error(`context uses ${threadsUsed} threads, wanted ${args.threads}`);

  // Greedy CPU sampler (temperature 0 => argmax), no penalties.
  const sampler = new llama._bindings.AddonSampler(model._model);
  sampler.applyConfig({ temperature: 0, minP: 0, topK: 0, topP: 1, seed: 0 });

  // Deterministic pseudo-random prompt tokens (speed does not depend on which ids).
  // vocab size = rows of token_embd.weight (dims [n_embd, n_vocab]) from the GGUF header
  const embd = (model.fileInfo?.tensorInfo ?? []).find((t) => t.name === "token_embd.weight");
  const vocab = Number(embd?.dimensions?.[1] ?? 0);
  if (!(vocab > 0)) throw new Error("cannot determine vocab size (token_embd.weight not found)");
  let s = 12345;
  const prompt = new Uint32Array(args.p);
  for (let i = 0; i < args.p; i++) { // uniform over the vocabulary, like llama-bench
    s = (Math.imul(s, 1103515245) + 12345) >>> 0;
    prompt[i] = (s >>> 8) % vocab;
  }

  const clearKv = () => {
    if (!ctx.removeTokenCellsFromSequence(seqId, 0, -1)) throw new Error("KV clear failed");
  };

  async function oneRun() {
    clearKv();
    // prefill: P tokens, one batch, logits only for the last one
    ctx.initBatch(args.p);
    const li = ctx.addToBatch(seqId, 0, prompt, Uint32Array.of(args.p - 1));
    const t0 = nowNs();
    await ctx.decodeBatch();
    let tok = await ctx.sampleToken(li[0], sampler);
    const t1 = nowNs();
    // decode: N single-token steps
    const pos0 = args.afterPrompt ? args.p : 0;
    if (!args.afterPrompt) {
      clearKv();
      tok = prompt[0];
    }
    const one = new Uint32Array(1), outIdx = Uint32Array.of(0);
    const generated = [];
    const t2 = nowNs();
    for (let i = 0; i < args.n; i++) {
      one[0] = tok < 0 ? 0 : tok; // ignore EOS / sampling failure: keep going
      ctx.initBatch(1);
      const idx = ctx.addToBatch(seqId, pos0 + i, one, outIdx);
      await ctx.decodeBatch();
      tok = await ctx.sampleToken(idx[0], sampler);
      generated.push(tok);
    }
    const t3 = nowNs();
    const pre = secs(t0, t1), dec = secs(t2, t3);
    return { prefill_s: pre, decode_s: dec, prefill_tok_s: args.p / pre,
      decode_tok_s: args.n / dec, first_tokens: generated.slice(0, 8) };
  }

  for (let w = 0; w < args.warmup; w++) {
    const r = await oneRun();
    log(`warmup: prefill ${r.prefill_tok_s.toFixed(1)} tok/s, decode ${r.decode_tok_s.toFixed(2)} tok/s`);
  }
  const runs = [];
  for (let r = 0; r < args.reps; r++) {
    const x = await oneRun();
    runs.push(x);
    log(`rep ${r + 1}/${args.reps}: prefill ${x.prefill_tok_s.toFixed(1)} tok/s, decode ${x.decode_tok_s.toFixed(2)} tok/s`);
  }
  clearKv();

  const sysInfo = String(llama.systemInfo ?? "");
  // which CPU-variant backend library ggml picked (it dlopens the best one for this CPU)
  let cpuVariant = null;
  try {
    const maps = fs.readFileSync("/proc/self/maps", "utf8");
    cpuVariant = [...new Set(maps.match(/libggml-cpu-[A-Za-z0-9_]+\.so/g) ?? [])].join(",") || null;
  } catch { /* not Linux */ }
  if (!cpuVariant) cpuVariant = (llamaLogs.join("").match(/libggml-cpu-[A-Za-z0-9_]+\.so/) || [null])[0];
  const out = {
    engine: "llama.cpp",
    model: path.resolve(args.model),
    threads: args.threads,
    threads_used: threadsUsed,
    prompt_tokens: args.p,
    decode_tokens: args.n,
    reps: args.reps,
    warmup: args.warmup,
    flash_attention: args.fa,
    decode_from: args.afterPrompt ? "after_prompt" : "empty_cache",
    batch_size: context.batchSize,
    context_size: context.contextSize,
    prefill_tok_s: median(runs.map((r) => r.prefill_tok_s)),
    decode_tok_s: median(runs.map((r) => r.decode_tok_s)),
    runs,
    build: {
      node_llama_cpp: nlcPkg.version,
      llama_cpp_release: llama.llamaCppRelease,
      build_type: llama.buildType,
      gpu: llama.gpu,
      cpu_math_cores: llama.cpuMathCores,
      max_threads: llama.maxThreads,
      cpu_backend_variant: cpuVariant,
      system_info: sysInfo.trim(),
      host_cpus: os.cpus().length,
      host_cpu_model: os.cpus()[0]?.model,
    },
    model_info: {
      size_bytes: model.size,
      train_context_size: model.trainContextSize,
      vocab_size: vocab,
    },
  };
  sampler.dispose();
  await context.dispose();
  await model.dispose();
  await llama.dispose();
  process.stdout.write(JSON.stringify(out, null, 1) + "\n");
}

main().catch((e) => {
  process.stderr.write(`llamacpp_bench: ${e?.stack ?? e}\n`);
  process.exit(1);
});
