#!/usr/bin/env python3
"""Speculative decoding figures (docs/benchmarks.md, "Speculative decoding").

  python3 bench/spec_bench.py [--bin build/bin] [--runs 7] [--threads 2] [--only local,synthetic,split]
                              [--quick] [--json]

Parts (all by default; --only takes a comma-separated subset):
  local      stories260K-f32 as the target, `llmesh run --json --temp 0 -n 256` on a few
             TinyStories-like prompts, without speculation, with the q4_0 and the skip3 drafts
             (--draft) and with n-gram prompt lookup (--spec ngram). Each round runs every
             configuration once, in a rotated order (each configuration runs all prompts);
             a round's tok/s is the configuration's decoded tokens over its decode time, summed
             over the prompts. Reported: medians over the rounds, the median of the per-round
             ratios to no speculation, acceptance and tokens per verification, and whether every
             configuration gave the same tokens as no speculation (greedy must be identical).
  synthetic  a synthetic TinyLlama-1.1B (random weights, the real shape; bench/models or
             generated under /tmp) with a synthetic stories15M-shaped draft of the same 32000-token
             vocabulary (generated under /tmp): `llmesh bench --draft ... --spec-accept RATES`,
             which decodes -n tokens through the scheduler without speculation, with the random
             draft as it is (its acceptance is meaningless, ~0) and with the draft forced to each
             acceptance rate (engine/speculative/forced_draft.h: the draft still runs, its tokens
             are replaced by the target's own greedy tokens with probability a). `llmesh bench`
             rotates the configurations itself, one rotation per rep (-r = --runs).
  split      stories260K-f32 as a layer package over 2 `llmesh serve --layers` stages, the mesh
             links through llmesh_fault_relay (bench/split_bench.py's machinery) on loopback and
             at --rtt ms RTT; the entry speculates with --draft stories260K-q4_0.gguf or --spec
             ngram, or not at all. tok/s of a greedy streamed 200-token completion (EOS banned),
             between the first and the last token; acceptance from the entry's /metrics
             (llmesh_spec_* counters, before and after each completion).
Before each part it waits (up to --quiet-timeout s) for other processes to use at most --quiet-idle
of the CPUs, and records the load it measured in every round.
--quick: 2 rounds, fewer tokens, for a check that everything runs.
"""
import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import split_bench as sb  # noqa: E402  (nodes, relay, streaming, CPU-noise helpers)

ROOT = sb.ROOT
SHARED = sb.SHARED
MODELS = os.path.join(SHARED, "models")
STORIES = os.path.join(MODELS, "stories260K-f32.gguf")
STORIES_Q4 = os.path.join(MODELS, "stories260K-q4_0.gguf")
STORIES_SKIP3 = os.path.join(MODELS, "stories260K-draft-skip3-f32.gguf")
TINYLLAMA = os.path.join(HERE, "models", "tinyllama-1.1b-q4_0.gguf")
PROMPTS = [
    "Once upon a time, there was a little girl named Lily. She loved to play outside",
    "Tom had a big red ball. One day, he went to the park with his mom",
    "The sun was shining and the birds were singing. A little dog named Max",
    "Once upon a time, in a small village by the sea, there lived",
]


def log(msg):
    print(f"spec_bench: {msg}", file=sys.stderr, flush=True)


cpu_snapshot = sb.cpu_snapshot  # counts this process's finished children (llmesh run, llmesh bench) as ours


def median_ratio(xs, base):
    return statistics.median(x / y for x, y in zip(xs, base))


# ---------------------------------------------------------------------------------------------
# local: llmesh run on stories260K

def run_once(llmesh, args, prompt, spec):
    cmd = [llmesh, "run", "-m", STORIES, "--json", "-n", str(args.local_tokens), "--temp", "0", "-t",
           str(args.threads), "-p", prompt, *spec]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: {out.stderr[-2000:]}")
    return json.loads(out.stdout)


