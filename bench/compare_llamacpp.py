#!/usr/bin/env python3
"""Side-by-side CPU benchmark: llmesh vs llama.cpp (node-llama-cpp's prebuilt CPU build).

For each model it runs, alternating the two engines so that they share the machine's noise,
R repetitions of
    build/bin/llmesh bench -m MODEL --threads T -p P -n N -r 1 --json
    node bench/llamacpp_bench.mjs -m MODEL -t T -p P -n N -r 1
takes medians, measures the memory read bandwidth with llmesh_membw, and prints a Markdown
table (also written to bench/out/results.md) plus bench/out/results.json.

Models (random weights, real shapes) are generated once under bench/models/ (gitignored):
    tinyllama-q4_0  TinyLlama-1.1B, Q4_0          (make_synthetic_gguf.py)
    qwen3-q8_0      Qwen3-0.6B, Q8_0              (make_synthetic_gguf.py --hf-tokenizer)
    moe-q8_0        8-expert top-2 llama MoE, Q8_0 (make_synthetic_gguf.py)
    kmix            Q4_K/Q6_K mix                  (bench/make_kmix_gguf.py, skipped if absent)

Decode bandwidth = weight bytes read per decode step x decode tok/s. The bytes per step are
computed here from the GGUF header, identically for both engines (see weight_bytes_per_token):
all weight tensors except the token embedding (of which one row is read), plus the embedding
again when it doubles as the output matrix (tied), with MoE expert tensors counted at
expert_used_count / expert_count. The fraction is that figure over the measured T-thread
read bandwidth.

Standard library only.  usage:
    python3 bench/compare_llamacpp.py [--models tinyllama-q4_0,qwen3-q8_0,moe-q8_0,kmix] [--model-file X.gguf]
        [--reps 3] [--threads 2] [-p 128] [-n 128] [--llmesh-bin build/bin/llmesh]
        [--membw-bin PATH] [--skip-llmesh] [--skip-llamacpp] [--fa off|on|auto]
        [--quiet-idle 0.8] [--quiet-timeout 120]
"""
import argparse
import datetime
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.environ.get("LLMESH_SHARED", os.path.join(os.path.dirname(ROOT), "shared"))
if not os.path.isdir(SHARED):
    SHARED = "/work/shared"
TOOLS = os.path.join(SHARED, "tools")
sys.path.insert(0, TOOLS)

MODELS_DIR = os.path.join(ROOT, "bench", "models")
OUT_DIR = os.path.join(ROOT, "bench", "out")
NODE_SCRIPT = os.path.join(ROOT, "bench", "llamacpp_bench.mjs")
KMIX_GEN = os.path.join(ROOT, "bench", "make_kmix_gguf.py")


def synth(preset, qtype, extra):
    def cmd(out):
        return [sys.executable, os.path.join(TOOLS, "make_synthetic_gguf.py"), out,
                "--preset", preset, "--qtype", qtype] + extra
    return cmd


MODELS = {
    # name: (file, description, generator command builder or None for kmix)
    "tinyllama-q4_0": ("tinyllama-1.1b-q4_0.gguf", "TinyLlama-1.1B Q4_0",
                       synth("tinyllama-1.1b", "q4_0",
                             ["--vocab-from", os.path.join(SHARED, "models", "llama-2-tiny-random.gguf")])),
    "qwen3-q8_0": ("qwen3-0.6b-q8_0.gguf", "Qwen3-0.6B Q8_0",
                   synth("qwen3-0.6b", "q8_0",
                         ["--hf-tokenizer", os.path.join(SHARED, "tokenizers", "qwen3")])),
    "moe-q8_0": ("llama-moe-8x-q8_0.gguf", "MoE 8x (top-2) Q8_0",
                 synth("llama-moe-8x", "q8_0",
                       ["--vocab-from", os.path.join(SHARED, "models", "llama-2-tiny-random.gguf")])),
    "kmix": ("kmix-q4_k-q6_k.gguf", "TinyLlama-1.1B Q4_K/Q6_K mix", None),
}


