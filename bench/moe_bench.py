#!/usr/bin/env python3
"""Mixture-of-experts shard figures (docs/benchmarks.md, "Mixture-of-experts shards").

  python3 bench/moe_bench.py [--parts shards,quality] [--runs 5] [--llmesh build/bin/llmesh]
                             [--sources gguf,package] [--threads 2] [--prompt 64] [--gen 64] [--reps 2]
                             [--quick] [--json] [--save FILE]

Parts (both by default; --parts takes a comma-separated subset):
  shards   the synthetic Mixtral-style model (8 layers, dim 1024, 8 experts, 2 per token, Q4_0,
           random weights; `make_synthetic_gguf.py --preset llama-moe-8x`, cached in bench/models/).
           Its routing is meaningless, so the plans are made with the quality gate disabled
           (`llmesh moe plan --quick --core 0 --max-kl 100 --min-top1 0 --max-ppl-increase 100`;
           100 is the largest value the options accept): 2 nodes overlap 1, 3 nodes overlap 2 and
           4 nodes overlap 1. Then `llmesh bench -t T -p P -n N -r R --json` of the whole model and
           of every shard of every plan (`--moe-plan PLAN --moe-shard I`), each measurement its own
           process (so VmHWM / VmRSS are one node's), every configuration once per round in an
           order rotated each round, after one warm-up round that is not counted. Reported per
           configuration: medians over the rounds of decode and prefill tok/s and of peak RSS, the
           shard's weight bytes from the plan against the model's, and the medians of the per-round
           ratios to the whole model measured in the same round.
           Every configuration runs twice: from the GGUF file (--sources gguf: the experts of a
           layer are slices of merged ffn_*_exps tensors, one mapping) and from a layer package
           written under /tmp (--sources package: one file per expert, so a shard maps only its
           own). The weights are mmapped: RSS counts the file pages mapped into the process, which
           is what it touched rounded up to the page-cache folio (up to 2 MiB on this VM's kernel:
           an expert slice of a merged tensor drags in parts of its neighbours). The whole model
           counts only the experts its router picked during the run (a random router picks few).
           Nothing is dropped from the page cache (RSS is per process either way).
  quality  stories260K-moe4x2-noisy-f32 (5 layers, 4 experts, 2 per token, trained routing plus
           noise): `llmesh moe plan --json` (default calibration, default gate) for nodes 2/3/4 x
           overlap 1/2 (overlap <= nodes) x --core 0/1/2, and the default search (no --core) for
           3 nodes overlap 2 and 4 nodes overlap 1. Reported per grouping: experts per shard,
           per-shard KL / top-1 agreement / perplexity increase against the full model (worst
           shard and mean) and whether it passes the default gate (KL <= 0.05, top-1 >= 0.90,
           perplexity +5 %). Deterministic: no timing, no rounds.
Before the shards part it waits (up to --quiet-timeout s) for other processes to use at most
--quiet-idle of the CPUs, and it records their share in every round and the load average.
--quick: 2 rounds, -n 16, -p 16, -r 1: a check that everything runs.
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import split_bench as sb  # noqa: E402  (CPU-noise helpers)

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
SHARED = os.path.join(ROOT, "..", "shared")
MODELS = os.path.join(SHARED, "models")
SYNTH = os.path.join(HERE, "models", "llama-moe-8x-q4_0.gguf")
STORIES_MOE = os.path.join(MODELS, "stories260K-moe4x2-noisy-f32.gguf")
NO_GATE = ["--max-kl", "100", "--min-top1", "0", "--max-ppl-increase", "100"]
SHARD_PLANS = [(2, 1), (3, 2), (4, 1)]  # (nodes, overlap), core 0
QUALITY_SEARCH = [(3, 2), (4, 1)]  # default search (no --core)
MIB = 1048576


def log(msg):
    print(f"moe_bench: {msg}", file=sys.stderr, flush=True)


# CPU noise: split_bench's helpers (/proc/stat against our own and our children's time).
cpu_snapshot, others_cpu, wait_quiet = sb.cpu_snapshot, sb.others_cpu, sb.wait_quiet


def loadavg():
    return [round(x, 2) for x in os.getloadavg()]


# ---------------------------------------------------------------------------------------------

def run_json(cmd, ok=(0,)):
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode not in ok:
        raise RuntimeError(f"{' '.join(cmd)} (exit {out.returncode}): {out.stderr[-2000:]}")
    return json.loads(out.stdout)


def ensure_synth(path):
    if os.path.exists(path):
        return path
    os.makedirs(os.path.dirname(path), exist_ok=True)
    log(f"generating the synthetic llama-moe-8x Q4_0 at {path}")
    tmp = path + ".partial"
    subprocess.run([sys.executable, os.path.join(SHARED, "tools", "make_synthetic_gguf.py"), "--preset",
                    "llama-moe-8x", "--qtype", "q4_0", "--vocab-from",
                    os.path.join(MODELS, "llama-2-tiny-random.gguf"), tmp], check=True)
    os.replace(tmp, path)
    return path


def plan_cmd(llmesh, args, model, nodes, overlap, core, out, extra=()):
    cmd = [llmesh, "moe", "plan", model, "--nodes", str(nodes), "--overlap", str(overlap), "-t", str(args.threads),
           "-o", out, "--json", "-q", *extra]
    if core is not None:
        cmd += ["--core", str(core)]
    return cmd


def rel(cmd):
    return " ".join(os.path.basename(x) if i == 0 else
                    (os.path.relpath(x, ROOT) if os.path.isabs(x) and not x.startswith(tempfile.gettempdir()) else
                     (os.path.basename(x) if os.path.isabs(x) else x)) for i, x in enumerate(cmd))


def per_layer_range(experts):
    sizes = [len(layer) for layer in experts]
    return f"{min(sizes)}" if min(sizes) == max(sizes) else f"{min(sizes)}-{max(sizes)}"


# ---------------------------------------------------------------------------------------------
# shards: llmesh bench of the whole synthetic model and of every shard

def measure_shards(llmesh, args, tmp):
    model = ensure_synth(args.model)
    model_file_bytes = os.path.getsize(model)
    plans = []
    for nodes, overlap in SHARD_PLANS:
        path = os.path.join(tmp, f"plan-{nodes}n-o{overlap}.json")
        cmd = plan_cmd(llmesh, args, model, nodes, overlap, 0, path, ["--quick", *NO_GATE])
        t0 = time.monotonic()
        j = run_json(cmd)
        log(f"plan {nodes} nodes overlap {overlap}: {[s['expert_count'] for s in j['shards']]} experts per shard "
            f"({time.monotonic() - t0:.0f} s)")
        plans.append({"nodes": nodes, "overlap": overlap, "path": path, "json": j, "command": rel(cmd)})

    sources = {}
    for src in args.sources:
        if src == "gguf":
            sources[src] = model
        else:  # a layer package: every expert its own file (docs/layer-packages.md)
            pkg = os.path.join(tmp, "pkg")
            subprocess.run([llmesh, "package", model, pkg, "-q"], check=True)
            sources[src] = pkg
    opts = ["-t", str(args.threads), "-p", str(args.prompt), "-n", str(args.gen), "-r", str(args.reps), "--json"]
    configs = []
    for src, path in sources.items():
        configs.append({"label": f"{src}: whole model", "source": src, "plan": None, "shard": None,
                        "cmd": [llmesh, "bench", "-m", path, *opts]})
        for p in plans:
            for s in p["json"]["shards"]:
                configs.append({"label": f"{src}: {p['nodes']} nodes overlap {p['overlap']}, shard {s['index']}",
                                "source": src, "plan": p, "shard": s,
                                "cmd": [llmesh, "bench", "-m", path, *opts, "--moe-plan", p["path"], "--moe-shard",
                                        str(s["index"])]})
    for c in configs:
        c["runs"] = []
    log(f"warm-up round ({len(configs)} configurations)")
    for c in configs:
        run_json(c["cmd"])
    noise, loads = [], []
    for rnd in range(args.runs):
        snap = cpu_snapshot()
        k = rnd % len(configs)
        for c in configs[k:] + configs[:k]:
            c["runs"].append(run_json(c["cmd"]))
        noise.append(round(others_cpu(snap, cpu_snapshot()), 3))
        loads.append(loadavg()[0])
        log(f"round {rnd + 1}/{args.runs} (others {noise[-1]:.0%}, load {loads[-1]}): " +
            ", ".join(f"{c['label']} {c['runs'][-1]['decode_tok_s']:.1f}" for c in configs))

    shape = plans[0]["json"]["model"]
    model_bytes = shape["bytes"]
    rows = []
    for c in configs:
        r = c["runs"]
        full = next(x for x in configs if x["source"] == c["source"] and x["plan"] is None)["runs"]
        med = lambda key: statistics.median(x[key] for x in r)  # noqa: E731
        ratio = lambda key: statistics.median(x[key] / f[key] for x, f in zip(r, full))  # noqa: E731
        s = c["shard"]
        row = {"config": c["label"], "source": c["source"],
               "nodes": c["plan"]["nodes"] if c["plan"] else 1,
               "overlap": c["plan"]["overlap"] if c["plan"] else None,
               "shard": s["index"] if s else None,
               "experts": s["expert_count"] if s else shape["n_expert"] * shape["n_layer"],
               "experts_per_layer": per_layer_range(s["experts"]) if s else str(shape["n_expert"]),
               "weight_bytes": s["bytes"] if s else model_bytes,
               "weight_share": round((s["bytes"] if s else model_bytes) / model_bytes, 4),
               "decode_tok_s": round(med("decode_tok_s"), 2),
               "decode_ratio": round(ratio("decode_tok_s"), 3),
               "prefill_tok_s": round(med("prefill_tok_s"), 2),
               "prefill_ratio": round(ratio("prefill_tok_s"), 3),
               "peak_rss_bytes": int(med("peak_rss_bytes")),
               "peak_rss_ratio": round(ratio("peak_rss_bytes"), 4),
               "peak_rss_over_model_bytes": round(med("peak_rss_bytes") / model_bytes, 4),
               "rss_bytes": int(med("rss_bytes")),
               "weight_bytes_per_token": r[0]["weight_bytes_per_token"],
               "load_s": round(med("load_s"), 3),
               "decode_runs": [round(x["decode_tok_s"], 2) for x in r],
               "prefill_runs": [round(x["prefill_tok_s"], 2) for x in r],
               "peak_rss_runs": [x["peak_rss_bytes"] for x in r]}
        rows.append(row)
    summary = []
    for src in sources:
        for p in plans:
            mine = [row for row in rows if row["source"] == src and row["nodes"] == p["nodes"] and
                    row["overlap"] == p["overlap"]]
            summary.append({"source": src, "nodes": p["nodes"], "overlap": p["overlap"], "core": p["json"]["core"],
                            "experts_per_shard": [s["expert_count"] for s in p["json"]["shards"]],
                            "sum_shard_bytes_over_model": round(sum(s["bytes"] for s in p["json"]["shards"]) / model_bytes, 3),
                            "max_peak_rss_bytes": max(row["peak_rss_bytes"] for row in mine),
                            "max_peak_rss_ratio": max(row["peak_rss_ratio"] for row in mine),
                            "sum_peak_rss_bytes": sum(row["peak_rss_bytes"] for row in mine),
                            "min_decode_ratio": min(row["decode_ratio"] for row in mine),
                            "max_decode_ratio": max(row["decode_ratio"] for row in mine),
                            "coverage_after_losing_any_node": p["json"]["coverage_after_losing_any_node"],
                            "plan_command": p["command"], "digest": p["json"]["digest"],
                            "experts": [s["experts"] for s in p["json"]["shards"]]})
    return {"model": os.path.basename(model), "model_file_bytes": model_file_bytes, "model_bytes": model_bytes,
            "threads": args.threads, "prompt_tokens": args.prompt, "decode_tokens": args.gen, "reps": args.reps,
            "runs": args.runs, "sources": list(sources),
            "bench_command": rel([llmesh, "bench", "-m", "MODEL", *opts]) + " [--moe-plan PLAN --moe-shard I]",
            "others_cpu_per_round": noise, "loadavg_per_round": loads, "rows": rows, "plans": summary}


# ---------------------------------------------------------------------------------------------
# quality: moe plan on stories260K-moe4x2-noisy

def quality_row(label, nodes, overlap, core, q, sizes, experts, passes, chosen=None):
    kl = [s["kl"] for s in q]
    top1 = [s["top1"] for s in q]
    ppl = [s["perplexity_increase"] for s in q]
    return {"grouping": label, "nodes": nodes, "overlap": overlap, "core": core, "experts_per_shard": sizes,
            "experts_per_layer": [per_layer_range(e) for e in experts] if experts else None,
            "kl": kl, "kl_worst": max(kl), "kl_mean": statistics.mean(kl),
            "top1": top1, "top1_worst": min(top1), "top1_mean": statistics.mean(top1),
            "ppl_increase": ppl, "ppl_increase_worst": max(ppl), "ppl_increase_mean": statistics.mean(ppl),
            "failures": [s.get("failures", "") for s in q],
            "passes_default_gate": passes, "chosen": chosen}


def measure_quality(llmesh, args, tmp):
    model = args.quality_model
    rows, commands = [], []
    n_layer = None
    for nodes in (2, 3, 4):
        for overlap in (1, 2):
            if overlap > nodes:
                continue
            for core in (0, 1, 2):
                path = os.path.join(tmp, f"q-{nodes}-{overlap}-{core}.json")
                cmd = plan_cmd(llmesh, args, model, nodes, overlap, core, path)
                j = run_json(cmd, ok=(0, 2))  # 2: the plan fails the gate
                n_layer = j["model"]["n_layer"]
                commands.append(rel(cmd))
                sh = j["shards"]
                rows.append(quality_row(f"{nodes} nodes, overlap {overlap}, core {core}", nodes, overlap, core,
                                        [s["quality"] for s in sh], [s["expert_count"] for s in sh],
                                        [s["experts"] for s in sh], j["passes"]))
                log(f"quality {rows[-1]['grouping']}: worst KL {rows[-1]['kl_worst']:.4f}, worst top-1 "
                    f"{rows[-1]['top1_worst']:.3f}, passes {j['passes']}")
    for nodes, overlap in QUALITY_SEARCH:
        path = os.path.join(tmp, f"q-{nodes}-{overlap}-search.json")
        cmd = plan_cmd(llmesh, args, model, nodes, overlap, None, path)
        j = run_json(cmd, ok=(0, 2))
        commands.append(rel(cmd))
        for t in j["tried"]:
            chosen = t["core"] == j["core"]
            experts = [s["experts"] for s in j["shards"]] if chosen else None
            rows.append(quality_row(f"{nodes} nodes, overlap {overlap}, default search: core {t['core']}"
                                    f"{' (chosen)' if chosen else ''}", nodes, overlap, t["core"], t["shards"],
                                    t["experts_per_shard"], experts, t["passes"], chosen))
        log(f"quality search {nodes} nodes overlap {overlap}: tried cores {[t['core'] for t in j['tried']]}, "
            f"chose {j['core']}, passes {j['passes']}")
    info = run_json(plan_cmd(llmesh, args, model, 1, 1, None, os.path.join(tmp, "q-1.json")), ok=(0, 2))
    return {"model": os.path.basename(model), "model_name": info["model"]["name"], "n_layer": n_layer,
            "n_expert": info["model"]["n_expert"], "n_expert_used": info["model"]["n_expert_used"],
            "calibration": info["calibration"], "gate": info["gate"], "commands": commands, "rows": rows}


# ---------------------------------------------------------------------------------------------

def mib(x):
    return f"{x / MIB:.0f}"


def print_tables(out):
    if "shards" in out:
        d = out["shards"]
        print(f"\nShards, {d['model']} ({mib(d['model_bytes'])} MiB of weights, random routing, plans made with the "
              f"gate disabled): `{d['bench_command']}`, one process per measurement, median of {d['runs']} rounds; "
              f"other processes used {', '.join(f'{x:.0%}' for x in d['others_cpu_per_round'])} of the CPUs "
              f"(load {', '.join(str(x) for x in d['loadavg_per_round'])})")
        print("| configuration | experts (per layer) | weights MiB (share) | decode tok/s | vs whole | prefill tok/s | "
              "vs whole | peak RSS MiB | vs whole | peak RSS / all weights |")
        print("|---|---|---|---|---|---|---|---|---|---|")
        for r in d["rows"]:
            print(f"| {r['config']} | {r['experts']} ({r['experts_per_layer']}) | {mib(r['weight_bytes'])} "
                  f"({r['weight_share']:.0%}) | {r['decode_tok_s']:.1f} | {r['decode_ratio']:.2f}x | "
                  f"{r['prefill_tok_s']:.1f} | {r['prefill_ratio']:.2f}x | {mib(r['peak_rss_bytes'])} | "
                  f"{r['peak_rss_ratio']:.2f}x | {r['peak_rss_over_model_bytes']:.2f} |")
        print("\n| source | plan | experts per shard | shard weights, summed / model | largest node peak RSS (vs whole) | "
              "decode vs whole (range over shards) |")
        print("|---|---|---|---|---|---|")
        for p in d["plans"]:
            print(f"| {p['source']} | {p['nodes']} nodes, overlap {p['overlap']}, core {p['core']} | "
                  f"{', '.join(str(x) for x in p['experts_per_shard'])} | {p['sum_shard_bytes_over_model']:.2f}x | "
                  f"{mib(p['max_peak_rss_bytes'])} MiB ({p['max_peak_rss_ratio']:.2f}x) | "
                  f"{p['min_decode_ratio']:.2f}-{p['max_decode_ratio']:.2f}x |")
    if "quality" in out:
        d = out["quality"]
        g = d["gate"]
        print(f"\nQuality, {d['model']} ({d['n_layer']} layers x {d['n_expert']} experts, {d['n_expert_used']} per "
              f"token; {d['n_layer'] * d['n_expert']} experts in all), `llmesh moe plan --json`, calibration "
              f"{d['calibration']['tokens']} tokens; default gate: KL <= {g['max_kl']}, top-1 >= {g['min_top1']}, "
              f"perplexity <= +{g['max_ppl_increase']:.0%}")
        print("| grouping | experts per shard (per layer) | KL per shard | KL worst / mean | top-1 per shard | "
              "top-1 worst / mean | perplexity per shard | perplexity worst / mean | default gate |")
        print("|---|---|---|---|---|---|---|---|---|")
        for r in d["rows"]:
            per_layer = f" ({', '.join(r['experts_per_layer'])})" if r["experts_per_layer"] else ""
            print(f"| {r['grouping']} | {', '.join(str(x) for x in r['experts_per_shard'])}{per_layer} | "
                  f"{' / '.join(f'{x:.3f}' for x in r['kl'])} | {r['kl_worst']:.3f} / {r['kl_mean']:.3f} | "
                  f"{' / '.join(f'{x:.3f}' for x in r['top1'])} | {r['top1_worst']:.3f} / {r['top1_mean']:.3f} | "
                  f"{' / '.join(f'{100 * x:+.1f}%' for x in r['ppl_increase'])} | "
                  f"{100 * r['ppl_increase_worst']:+.1f}% / {100 * r['ppl_increase_mean']:+.1f}% | "
                  f"{'passes' if r['passes_default_gate'] else 'fails'} |")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--parts", default="shards,quality")
    ap.add_argument("--runs", type=int, default=5, help="shards: rounds (after one warm-up round)")
    ap.add_argument("--llmesh", default=os.path.join(ROOT, "build", "bin", "llmesh"),
                    help="the binary (copied to a temporary directory first)")
    ap.add_argument("--threads", type=int, default=2, help="-t of every llmesh process")
    ap.add_argument("--prompt", type=int, default=64, help="shards: llmesh bench -p")
    ap.add_argument("--gen", type=int, default=64, help="shards: llmesh bench -n")
    ap.add_argument("--reps", type=int, default=2, help="shards: llmesh bench -r (the process's median)")
    ap.add_argument("--sources", default="gguf,package", help="shards: load the model as the GGUF file (merged "
                    "expert tensors, one mapping) and/or as a layer package (one file per expert)")
    ap.add_argument("--model", default=SYNTH, help="shards: the MoE model (generated when it is the default and absent)")
    ap.add_argument("--quality-model", default=STORIES_MOE)
    ap.add_argument("--quiet-idle", type=float, default=0.25, help="before the shards part, wait until other "
                    "processes use at most this fraction of the CPUs ...")
    ap.add_argument("--quiet-timeout", type=float, default=300, help="... for at most this many seconds")
    ap.add_argument("--quick", action="store_true", help="2 rounds, -p 16 -n 16 -r 1")
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of the tables")
    ap.add_argument("--save", metavar="FILE", help="also write the JSON object to FILE (e.g. under bench/out/)")
    args = ap.parse_args()
    if args.quick:
        args.runs = min(args.runs, 2)
        args.prompt = min(args.prompt, 16)
        args.gen = min(args.gen, 16)
        args.reps = 1
        args.quiet_timeout = min(args.quiet_timeout, 5)
    parts = [p for p in args.parts.split(",") if p]
    args.sources = [x for x in args.sources.split(",") if x]
    if not args.sources or set(args.sources) - {"gguf", "package"}:
        sys.exit("moe_bench: --sources takes gguf and/or package")
    for p in parts:
        if p not in ("shards", "quality"):
            sys.exit(f"moe_bench: unknown part {p!r} (shards, quality)")
    tmp = tempfile.mkdtemp(prefix="llmesh_moe_bench_")
    try:
        # A copy of the binary: a rebuild of build/bin during the run cannot swap it under the benchmark.
        llmesh = os.path.join(tmp, "llmesh")
        for attempt in range(30):  # the binary may be being relinked right now: wait for one that runs
            shutil.copy2(args.llmesh, llmesh)
            if subprocess.run([llmesh, "--version"], capture_output=True).returncode == 0:
                break
            time.sleep(5)
        else:
            sys.exit(f"moe_bench: {args.llmesh} does not run")
        head = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True).stdout.strip()
        out = {"commit": head, "binary_mtime": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                             time.gmtime(os.path.getmtime(args.llmesh))),
               "threads": args.threads, "cpus": os.cpu_count(),
               "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "loadavg_start": loadavg()}
        if "quality" in parts:
            out["quality"] = measure_quality(llmesh, args, tmp)
        if "shards" in parts:
            busy, waited = wait_quiet(args.quiet_idle, args.quiet_timeout)
            log(f"shards: other processes use {busy:.0%} of the CPUs (waited {waited} s), load {loadavg()}")
            before = {"others_cpu": busy, "waited_s": waited, "loadavg": loadavg(),
                      "started": time.strftime("%H:%M:%SZ", time.gmtime())}
            out["shards"] = measure_shards(llmesh, args, tmp)
            out["shards"]["before"] = before
            out["shards"]["finished"] = time.strftime("%H:%M:%SZ", time.gmtime())
        out["loadavg_end"] = loadavg()
        out["finished"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if args.save:
        with open(args.save, "w") as f:
            json.dump(out, f, indent=1)
    if args.json:
        print(json.dumps(out))
    else:
        print_tables(out)


if __name__ == "__main__":
    main()