def measure_local(b, args):
    configs = [("no speculation", []), ("--draft stories260K-q4_0", ["--draft", STORIES_Q4]),
               ("--draft stories260K-draft-skip3-f32", ["--draft", STORIES_SKIP3]), ("--spec ngram", ["--spec", "ngram"])]
    prompts = PROMPTS[:args.prompts]
    for label, spec in configs:  # warm-up: page cache
        run_once(b.llmesh, args, prompts[0], spec)
    rates = {c[0]: [] for c in configs}
    sums = {c[0]: {"windows": 0, "drafted": 0, "accepted": 0, "spec_tokens": 0, "forward_steps": 0} for c in configs}
    tokens = {c[0]: {} for c in configs}
    generated = {}
    noise = []
    for rnd in range(args.runs):
        snap = cpu_snapshot()
        order = configs[rnd % len(configs):] + configs[:rnd % len(configs)]
        for label, spec in order:
            n_tok, secs = 0, 0.0
            for p in prompts:
                j = run_once(b.llmesh, args, p, spec)
                n = j["generated_tokens"] - 1
                n_tok += n
                secs += n / j["decode_tok_s"]
                tokens[label].setdefault(p, j["tokens"])
                generated.setdefault(p, j["generated_tokens"])
                s = j.get("speculative")
                if s:
                    acc = sums[label]
                    acc["windows"] += s["windows"]
                    acc["drafted"] += s["drafted"]
                    acc["accepted"] += s["accepted"]
                    acc["spec_tokens"] += round(s["tokens_per_verification"] * s["windows"])
                    acc["forward_steps"] += s["forward_steps"]
            rates[label].append(n_tok / secs)
        noise.append(round(sb.others_cpu(snap, cpu_snapshot()), 3))
        log(f"local round {rnd + 1}/{args.runs} (others {noise[-1]:.0%}): " +
            ", ".join(f"{k} {v[-1]:.0f}" for k, v in rates.items()))
    base = rates["no speculation"]
    rows = []
    for label, spec in configs:
        a = sums[label]
        same = all(tokens[label][p] == tokens["no speculation"][p] for p in prompts)
        rows.append({"config": label, "tok_s_median": round(statistics.median(rates[label]), 1),
                     "tok_s_runs": [round(x, 1) for x in rates[label]],
                     "ratio_median_of_rounds": round(median_ratio(rates[label], base), 3),
                     "acceptance": round(a["accepted"] / a["drafted"], 3) if a["drafted"] else None,
                     "tokens_per_verification": round(a["spec_tokens"] / a["windows"], 2) if a["windows"] else None,
                     "windows": a["windows"], "drafted": a["drafted"], "accepted": a["accepted"],
                     "same_tokens": same})
    return {"model": os.path.basename(STORIES), "tokens_per_prompt": args.local_tokens,
            "generated_per_prompt": [generated[p] for p in prompts], "prompts": prompts, "runs": args.runs,
            "threads": args.threads, "others_cpu_per_round": noise, "rows": rows}


# ---------------------------------------------------------------------------------------------
# synthetic: llmesh bench --spec-accept on TinyLlama-1.1B with a stories15M-shaped draft

def synthetic_models(args):
    cache = os.path.join(tempfile.gettempdir(), "llmesh_spec_bench_models")
    os.makedirs(cache, exist_ok=True)
    target = args.synthetic_model
    if not os.path.exists(target):
        target = sb.ensure_model(TINYLLAMA)
    draft = os.path.join(cache, "draft-stories15m-q8_0.gguf")
    if not os.path.exists(draft):
        log(f"generating the synthetic draft at {draft}")
        subprocess.run([sys.executable, os.path.join(SHARED, "tools", "make_synthetic_gguf.py"), "--preset",
                        "stories15m", "--qtype", "q8_0", "--vocab-from",
                        os.path.join(MODELS, "llama-2-tiny-random.gguf"), draft], check=True)
    return target, draft