def log(*a):
    print(*a, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------
# models

def kmix_cmd(out):
    """bench/make_kmix_gguf.py is written by another helper; adapt to its CLI if possible."""
    if not os.path.exists(KMIX_GEN):
        return None
    try:
        h = subprocess.run([sys.executable, KMIX_GEN, "--help"], capture_output=True, text=True,
                           timeout=60).stdout
    except Exception:  # noqa: BLE001
        h = ""
    cmd = [sys.executable, KMIX_GEN]
    if "--vocab-from" in h:
        cmd += ["--vocab-from", os.path.join(SHARED, "models", "llama-2-tiny-random.gguf")]
    if "--out" in h:
        cmd += ["--out", out]
    elif "-o " in h or "-o," in h:
        cmd += ["-o", out]
    else:
        cmd += [out]
    return cmd


def ensure_model(name):
    fname, _, gen = MODELS[name]
    path = os.path.join(MODELS_DIR, fname)
    if os.path.exists(path) and os.path.getsize(path) > 0:
        return path, None
    os.makedirs(MODELS_DIR, exist_ok=True)
    tmp = path[:-len(".gguf")] + ".partial.gguf"
    cmd = gen(tmp) if gen else kmix_cmd(tmp)
    if cmd is None:
        return None, "bench/make_kmix_gguf.py does not exist yet: skipped"
    log("generating %s: %s" % (name, " ".join(cmd)))
    t0 = time.time()
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0 or not os.path.exists(tmp):
        try:
            os.remove(tmp)
        except OSError:
            pass
        return None, "generator failed (rc %d): %s" % (r.returncode, (r.stderr or r.stdout).strip()[-400:])
    os.replace(tmp, path)
    log("  done in %.0f s, %d bytes" % (time.time() - t0, os.path.getsize(path)))
    return path, None


def weight_bytes_per_token(path):
    """Bytes of weight tensors one decode step reads (see module docstring)."""
    import gguf_inspect as gi
    _, kv, tensors, _, _ = gi.read_gguf(path)
    arch = kv.get("general.architecture", "llama")
    n_exp = int(kv.get(arch + ".expert_count", 0) or 0)
    n_used = int(kv.get(arch + ".expert_used_count", 0) or 0)

    def nbytes(dims, tt):
        n = 1
        for d in dims:
            n *= d
        blk, bb = gi.GGML_BLOCK[tt]
        return n // blk * bb

    names = {t[0] for t in tensors}
    total = 0.0
    full = 0
    for name, dims, tt, _ in tensors:
        b = nbytes(dims, tt)
        full += b
        if name == "token_embd.weight":
            total += b / dims[-1]  # one row gathered
            if "output.weight" not in names:
                total += b  # tied: also the output projection
        elif "_exps." in name and n_exp > 0:
            total += b * n_used / n_exp
        else:
            total += b
    return int(round(total)), full


# ---------------------------------------------------------------------------------------
# noise control

def cpu_busy_fraction(interval=0.5):
    """Fraction of all CPUs busy over `interval` s (from /proc/stat); None if unavailable."""
    def snap():
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
        idle = v[3] + (v[4] if len(v) > 4 else 0)
        return idle, sum(v)
    try:
        i0, t0 = snap()
        time.sleep(interval)
        i1, t1 = snap()
        return 1.0 - (i1 - i0) / max(1, t1 - t0)
    except OSError:
        return None


def _cpu_snap():
    """(busy jiffies of all CPUs, total jiffies, CPU seconds of our finished children)."""
    import resource
    try:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
    except OSError:
        return None
    idle = v[3] + (v[4] if len(v) > 4 else 0)
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return sum(v) - idle, sum(v), ru.ru_utime + ru.ru_stime


def others_busy(s0, s1):
    """Fraction of the machine's CPU time used by processes other than our child between
    two _cpu_snap()s (the child must have finished before s1)."""
    if s0 is None or s1 is None or s1[1] <= s0[1]:
        return None
    hz = os.sysconf("SC_CLK_TCK")
    busy = (s1[0] - s0[0]) / hz - (s1[2] - s0[2])
    return max(0.0, busy / ((s1[1] - s0[1]) / hz))


def wait_quiet(max_busy, timeout):
    """Wait until other processes leave the CPUs mostly idle; return the last busy fraction."""
    t0 = time.time()
    busy = cpu_busy_fraction()
    warned = False
    while busy is not None and busy > max_busy and time.time() - t0 < timeout:
        if not warned:
            log("  machine busy (%.0f%% CPU used by others), waiting up to %d s ..." % (100 * busy, timeout))
            warned = True
        time.sleep(2)
        busy = cpu_busy_fraction()
    return busy


# ---------------------------------------------------------------------------------------
# runners

def run_json(cmd, timeout):
    t0 = time.time()
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return None, "timeout after %d s" % timeout
    if r.returncode != 0:
        return None, "rc %d: %s" % (r.returncode, (r.stderr or r.stdout).strip()[-600:])
    out = r.stdout.strip()
    # tolerate log lines before the JSON object
    start = out.find("{")
    try:
        d = json.loads(out[start:]) if start >= 0 else None
    except json.JSONDecodeError as e:
        return None, "bad JSON (%s): %s" % (e, out[-300:])
    if not isinstance(d, dict):
        return None, "no JSON object in output: %s" % out[-300:]
    d["_wall_s"] = round(time.time() - t0, 2)
    return d, None


def llmesh_available(binary):
    if not os.path.exists(binary):
        return False, "%s not found" % binary
    try:
        r = subprocess.run([binary, "bench", "--help"], capture_output=True, text=True, timeout=60)
    except Exception as e:  # noqa: BLE001
        return False, "llmesh bench --help failed: %s" % e
    h = r.stdout + r.stderr
    if r.returncode != 0 or "--json" not in h:
        return False, "llmesh bench not implemented yet (`llmesh bench --help` has no --json)"
    return True, None


def find_membw(explicit):
    cands = [explicit] if explicit else [
        os.path.join(ROOT, "build", "bin", "llmesh_membw"),
        os.path.join(ROOT, "build-bench", "bin", "llmesh_membw")]
    for c in cands:
        if c and os.path.exists(c):
            return c
    if explicit:
        return None
    # build it on its own (it has no dependencies) in build-bench, never in build/
    bdir = os.path.join(ROOT, "build-bench")
    log("building llmesh_membw in %s" % bdir)
    gen = ["-G", "Ninja"] if shutil.which("ninja") else []
    for cmd in (["cmake", "-S", ROOT, "-B", bdir, "-DCMAKE_BUILD_TYPE=Release",
                 "-DLLMESH_BUILD_TESTS=OFF"] + gen,
                ["cmake", "--build", bdir, "--target", "llmesh_membw"]):
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            log("  failed: %s" % (r.stderr or r.stdout)[-500:])
            return None
    c = os.path.join(bdir, "bin", "llmesh_membw")
    return c if os.path.exists(c) else None


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


# ---------------------------------------------------------------------------------------
# report

def fmt(x, nd=1):
    return "n/a" if x is None else ("%.*f" % (nd, x))


def ratio(a, b):
    return None if (a is None or b is None or b == 0) else a / b


def markdown(res):
    t = res["threads"]
    bw = res["membw"]["gb_s"] if res.get("membw") else None
    lines = [
        "Threads %d, prompt %d, decode %d, median of %d alternating runs; memory read bandwidth "
        "(%d threads) %s GB/s. Ratio = llmesh / llama.cpp (> 1: llmesh faster)."
        % (t, res["prompt_tokens"], res["decode_tokens"], res["reps"], t, fmt(bw, 1)),
        "",
        "| model | size | weights/token | llmesh prefill | llama.cpp prefill | ratio "
        "| llmesh decode | llama.cpp decode | ratio | decode GB/s (llmesh / llama.cpp) "
        "| fraction of bandwidth (llmesh / llama.cpp) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for m in res["models"]:
        if m.get("skipped"):
            lines.append("| %s | — | — | %s |  |  |  |  |  |  |  |" % (m["name"], m["skipped"]))
            continue
        L, C = m["llmesh"], m["llamacpp"]
        lines.append("| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s / %s | %s / %s |" % (
            m["desc"], _mb(m["file_bytes"]), _mb(m["weight_bytes_per_token"]),
            fmt(L.get("prefill_tok_s")), fmt(C.get("prefill_tok_s")),
            fmt(ratio(L.get("prefill_tok_s"), C.get("prefill_tok_s")), 2),
            fmt(L.get("decode_tok_s"), 2), fmt(C.get("decode_tok_s"), 2),
            fmt(ratio(L.get("decode_tok_s"), C.get("decode_tok_s")), 2),
            fmt(L.get("decode_gb_s")), fmt(C.get("decode_gb_s")),
            fmt(L.get("bw_fraction"), 2), fmt(C.get("bw_fraction"), 2)))
    notes = []
    for m in res["models"]:
        for eng in ("llmesh", "llamacpp"):
            e = m.get(eng, {})
            if e.get("note"):
                notes.append("- %s, %s: %s" % (m["name"], eng, e["note"]))
            for err in e.get("errors", [])[:2]:
                notes.append("- %s, %s error: %s" % (m["name"], eng, err.replace("\n", " ")[:300]))
    if notes:
        lines += ["", "Notes:"] + notes
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default=",".join(MODELS),
                    help="comma list from: " + ", ".join(MODELS))
    ap.add_argument("--model-file", action="append", default=[],
                    help="also benchmark this existing GGUF (repeatable); use --models '' for only these")
    ap.add_argument("--reps", type=int, default=3, help="alternating runs per engine (median)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("-p", type=int, default=128, help="prompt tokens (prefill)")
    ap.add_argument("-n", type=int, default=128, help="decoded tokens")
    ap.add_argument("--llmesh-bin", default=os.path.join(ROOT, "build", "bin", "llmesh"))
    ap.add_argument("--membw-bin", default=None, help="default: build/bin or build-bench/bin")
    ap.add_argument("--node", default=shutil.which("node") or "node")
    ap.add_argument("--fa", default="off", choices=["off", "on", "auto"],
                    help="llama.cpp flash attention (llama-bench default: off)")
    ap.add_argument("--skip-llmesh", action="store_true")
    ap.add_argument("--skip-llamacpp", action="store_true")
    ap.add_argument("--quiet-idle", type=float, default=0.25,
                    help="before each run wait until others use at most this CPU fraction")
    ap.add_argument("--quiet-timeout", type=int, default=120, help="max seconds to wait per run")
    ap.add_argument("--noisy", type=float, default=0.05,
                    help="a run during which others used more than this CPU fraction is 'noisy'; "
                         "medians use only quiet runs when there are any")
    ap.add_argument("--max-extra", type=int, default=3,
                    help="extra alternating repetitions while an engine has fewer than "
                         "ceil(reps/2) quiet runs")
    ap.add_argument("--timeout", type=int, default=1800, help="per engine invocation")
    ap.add_argument("--out", default=os.path.join(OUT_DIR, "results.json"))
    a = ap.parse_args()

    names = [x.strip() for x in a.models.split(",") if x.strip()]
    for x in names:
        if x not in MODELS:
            ap.error("unknown model %r (choose from %s)" % (x, ", ".join(MODELS)))

    have_llmesh, llmesh_why = (False, "--skip-llmesh") if a.skip_llmesh else llmesh_available(a.llmesh_bin)
    if not have_llmesh:
        log("llmesh: not measured (%s)" % llmesh_why)
    have_node = not a.skip_llamacpp and os.path.exists(NODE_SCRIPT)

    res = {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "host": {"machine": platform.machine(), "cpus": os.cpu_count(),
                 "cpu_model": _cpu_model(), "loadavg_start": _loadavg()},
        "threads": a.threads, "prompt_tokens": a.p, "decode_tokens": a.n, "reps": a.reps,
        "llmesh_bin": a.llmesh_bin, "llmesh_status": "ok" if have_llmesh else llmesh_why,
        "llamacpp_fa": a.fa, "models": [],
    }

    # bandwidth first (quiet machine), and again at the end; keep the higher median
    membw = find_membw(a.membw_bin)
    bw_runs = []

    def measure_bw():
        if not membw:
            return
        wait_quiet(a.quiet_idle, a.quiet_timeout)
        thr = "1,%d" % a.threads if a.threads != 1 else "1"
        d, err = run_json([membw, "--threads", thr, "--json"], 600)
        if d:
            bw_runs.append(d)
            log("membw: " + ", ".join("%d thr %.1f GB/s" % (r["threads"], r["median_gb_s"])
                                      for r in d["results"]))
        else:
            log("membw failed: %s" % err)

    measure_bw()

    jobs = [(n, MODELS[n][1], None) for n in names]
    jobs += [(os.path.basename(f), os.path.basename(f), os.path.abspath(f)) for f in a.model_file]
    for name, desc, given in jobs:
        path, why = (given, None) if given else ensure_model(name)
        if given and not os.path.exists(given):
            path, why = None, "file not found"
        entry = {"name": name, "desc": desc}
        res["models"].append(entry)
        if path is None:
            entry["skipped"] = why
            log("%s: %s" % (name, why))
            continue
        wbt, full = weight_bytes_per_token(path)
        entry.update(path=os.path.relpath(path, ROOT), file_bytes=os.path.getsize(path),
                     tensor_bytes=full, weight_bytes_per_token=wbt)
        L = {"runs": [], "errors": []}
        C = {"runs": [], "errors": []}
        entry["llmesh"], entry["llamacpp"] = L, C
        if not have_llmesh:
            L["note"] = "not measured: " + llmesh_why
        if not have_node:
            C["note"] = "not measured (--skip-llamacpp or node script missing)"
        log("== %s (%s, %.0f MB weights/token)" % (name, entry["path"], wbt / 1e6))
        def quiet_count(e):
            return sum(1 for r in e["runs"] if not r.get("_noisy"))

        need = (a.reps + 1) // 2  # want a majority of quiet runs per engine
        rep = 0
        short = None
        while True:
            if rep >= a.reps:
                short = [e for e, on in ((L, have_llmesh), (C, have_node))
                         if on and quiet_count(e) < need]
                if not short or rep >= a.reps + a.max_extra:
                    break
                log("  extra repetition %d (fewer than %d quiet runs so far)" % (rep + 1, need))
            # alternate the order each repetition so neither engine always goes first
            order = ["llmesh", "llamacpp"] if rep % 2 == 0 else ["llamacpp", "llmesh"]
            for eng in order:
                if eng == "llmesh" and have_llmesh:
                    cmd = [a.llmesh_bin, "bench", "-m", path, "--threads", str(a.threads),
                           "-p", str(a.p), "-n", str(a.n), "-r", "1", "--json"]
                    tgt = L
                elif eng == "llamacpp" and have_node:
                    cmd = [a.node, NODE_SCRIPT, "-m", path, "-t", str(a.threads), "-p", str(a.p),
                           "-n", str(a.n), "-r", "1", "--warmup", "1", "--fa", a.fa]
                    tgt = C
                else:
                    continue
                if short is not None and not any(tgt is e for e in short):
                    continue  # extra repetitions only for the engine that lacks quiet runs
                busy = wait_quiet(a.quiet_idle, a.quiet_timeout)
                s0 = _cpu_snap()
                d, err = run_json(cmd, a.timeout)
                ob = others_busy(s0, _cpu_snap())
                if d is None:
                    tgt["errors"].append(err)
                    log("  %s rep %d: FAILED %s" % (eng, rep + 1, err[:300]))
                    continue
                d["_busy_before"] = None if busy is None else round(busy, 3)
                d["_others_busy"] = None if ob is None else round(ob, 3)
                d["_noisy"] = ob is not None and ob > a.noisy
                if eng == "llamacpp":
                    d.pop("runs", None)
                    tgt.setdefault("build", d.pop("build", None))
                tgt["runs"].append(d)
                log("  %-8s rep %d: prefill %8.1f tok/s  decode %7.2f tok/s  (others used %s CPU%s)" % (
                    eng, rep + 1, d.get("prefill_tok_s") or 0, d.get("decode_tok_s") or 0,
                    "?" if ob is None else "%.0f%%" % (100 * ob),
                    ": NOISY" if d["_noisy"] else ""))

            rep += 1

    measure_bw()
    bw = None
    if bw_runs:
        per = [r for d in bw_runs for r in d["results"] if r["threads"] == a.threads]
        bw = max(r["median_gb_s"] for r in per) if per else None
        res["membw"] = {"threads": a.threads, "gb_s": bw, "runs": bw_runs,
                        "one_thread_gb_s": max((r["median_gb_s"] for d in bw_runs
                                                for r in d["results"] if r["threads"] == 1),
                                               default=None)}

    for m in res["models"]:
        if m.get("skipped"):
            continue
        for key in ("llmesh", "llamacpp"):
            e = m[key]
            quiet = [r for r in e["runs"] if not r.get("_noisy")]
            use = quiet or e["runs"]
            e["runs_used"] = len(use)
            if e["runs"] and len(quiet) < len(e["runs"]):
                e["note"] = ((e.get("note") + "; ") if e.get("note") else "") + (
                    "%d of %d runs had other processes using > %.0f%% of the CPUs; %s" % (
                        len(e["runs"]) - len(quiet), len(e["runs"]), 100 * a.noisy,
                        "median of the %d quiet runs" % len(quiet) if quiet
                        else "NO quiet run: figures are unreliable"))
            e["prefill_tok_s"] = med(r.get("prefill_tok_s") for r in use)
            e["decode_tok_s"] = med(r.get("decode_tok_s") for r in use)
            e["prefill_spread"] = _spread([r.get("prefill_tok_s") for r in use])
            e["decode_spread"] = _spread([r.get("decode_tok_s") for r in use])
            if e["decode_tok_s"]:
                e["decode_gb_s"] = m["weight_bytes_per_token"] * e["decode_tok_s"] / 1e9
                e["bw_fraction"] = e["decode_gb_s"] / bw if bw else None
            if key == "llmesh":
                own = med(r.get("weight_bytes_per_token") for r in e["runs"])
                if own:
                    e["weight_bytes_per_token_reported"] = own
                    if abs(own - m["weight_bytes_per_token"]) > 0.02 * m["weight_bytes_per_token"]:
                        e["note"] = ((e.get("note") + "; ") if e.get("note") else "") + ("llmesh reports %.1f MB weights/token, this script computes "
                                     "%.1f MB" % (own / 1e6, m["weight_bytes_per_token"] / 1e6))
                isa = {r.get("isa") for r in e["runs"]} - {None}
                if isa:
                    e["isa"] = ",".join(sorted(isa))
    res["host"]["loadavg_end"] = _loadavg()

    md = markdown(res)
    res["markdown"] = md
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    with open(a.out, "w") as f:
        json.dump(res, f, indent=1)
    with open(os.path.splitext(a.out)[0] + ".md", "w") as f:
        f.write(md + "\n")
    print(md)
    log("wrote %s" % a.out)


def _mb(b):
    return "%.0f MB" % (b / 1e6) if b >= 1e7 else "%.2f MB" % (b / 1e6)


def _spread(xs):
    xs = [x for x in xs if x is not None]
    return [min(xs), max(xs)] if xs else None


def _loadavg():
    try:
        return list(os.getloadavg())
    except OSError:
        return None


def _cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


if __name__ == "__main__":
    main()
