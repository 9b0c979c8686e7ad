#!/usr/bin/env python3
"""Serving benchmark: time to first token and aggregate throughput over HTTP at several
concurrency levels, side by side with the same workload run in-process on the scheduler
(llmesh_serve_inprocess), so the cost of the HTTP path shows up as a ratio and as
milliseconds per token.

Workload per stream: a distinct ~30-token prompt, greedy, EOS banned with logit_bias, exactly
--max-tokens generated, streamed over SSE from POST /v1/completions.

    python3 bench/serve_bench.py [--model bench/models/tinyllama-1.1b-q4_0.gguf]
                                 [--concurrency 1,4,16] [--max-tokens 64] [--reps 3]

The default model is the synthetic TinyLlama-1.1B Q4_0 that compare_llamacpp.py generates.
Writes bench/out/serve_bench.json and prints a table. Run on a quiet machine.
"""
import argparse
import http.client
import json
import os
import statistics
import subprocess
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "bench"))


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def bench_prompt(i):
    # Same text as serve_inprocess.cpp's bench_prompt().
    return (f"Request {i}: once upon a time, in a small village by the sea, there lived an old "
            "fisherman who told stories to the children every evening about")


def one_stream(port, prompt, max_tokens, eos, out):
    t0 = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    body = {"model": "bench", "prompt": prompt, "max_tokens": max_tokens, "temperature": 0,
            "stream": True, "stream_options": {"include_usage": True}}
    if eos is not None:
        body["logit_bias"] = {str(eos): -100}
    conn.request("POST", "/v1/completions", json.dumps(body), {"Content-Type": "application/json"})
    resp = conn.getresponse()
    if resp.status != 200:
        raise RuntimeError(f"HTTP {resp.status}: {resp.read()[:300]!r}")
    first = None
    tokens = 0
    buf = b""
    while True:
        chunk = resp.read1(65536)
        if not chunk:
            break
        buf += chunk
        while b"\n\n" in buf:
            ev, buf = buf.split(b"\n\n", 1)
            if not ev.startswith(b"data: "):
                continue
            data = ev[6:]
            if data == b"[DONE]":
                continue
            j = json.loads(data)
            if j.get("usage"):
                tokens = j["usage"]["completion_tokens"]
            elif j["choices"] and first is None and (j["choices"][0]["text"] or j["choices"][0]["finish_reason"]):
                first = time.perf_counter()
    conn.close()
    out.append({"ttft_ms": ((first or time.perf_counter()) - t0) * 1000, "tokens": tokens})