def measure_synthetic(b, args):
    target, draft = synthetic_models(args)
    cmd = [b.llmesh, "bench", "-m", target, "-t", str(args.threads), "-p", "0", "-n", str(args.synthetic_tokens),
           "-r", str(args.runs), "--draft", draft, "--spec-accept", args.rates, "--json", *args.synthetic_extra.split()]
    snap = cpu_snapshot()
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: {out.stderr[-2000:]}")
    j = json.loads(out.stdout)
    j["others_cpu"] = round(sb.others_cpu(snap, cpu_snapshot()), 3)
    j["command"] = " ".join(os.path.relpath(x, ROOT) if os.path.isabs(x) else x for x in cmd)
    j["draft_file"] = os.path.basename(draft)
    log(f"synthetic: " + ", ".join(f"{r['config']} {r['decode_tok_s']:.2f}" for r in j["rows"]))
    return j


# ---------------------------------------------------------------------------------------------
# split: 2 stages of stories260K, the entry speculating

def metrics(port):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        text = r.read().decode()
    out = {}
    for name in ("windows_total", "drafted_tokens_total", "accepted_tokens_total", "tokens_total"):
        m = re.search(rf"^llmesh_spec_{name} (\S+)$", text, re.M)
        out[name] = float(m.group(1)) if m else 0.0
    return out


def split_mesh(b, tag, pkg, ranges, entry_extra, relay):
    """Like Bench.mesh, but only the entry gets `entry_extra` (the proposer runs where sampling is)."""
    common = ["serve", "-m", pkg, "-t", str(b.args.threads), "-c", str(b.args.ctx), "--parallel", "1"]
    nodes = []
    for i, (lo, hi) in enumerate(ranges):
        join = ["--join", nodes[0].invite()] if nodes else []
        extra = list(entry_extra) if i == 0 else []
        nodes.append(b.node(f"{tag}-{i}", [*common, "--layers", f"{lo}..{hi}", *extra, *join], relay))
    entry = nodes[0]
    if not sb.wait_until(lambda: entry.split().get("entry"), 20):
        raise RuntimeError(f"{tag}: the entry never became ready: {entry.split()}")
    return nodes


def measure_split(b, args):
    pkg, manifest = b.package(STORIES)
    model_id = manifest["model_id"]
    eos = sb.eos_id(b.llmesh, STORIES) if args.ban_eos else None
    n = manifest["n_layer"]
    r2 = sb.stage_ranges(n, 2)
    relay = b.relay()
    specs = [("none", []), ("draft q4_0", ["--draft", STORIES_Q4]), ("ngram", ["--spec", "ngram"])]
    configs = []  # (label, rtt, entry, links)
    for tag, extra in specs:
        direct = split_mesh(b, f"d-{tag.split()[0]}", pkg, r2, extra, None)
        configs.append((f"2 stages, loopback, {tag}", 0, direct[0], None, tag))
        lat = split_mesh(b, f"l-{tag.split()[0]}", pkg, r2, extra, relay)
        configs.append((f"2 stages, {args.rtt:g} ms RTT, {tag}", args.rtt, lat[0], [x.link for x in lat], tag))
    for label, rtt, entry, links, _ in configs:  # warm-up
        if links:
            relay.latency(links, rtt / 2)
        sb.decode_rate(entry.port, model_id, 16, eos)
    res = {c[0]: [] for c in configs}
    spec = {c[0]: {"windows_total": 0, "drafted_tokens_total": 0, "accepted_tokens_total": 0, "tokens_total": 0}
            for c in configs}
    texts, ntok = {}, {}
    noise = []
    pids = [x.proc.pid for x in b.nodes] + [r.proc.pid for r in b.relays]
    for rnd in range(args.runs):
        snap = cpu_snapshot(pids)
        order = configs[rnd % len(configs):] + configs[:rnd % len(configs)]
        for label, rtt, entry, links, tag in order:
            if links:
                relay.latency(links, rtt / 2)
            before = metrics(entry.port)
            r = sb.decode_rate(entry.port, model_id, args.split_tokens, eos)
            after = metrics(entry.port)
            for k in spec[label]:
                spec[label][k] += after[k] - before[k]
            res[label].append(r["tok_s"])
            texts.setdefault(label, r["text"])
            ntok.setdefault(label, r["tokens"])
        noise.append(round(sb.others_cpu(snap, cpu_snapshot(pids)), 3))
        log(f"split round {rnd + 1}/{args.runs} (others {noise[-1]:.0%}): " +
            ", ".join(f"{k} {v[-1]:.1f}" for k, v in res.items()))
    rows = []
    for label, rtt, entry, links, tag in configs:
        base_label = f"2 stages, {'loopback' if rtt == 0 else f'{rtt:g} ms RTT'}, none"
        s = spec[label]
        med = statistics.median(res[label])
        rows.append({"config": label, "rtt_ms": rtt, "proposer": tag, "tok_s_median": round(med, 2),
                     "tok_s_runs": [round(x, 2) for x in res[label]],
                     "ratio_median_of_rounds": round(median_ratio(res[label], res[base_label]), 3),
                     "ms_per_token": round(1000 / med, 2),
                     "acceptance": round(s["accepted_tokens_total"] / s["drafted_tokens_total"], 3)
                     if s["drafted_tokens_total"] else None,
                     "tokens_per_verification": round(s["tokens_total"] / s["windows_total"], 2)
                     if s["windows_total"] else None,
                     "windows": int(s["windows_total"]), "drafted": int(s["drafted_tokens_total"]),
                     "accepted": int(s["accepted_tokens_total"]), "tokens": ntok[label],
                     "same_text": texts[label] == texts[base_label]})
    for x in list(b.nodes):
        x.stop()
        b.nodes.remove(x)
    relay.stop()
    b.relays.remove(relay)
    return {"model": os.path.basename(STORIES), "layers": r2, "rtt_ms": args.rtt, "max_tokens": args.split_tokens,
            "ban_eos": args.ban_eos, "runs": args.runs, "threads_per_node": args.threads,
            "others_cpu_per_round": noise, "rows": rows}


# ---------------------------------------------------------------------------------------------

def fmt_acc(x):
    return "-" if x is None else f"{x:.0%}"


def fmt_tpv(x):
    return "-" if x is None else f"{x:.2f}"


def print_tables(out):
    if "local" in out:
        d = out["local"]
        print(f"\nLocal, {d['model']}: `llmesh run --json --temp 0 -n {d['tokens_per_prompt']} -t {d['threads']}` on "
              f"{len(d['prompts'])} prompts ({d['generated_per_prompt']} tokens generated), median of {d['runs']} rounds; "
              f"other processes used {', '.join(f'{x:.0%}' for x in d['others_cpu_per_round'])} of the CPUs")
        print("| configuration | decode tok/s | vs none (median of rounds) | acceptance | tokens/verification | same tokens |")
        print("|---|---|---|---|---|---|")
        for r in d["rows"]:
            print(f"| {r['config']} | {r['tok_s_median']:.0f} | {r['ratio_median_of_rounds']:.2f}x | {fmt_acc(r['acceptance'])} | "
                  f"{fmt_tpv(r['tokens_per_verification'])} | {'yes' if r['same_tokens'] else 'NO'} |")
    if "synthetic" in out:
        d = out["synthetic"]
        print(f"\nSynthetic {os.path.basename(d['model'])} with {d['draft_file']} ({d['proposer']}): `llmesh bench` "
              f"-n {d['decode_tokens']} after a {d['prompt_tokens']}-token prompt, -t {d['threads']}, median of "
              f"{d['reps']} reps; other processes used {d['others_cpu']:.0%} of the CPUs")
        print("| configuration | decode tok/s | vs none (median of reps) | acceptance | tokens/verification | same tokens |")
        print("|---|---|---|---|---|---|")
        for r in d["rows"]:
            acc = fmt_acc(r["acceptance"]) if r["speculative"] else "-"
            tpv = fmt_tpv(r["tokens_per_verification"]) if r["speculative"] else "-"
            print(f"| {r['config']} | {r['decode_tok_s']:.2f} | {r['ratio_vs_plain_median_of_reps']:.2f}x | {acc} | {tpv} | "
                  f"{'yes' if r['same_tokens'] else 'NO'} |")
    if "split" in out:
        d = out["split"]
        print(f"\nSplit, {d['model']} as 2 stages {d['layers']}, {d['max_tokens']}-token greedy completion"
              f"{' (EOS banned)' if d['ban_eos'] else ''}, -t {d['threads_per_node']} per node, median of {d['runs']} "
              f"rounds; other processes used {', '.join(f'{x:.0%}' for x in d['others_cpu_per_round'])} of the CPUs")
        print("| configuration | tok/s | vs none, same RTT (median of rounds) | ms/token | acceptance | tokens/verification | same text |")
        print("|---|---|---|---|---|---|---|")
        for r in d["rows"]:
            print(f"| {r['config']} | {r['tok_s_median']:.1f} | {r['ratio_median_of_rounds']:.2f}x | {r['ms_per_token']:.2f} | "
                  f"{fmt_acc(r['acceptance'])} | {fmt_tpv(r['tokens_per_verification'])} | {'yes' if r['same_text'] else 'NO'} |")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bin", default=os.path.join(ROOT, "build", "bin"))
    ap.add_argument("--runs", type=int, default=7, help="rounds (synthetic: llmesh bench -r)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--ctx", type=int, default=512, help="-c of the split nodes")
    ap.add_argument("--only", default="local,synthetic,split")
    ap.add_argument("--prompts", type=int, default=3, help="local: how many of the built-in prompts")
    ap.add_argument("--local-tokens", type=int, default=256)
    ap.add_argument("--synthetic-model", default=TINYLLAMA)
    ap.add_argument("--synthetic-tokens", type=int, default=64)
    ap.add_argument("--synthetic-extra", default="", help="more `llmesh bench` options, e.g. --draft-fixed")
    ap.add_argument("--rates", default="0,0.3,0.5,0.7,0.8,0.9,1", help="synthetic: forced acceptance rates")
    ap.add_argument("--rtt", type=float, default=20, help="split: RTT (ms) through the fault relay")
    ap.add_argument("--split-tokens", type=int, default=200)
    ap.add_argument("--no-ban-eos", dest="ban_eos", action="store_false",
                    help="split: let EOS end the completion (default: banned by logit_bias, so exactly --split-tokens)")
    ap.add_argument("--quiet-idle", type=float, default=0.25, help="before each part, wait until other processes "
                    "use at most this fraction of the CPUs ...")
    ap.add_argument("--quiet-timeout", type=float, default=120, help="... for at most this many seconds")
    ap.add_argument("--quick", action="store_true", help="2 rounds, fewer tokens")
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of the tables")
    args = ap.parse_args()
    if args.quick:
        args.runs = min(args.runs, 2)
        args.prompts = min(args.prompts, 2)
        args.local_tokens = min(args.local_tokens, 64)
        args.synthetic_tokens = min(args.synthetic_tokens, 16)
        args.split_tokens = min(args.split_tokens, 64)
        args.quiet_timeout = min(args.quiet_timeout, 5)
    parts = args.only.split(",")
    b = sb.Bench(args)
    head = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    out = {"commit": head, "binary_mtime": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(os.path.getmtime(b.llmesh))),
           "threads": args.threads, "cpus": os.cpu_count(), "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
           "loadavg_start": os.getloadavg()}
    fns = {"local": measure_local, "synthetic": measure_synthetic, "split": measure_split}
    try:
        for part in ("local", "synthetic", "split"):
            if part not in parts:
                continue
            busy, waited = sb.wait_quiet(args.quiet_idle, args.quiet_timeout)
            log(f"{part}: other processes use {busy:.0%} of the CPUs (waited {waited} s)")
            before = {"others_cpu": busy, "waited_s": waited, "loadavg": os.getloadavg(),
                      "started": time.strftime("%H:%M:%SZ", time.gmtime())}
            out[part] = fns[part](b, args)
            out[part]["before"] = before
            out[part]["finished"] = time.strftime("%H:%M:%SZ", time.gmtime())
    finally:
        b.close()
    out["loadavg_end"] = os.getloadavg()
    out["finished"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    if args.json:
        print(json.dumps(out))
    else:
        print_tables(out)


if __name__ == "__main__":
    main()