def http_level(port, c, max_tokens, eos, serial):
    results = []
    threads = [threading.Thread(target=one_stream, args=(port, bench_prompt(serial + i), max_tokens, eos, results))
               for i in range(c)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    if len(results) != c:
        raise RuntimeError("a stream failed")
    total = sum(r["tokens"] for r in results)
    ttft = sorted(r["ttft_ms"] for r in results)
    return {"concurrency": c, "tokens": total, "wall_s": wall, "agg_tok_s": total / wall,
            "ttft_ms_median": ttft[len(ttft) // 2], "ttft_ms_max": ttft[-1]}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=os.path.join(ROOT, "bench", "models", "tinyllama-1.1b-q4_0.gguf"))
    ap.add_argument("--bin", default=os.path.join(ROOT, "build", "bin"))
    ap.add_argument("--concurrency", default="1,4,16")
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--ctx", type=int, default=256)
    args = ap.parse_args()
    if not os.path.exists(args.model):
        if "tinyllama" in os.path.basename(args.model):
            log("serve_bench: generating the synthetic TinyLlama model (compare_llamacpp.py does the same)")
            import compare_llamacpp  # noqa: E402
            compare_llamacpp.ensure_model("tinyllama-q4_0")
        else:
            sys.exit(f"serve_bench: no model at {args.model}")
    levels = [int(x) for x in args.concurrency.split(",")]
    max_c = max(levels)
    common = ["-m", args.model, "-c", str(args.ctx), "-t", str(args.threads)]

    # EOS id for logit_bias, from the model.
    insp = json.loads(subprocess.run([os.path.join(args.bin, "llmesh"), "inspect", "--json", args.model],
                                     capture_output=True, text=True, check=True).stdout)
    meta = insp.get("metadata", {})
    eos = meta.get("tokenizer.ggml.eos_token_id")
    if isinstance(eos, dict):
        eos = eos.get("value")

    server = subprocess.Popen([os.path.join(args.bin, "llmesh"), "serve", *common, "--no-mesh", "--port", "0", "--json",
                               "--parallel", str(max_c), "--name", "bench"],
                              stdout=subprocess.PIPE, text=True)
    port = json.loads(server.stdout.readline())["port"]
    log(f"serve_bench: server on port {port}; model {os.path.basename(args.model)}")
    results = {"http": {c: [] for c in levels}, "inprocess": {c: [] for c in levels}}
    serial = 0
    try:
        # Warm-up: page the weights in for both paths.
        http_level(port, 1, 8, eos, 10_000)
        for rep in range(args.reps):
            for c in levels:
                # Alternate the two paths so drift on a noisy machine hits both alike.
                r = http_level(port, c, args.max_tokens, eos, serial)
                serial += c
                results["http"][c].append(r)
                log(f"  rep {rep + 1} http      c={c:2d}: {r['agg_tok_s']:7.2f} tok/s, ttft {r['ttft_ms_median']:7.1f} ms")
                server.send_signal(19)  # SIGSTOP: keep the idle server off the CPU meanwhile
                try:
                    p = subprocess.run([os.path.join(args.bin, "llmesh_serve_inprocess"), *common,
                                        "--concurrency", str(c), "--max-tokens", str(args.max_tokens)],
                                       capture_output=True, text=True, check=True)
                finally:
                    server.send_signal(18)  # SIGCONT
                r = json.loads(p.stdout.strip().splitlines()[-1])
                results["inprocess"][c].append(r)
                log(f"  rep {rep + 1} inprocess c={c:2d}: {r['agg_tok_s']:7.2f} tok/s, ttft {r['ttft_ms_median']:7.1f} ms")
    finally:
        server.terminate()
        server.wait()

    def med(path, c, key):
        return statistics.median(r[key] for r in results[path][c])

    rows = []
    print(f"\nmodel {os.path.basename(args.model)}, {args.max_tokens} tokens per stream, median of {args.reps}")
    print("| streams | TTFT HTTP (ms) | TTFT in-process (ms) | agg tok/s HTTP | agg tok/s in-process | HTTP / in-process | HTTP overhead per token (ms) |")
    print("|---|---|---|---|---|---|---|")
    for c in levels:
        h, i = med("http", c, "agg_tok_s"), med("inprocess", c, "agg_tok_s")
        # Per generated token of one stream: the extra time HTTP adds to each token's wall time.
        overhead_ms = (c / h - c / i) * 1000
        row = {"concurrency": c, "ttft_ms_http": med("http", c, "ttft_ms_median"),
               "ttft_ms_inprocess": med("inprocess", c, "ttft_ms_median"), "agg_tok_s_http": h,
               "agg_tok_s_inprocess": i, "ratio": h / i, "overhead_ms_per_token": overhead_ms}
        rows.append(row)
        print(f"| {c} | {row['ttft_ms_http']:.1f} | {row['ttft_ms_inprocess']:.1f} | {h:.2f} | {i:.2f} | "
              f"{h / i:.3f} | {overhead_ms:.2f} |")
    os.makedirs(os.path.join(ROOT, "bench", "out"), exist_ok=True)
    with open(os.path.join(ROOT, "bench", "out", "serve_bench.json"), "w") as f:
        json.dump({"model": args.model, "max_tokens": args.max_tokens, "reps": args.reps, "rows": rows,
                   "runs": results}, f, indent=1)


if __name__ == "__main__":
    main()
