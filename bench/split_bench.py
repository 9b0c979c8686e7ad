#!/usr/bin/env python3
"""Split-model figures: one model as pipeline stages over real llmesh nodes on loopback
(docs/benchmarks.md, "Split models").

  python3 bench/split_bench.py [--bin build/bin] [--model GGUF] [--kill-model GGUF] [--runs N]
                               [--threads 2] [--max-tokens 64] [--quick] [--only PARTS] [--json]

Parts (all by default; --only takes a comma-separated subset):
  decode  greedy decode tok/s of one streamed completion (short prompt, up to --max-tokens
          tokens, EOS not banned unless --ban-eos: a logit_bias makes the last stage send whole
          logits rows instead of the top candidate; tok/s = (completion_tokens - 1) / (last token - first token), so prefill and
          time to first token are left out) with 1 node (--no-mesh, the whole model), 2 stages
          and 3 stages on loopback, and the 2- and 3-stage meshes again behind the fault relay
          at 5 ms and 20 ms RTT. Every configuration runs side by side: all meshes are started
          first, then each round measures every configuration once, in a rotated order, and the
          medians over --runs rounds are reported with their ratio to 1 node.
  wire    bytes on the wire per decoded token (the entry's split.pipeline bytes_sent +
          bytes_received per pipeline step, read when the first token arrives and at the end,
          so the prompt's step is left out) for 2 stages with --hidden f16, f32 and q8.
  rss     each stage's VmRSS (from /proc) after the decode runs against its share of the
          weights: the manifest's artifacts for its layer range (metadata, embeddings when it
          starts at 0, its layers, output when it ends at n_layer); also the single node.
  kill    3 nodes: the entry with layers [0, k), B and C both with [k, n), every mesh link
          behind the fault relay with 5 ms each way (so a long completion lasts a few seconds);
          a greedy stream of --kill-tokens tokens (EOS banned); after --kill-after tokens the
          stage the entry's route uses (split.pipeline.route) fails: `kill9` (SIGKILL) or `stop`
          (SIGSTOP, a hung node whose connections stay open). Reported: failure -> first token
          after it, the gap between the last token before and the first after, the pipeline's
          own recovery figures, and whether all tokens came with the undisturbed run's text.
--quick: stories260K for everything, at most 2 rounds, one kill run per mode.
Every node gets its own LLMESH_HOME in a temporary directory; layer packages are written there
too (a TinyLlama package is ~600 MB), and everything is removed at the end.
"""
import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
SHARED = os.path.join(ROOT, "..", "shared")
DEFAULT_MODEL = os.path.join(HERE, "models", "tinyllama-1.1b-q4_0.gguf")
STORIES = os.path.join(SHARED, "models", "stories260K-f32.gguf")
PROMPT = "Once upon a time, in a small village by the sea, there lived"


def log(msg):
    print(f"split_bench: {msg}", file=sys.stderr, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_json(port, path, timeout=10):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as r:
        return json.loads(r.read())


def cpu_snapshot(pids=()):
    """(wall jiffies of all CPUs, busy jiffies of all CPUs, jiffies of `pids`, of this process and of
    its finished children such as `llmesh bench` runs)."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    busy = v[0] + v[1] + v[2] + v[5] + v[6] + (v[7] if len(v) > 7 else 0)
    total = busy + v[3] + v[4]
    ours = 0
    for pid in [*pids, os.getpid()]:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            ours += int(fields[11]) + int(fields[12])
            if pid == os.getpid():
                ours += int(fields[13]) + int(fields[14])  # cutime, cstime
        except OSError:
            pass
    return total, busy, ours


def others_cpu(before, after):
    """Fraction of the machine's CPU time used by processes other than ours between two snapshots."""
    total = after[0] - before[0]
    return max(0.0, ((after[1] - before[1]) - (after[2] - before[2])) / total) if total > 0 else 0.0


def wait_quiet(limit, timeout):
    """Waits (up to timeout s) for a second in which other processes use at most `limit` of the CPUs."""
    t0 = time.monotonic()
    while True:
        a = cpu_snapshot([])
        time.sleep(1)
        busy = others_cpu(a, cpu_snapshot([]))
        if busy <= limit or time.monotonic() - t0 > timeout:
            return round(busy, 3), round(time.monotonic() - t0, 1)


def wait_until(pred, timeout, step=0.05):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            if pred():
                return True
        except OSError:
            pass
        time.sleep(step)
    return False


class Relay:
    """llmesh_fault_relay with a control connection (docs/testing-mesh.md, "The fault relay")."""

    def __init__(self, binary):
        self.proc = subprocess.Popen([binary, "--control", "0", "--bind", "127.0.0.1"], stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        port = None
        for line in self.proc.stdout:
            if line.startswith("control "):
                port = int(line.split()[1])
                break
        if port is None:
            raise RuntimeError("the fault relay did not start")
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.rfile = self.sock.makefile("r")
        self.links = []

    def command(self, line):
        self.sock.sendall((line + "\n").encode())
        reply = self.rfile.readline().strip()
        if not reply.startswith("ok"):
            raise RuntimeError(f"relay: {line}: {reply}")
        return reply

    def add_link(self, name, port):
        reply = self.command(f"link add {name} 0 127.0.0.1 {port}")
        self.links.append(name)
        return int(reply.split("port=")[1].split()[0])

    def latency(self, names, ms):
        for n in names:
            self.command(f"fault {n} both latency={ms:g}")

    def stop(self):
        if self.proc.poll() is None:
            try:
                self.sock.sendall(b"shutdown\n")
                self.proc.wait(timeout=3)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
        self.sock.close()


class Node:
    def __init__(self, bench, name, args, relay=None):
        self.bench = bench
        self.name = name
        self.home = os.path.join(bench.tmp, name)
        os.makedirs(self.home, exist_ok=True)
        self.args = list(args)
        self.link = None
        if relay is not None and "--no-mesh" not in args:
            mesh_port = free_port()
            self.link = name
            relay_port = relay.add_link(name, mesh_port)
            self.args += ["--mesh-port", str(mesh_port), "--advertise", f"127.0.0.1:{relay_port}"]
        elif "--no-mesh" not in args:
            self.args += ["--mesh-port", "0"]
        self.proc = None
        self.err = None

    def start(self):
        env = dict(os.environ, LLMESH_HOME=self.home)
        self.err = open(os.path.join(self.home, "stderr.log"), "a")
        self.proc = subprocess.Popen([self.bench.llmesh, *self.args, "--port", "0", "--json", "--listen", "127.0.0.1",
                                      "--mesh-listen", "127.0.0.1", "-q"], stdout=subprocess.PIPE, stderr=self.err,
                                     text=True, env=env)
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait()
            with open(os.path.join(self.home, "stderr.log")) as f:
                tail = f.read()[-2000:]
            raise RuntimeError(f"{self.name} did not start (exit {self.proc.returncode}): {tail}")
        self.info = json.loads(line)
        self.port = self.info["port"]
        self.id = self.info.get("node_id")

    def status(self):
        return http_json(self.port, "/mesh/status")

    def split(self):
        return self.status()["split"]

    def rss_bytes(self):
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        return None

    def invite(self):
        env = dict(os.environ, LLMESH_HOME=self.home)
        out = subprocess.run([self.bench.llmesh, "invite", "--json"], env=env, capture_output=True, text=True,
                             check=True).stdout
        return json.loads(out)["token"]

    def kill9(self):
        self.proc.kill()
        self.proc.wait()

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.err:
            self.err.close()


class Bench:
    def __init__(self, args):
        self.args = args
        self.tmp = tempfile.mkdtemp(prefix="llmesh_split_bench_")
        # A copy of the binaries: a rebuild of --bin during the run (nodes are restarted in the kill
        # part) cannot swap them under the benchmark.
        bindir = os.path.join(self.tmp, "bin")
        os.makedirs(bindir)
        for name in ("llmesh", "llmesh_fault_relay"):
            src = os.path.join(args.bin, name)
            if not wait_until(lambda: os.path.exists(src), 60):
                raise RuntimeError(f"no {src}")
            shutil.copy2(src, bindir)
        self.bin = bindir
        self.llmesh = os.path.join(bindir, "llmesh")
        self.nodes = []
        self.relays = []

    def relay(self):
        r = Relay(os.path.join(self.bin, "llmesh_fault_relay"))
        self.relays.append(r)
        return r

    def package(self, model):
        out = os.path.join(self.tmp, "pkg-" + os.path.splitext(os.path.basename(model))[0])
        if not os.path.exists(out):
            subprocess.run([self.llmesh, "package", model, out, "-q"], check=True)
        with open(os.path.join(out, "manifest.json")) as f:
            return out, json.load(f)

    def node(self, name, args, relay=None):
        n = Node(self, name, args, relay)
        self.nodes.append(n)  # before start: a node that fails to start is still stopped at the end
        n.start()
        return n

    def mesh(self, tag, pkg, ranges, extra=(), relay=None):
        """Nodes with the given layer ranges, the first one creating the mesh; returns them (entry first)."""
        common = ["serve", "-m", pkg, "-t", str(self.args.threads), "-c", str(self.args.ctx), "--parallel", "1",
                  *extra]
        nodes = []
        for i, (a, b) in enumerate(ranges):
            join = ["--join", nodes[0].invite()] if nodes else []
            nodes.append(self.node(f"{tag}-{i}", [*common, "--layers", f"{a}..{b}", *join], relay))
        entry = nodes[0]
        if not wait_until(lambda: entry.split().get("entry"), 20):
            raise RuntimeError(f"{tag}: the entry never became ready: {entry.split()}")
        return nodes

    def single(self, tag, pkg):
        return self.node(tag, ["serve", "-m", pkg, "-t", str(self.args.threads), "-c", str(self.args.ctx),
                               "--parallel", "1", "--no-mesh"])

    def close(self):
        for n in self.nodes:
            n.stop()
        self.nodes.clear()
        for r in self.relays:
            r.stop()
        self.relays.clear()
        shutil.rmtree(self.tmp, ignore_errors=True)


def eos_id(llmesh, model):
    insp = json.loads(subprocess.run([llmesh, "inspect", "--json", model], capture_output=True, text=True,
                                     check=True).stdout)
    eos = insp.get("metadata", {}).get("tokenizer.ggml.eos_token_id")
    return eos.get("value") if isinstance(eos, dict) else eos


def stream(port, model_id, max_tokens, eos, on_token=None, on_first=None, timeout=300):
    """A greedy streamed completion. Returns {text, tokens, times (arrival of each text chunk), t0, usage}."""
    body = {"model": model_id, "prompt": PROMPT, "max_tokens": max_tokens, "temperature": 0, "stream": True,
            "stream_options": {"include_usage": True}}
    if eos is not None:
        body["logit_bias"] = {str(eos): -100}
    req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/completions", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    t0 = time.monotonic()
    times, text, usage, finish, t_finish = [], [], None, None, None
    with urllib.request.urlopen(req, timeout=timeout) as r:
        for raw in r:
            line = raw.decode().strip()
            if not line.startswith("data:") or line == "data: [DONE]":
                continue
            ev = json.loads(line[5:])
            if ev.get("usage"):
                usage = ev["usage"]
            for ch in ev.get("choices", []):
                now = time.monotonic()
                if ch.get("text"):
                    times.append(now)
                    text.append(ch["text"])
                    if len(times) == 1 and on_first:
                        on_first()
                    if on_token:
                        on_token(len(times), now)
                if ch.get("finish_reason"):
                    finish, t_finish = ch["finish_reason"], now
    if usage is None or not times:
        raise RuntimeError(f"stream without tokens or usage (finish {finish})")
    return {"text": "".join(text), "times": times, "t0": t0, "t_finish": t_finish, "finish": finish,
            "tokens": usage["completion_tokens"]}


def decode_rate(port, model_id, max_tokens, eos, entry=None):
    """tok/s between the first and the last token; with entry, also the pipeline bytes per step.
    eos None: EOS is not banned (greedy then needs only the top candidate from the last stage; a
    logit_bias makes the last stage return the whole logits row), so the completion may stop early."""
    snap = {}
    first = (lambda: snap.__setitem__("a", entry.split()["pipeline"])) if entry else None
    r = stream(port, model_id, max_tokens, eos, on_first=first)
    if r["tokens"] < min(max_tokens, 16):
        raise RuntimeError(f"asked for {max_tokens} tokens, got {r['tokens']} (finish {r['finish']})")
    rate = (r["tokens"] - 1) / (r["times"][-1] - r["times"][0])
    out = {"tok_s": rate, "text": r["text"], "tokens": r["tokens"]}
    if entry:
        b = entry.split()["pipeline"]
        a = snap["a"]
        steps = b["steps"] - a["steps"]
        out["bytes_per_token"] = ((b["bytes_sent"] + b["bytes_received"]) - (a["bytes_sent"] + a["bytes_received"])) / steps
        out["sent_per_token"] = (b["bytes_sent"] - a["bytes_sent"]) / steps
        out["received_per_token"] = (b["bytes_received"] - a["bytes_received"]) / steps
        out["steps"] = steps
    return out


def stage_ranges(n, stages):
    """Even split of n layers into `stages` contiguous ranges."""
    cuts = [round(i * n / stages) for i in range(stages + 1)]
    return [(cuts[i], cuts[i + 1]) for i in range(stages)]


def weight_share(manifest, a, b):
    n = manifest["n_layer"]
    total = 0
    for art in manifest["artifacts"]:
        k = art["kind"]
        if (k == "metadata" or (k == "embeddings" and (a == 0 or (b == n and manifest.get("tied_embeddings"))))
                or (k == "output" and b == n) or (k == "layer" and a <= art["layer"] < b)):
            total += art["bytes"]
    return total


def measure_decode(b, pkg, manifest, model_id, eos):
    args = b.args
    n = manifest["n_layer"]
    r2, r3 = stage_ranges(n, 2), stage_ranges(n, 3)
    single = b.single("one", pkg)
    direct2 = b.mesh("d2", pkg, r2)
    direct3 = b.mesh("d3", pkg, r3)
    relay, lat2, lat3 = None, [], []
    if args.rtts:
        relay = b.relay()
        lat2 = b.mesh("l2", pkg, r2, relay=relay)
        lat3 = b.mesh("l3", pkg, r3, relay=relay)
    links2 = [x.link for x in lat2]
    links3 = [x.link for x in lat3]
    # (label, stages, rtt_ms, entry node, relay links or None)
    configs = [("1 node", 1, 0, single, None, None), ("2 stages", 2, 0, direct2[0], direct2, None),
               ("3 stages", 3, 0, direct3[0], direct3, None)]
    for rtt in args.rtts:
        configs.append((f"2 stages, {rtt:g} ms RTT", 2, rtt, lat2[0], lat2, links2))
        configs.append((f"3 stages, {rtt:g} ms RTT", 3, rtt, lat3[0], lat3, links3))
    # Warm-up: page cache, first route, stage sessions.
    for c in configs:
        if c[5]:
            relay.latency(c[5], c[2] / 2)
        decode_rate(c[3].port, model_id, min(8, args.max_tokens), eos)
    results = {c[0]: [] for c in configs}
    wire = {c[0]: [] for c in configs}
    texts, tokens = {}, {}
    noise = []
    pids = [x.proc.pid for x in b.nodes] + [r.proc.pid for r in b.relays]
    for rnd in range(args.runs):
        snap = cpu_snapshot(pids)
        order = configs[rnd % len(configs):] + configs[:rnd % len(configs)]
        for label, stages, rtt, entry, nodes, links in order:
            if links:
                relay.latency(links, rtt / 2)
            r = decode_rate(entry.port, model_id, args.max_tokens, eos, entry if nodes else None)
            results[label].append(r["tok_s"])
            if "bytes_per_token" in r:
                wire[label].append(r["bytes_per_token"])
            texts.setdefault(label, r["text"])
            tokens.setdefault(label, r["tokens"])
        noise.append(round(others_cpu(snap, cpu_snapshot(pids)), 3))
        log(f"decode round {rnd + 1}/{args.runs} (other processes used {noise[-1]:.0%} of the CPUs): " +
            ", ".join(f"{k} {v[-1]:.1f}" for k, v in results.items()))
    base = statistics.median(results["1 node"])
    rows = []
    for label, stages, rtt, entry, nodes, links in configs:
        med = statistics.median(results[label])
        rows.append({"config": label, "stages": stages, "rtt_ms": rtt, "tok_s_median": round(med, 2),
                     "tok_s_runs": [round(x, 2) for x in results[label]], "ratio_vs_1_node": round(med / base, 3),
                     # the same round's configurations ran within seconds of each other: less noise
                     "ratio_vs_1_node_median_of_rounds": round(statistics.median(
                         x / y for x, y in zip(results[label], results["1 node"])), 3),
                     "ms_per_token": round(1000 / med, 2),
                     "added_ms_per_token": round(1000 / med - 1000 / base, 2),
                     "pipeline_bytes_per_token": round(statistics.median(wire[label]), 1) if wire[label] else None,
                     "tokens": tokens[label],
                     "same_text_as_1_node": texts[label] == texts["1 node"]})
    # RSS of every node of the direct meshes and the single node, against its weights.
    rss = []
    for label, nodes, ranges in (("1 node", [single], [(0, n)]), ("2 stages", direct2, r2), ("3 stages", direct3, r3)):
        for node, (a, z) in zip(nodes, ranges):
            w = weight_share(manifest, a, z)
            m = node.rss_bytes()
            rss.append({"config": label, "node": node.name, "layers": [a, z], "weights_bytes": w, "rss_bytes": m,
                        "rss_over_weights": round(m / w, 3) if w else None})
    for x in [single, *direct2, *direct3, *lat2, *lat3]:
        x.stop()
        b.nodes.remove(x)
    if relay:
        relay.stop()
        b.relays.remove(relay)
    return {"runs": args.runs, "max_tokens": args.max_tokens, "ban_eos": args.ban_eos, "threads_per_node": args.threads,
            "others_cpu_per_round": noise,
            "layers_2": r2, "layers_3": r3, "rows": rows}, rss


def measure_wire(b, pkg, manifest, model_id, eos, real_eos):
    """Bytes per decoded token for 2 stages per hidden format; the last row bans EOS with a
    logit_bias, which makes the last stage send the whole logits row instead of the top candidate."""
    args = b.args
    r2 = stage_ranges(manifest["n_layer"], 2)
    cases = [("f16", "f16", eos), ("f32", "f32", eos), ("q8", "q8", eos)]
    if eos is None and real_eos is not None:
        cases.append(("f16 + logit_bias", "f16", real_eos))
    meshes = {fmt: b.mesh(f"w-{fmt}", pkg, r2, extra=["--hidden", fmt]) for fmt in ("f16", "f32", "q8")}
    for fmt, nodes in meshes.items():
        decode_rate(nodes[0].port, model_id, 8, eos)
    res = {c[0]: [] for c in cases}
    texts = {}
    runs = max(1, args.runs // 2)
    for rnd in range(runs):
        for label, fmt, e in cases:
            entry = meshes[fmt][0]
            r = decode_rate(entry.port, model_id, args.max_tokens, e, entry)
            res[label].append(r)
            texts.setdefault(label, r["text"])
    rows = []
    for label, fmt, e in cases:
        rs = res[label]
        rows.append({"hidden": label, "n_embd": manifest["n_embd"], "n_vocab": manifest["n_vocab"],
                     "bytes_per_token": round(statistics.median(x["bytes_per_token"] for x in rs), 1),
                     "sent_per_token": round(statistics.median(x["sent_per_token"] for x in rs), 1),
                     "received_per_token": round(statistics.median(x["received_per_token"] for x in rs), 1),
                     "tok_s_median": round(statistics.median(x["tok_s"] for x in rs), 2),
                     "tokens": rs[0]["tokens"],
                     "same_text_as_f32": texts[label] == texts["f32"] if e == eos else None})
    for nodes in meshes.values():
        for x in nodes:
            x.stop()
            b.nodes.remove(x)
    return {"layers": r2, "runs": runs, "rows": rows}


def measure_kill(b, pkg, manifest, model_id, eos):
    args = b.args
    n = manifest["n_layer"]
    k = stage_ranges(n, 2)[0][1]
    relay = b.relay()
    nodes = b.mesh("k", pkg, [(0, k), (k, n), (k, n)], relay=relay)
    entry, stages = nodes[0], {x.id: x for x in nodes[1:]}
    relay.latency([x.link for x in nodes], args.kill_latency)
    ref = stream(entry.port, model_id, args.kill_tokens, eos)
    if ref["tokens"] != args.kill_tokens:
        raise RuntimeError(f"the undisturbed run gave {ref['tokens']} tokens")
    undisturbed_s = ref["times"][-1] - ref["times"][0]
    modes = {}
    for mode in args.kill_modes:
        runs = []
        for i in range(args.kill_runs):
            st = {}

            def on_token(count, now):
                if count == args.kill_after and "killed" not in st:
                    pipe = entry.split()["pipeline"]
                    victim = stages[pipe["route"][-1]["node"]]
                    st.update(before=pipe, last_before=now, victim=victim, count=count)
                    if mode == "kill9":
                        victim.proc.kill()  # SIGKILL: the kernel closes its sockets, the entry reads EOF/RST
                    else:
                        victim.proc.send_signal(signal.SIGSTOP)  # hung: sockets stay open, nothing answers
                    st["killed"] = time.monotonic()
                elif "killed" in st and "first_after" not in st:
                    st["first_after"] = now
            try:
                r = stream(entry.port, model_id, args.kill_tokens, eos, on_token=on_token)
                err = None
            except Exception as e:  # noqa: BLE001 -- a failed stream is a result to report
                r, err = {"tokens": None, "finish": None, "text": None}, f"{type(e).__name__}: {e}"
            after = entry.split()["pipeline"]
            before = st.get("before", after)
            run = {"victim": st["victim"].name if "victim" in st else None, "killed_after_tokens": st.get("count"),
                   "tokens": r["tokens"], "finish": r["finish"], "same_text": r["text"] == ref["text"],
                   "error": err,
                   "kill_to_resume_ms": round((st["first_after"] - st["killed"]) * 1000, 1) if "first_after" in st else None,
                   "gap_ms": round((st["first_after"] - st["last_before"]) * 1000, 1) if "first_after" in st else None,
                   "recoveries": after["recoveries"] - before["recoveries"],
                   "replayed_tokens": after["replayed_tokens"] - before["replayed_tokens"],
                   "last_recovery_ms": after["last_recovery_ms"], "last_failure": after.get("last_failure", "")}
            runs.append(run)
            log(f"{mode} run {i + 1}: {run}")
            victim = st.get("victim")
            if victim is None:
                break
            # Bring the victim back (same home and mesh port: the same identity behind the same relay link).
            victim.proc.kill()
            victim.proc.wait()
            victim.start()
            if not wait_until(lambda: any(m["id"] == victim.id and m["status"] == "alive"
                                          for m in entry.status()["members"]), 30):
                raise RuntimeError("the killed stage did not come back")
            time.sleep(1.5)  # its state (layers) gossiped
        ok = [r for r in runs if r["kill_to_resume_ms"] is not None]
        modes[mode] = {
            "kill_to_resume_ms_median": round(statistics.median(r["kill_to_resume_ms"] for r in ok), 1) if ok else None,
            "kill_to_resume_ms_max": max((r["kill_to_resume_ms"] for r in ok), default=None),
            "gap_ms_median": round(statistics.median(r["gap_ms"] for r in ok), 1) if ok else None,
            "all_complete_and_identical": all(r["same_text"] and r["tokens"] == args.kill_tokens for r in runs),
            "runs": runs}
    for x in nodes:
        x.stop()
        b.nodes.remove(x)
    relay.stop()
    b.relays.remove(relay)
    return {"layers": [[0, k], [k, n], [k, n]], "latency_each_way_ms": args.kill_latency,
            "tokens": args.kill_tokens, "kill_after": args.kill_after,
            "undisturbed_ms_per_token": round(undisturbed_s * 1000 / (ref["tokens"] - 1), 2), "modes": modes}


def fmt_bytes(x):
    return f"{x / 1e6:.1f} MB" if x >= 1e6 else f"{x / 1e3:.1f} kB"


def print_tables(out):
    if "decode" in out:
        d = out["decode"]
        print(f"\nDecode, {out['model']}, up to {d['max_tokens']} tokens (greedy{', EOS banned' if d.get('ban_eos') else ''}), -t {d['threads_per_node']} per node, "
              f"median of {d['runs']} (layers: 2 stages {d['layers_2']}, 3 stages {d['layers_3']}); other processes "
              f"used {', '.join(f'{x:.0%}' for x in d['others_cpu_per_round'])} of the CPUs in the rounds")
        print("| configuration | tok/s | vs 1 node | vs 1 node, median of rounds | ms/token | added ms/token | pipeline bytes/token | tokens | same text |")
        print("|---|---|---|---|---|---|---|---|---|")
        for r in d["rows"]:
            w = f"{r['pipeline_bytes_per_token']:.0f}" if r["pipeline_bytes_per_token"] else "-"
            print(f"| {r['config']} | {r['tok_s_median']:.2f} | {r['ratio_vs_1_node']:.2f}x | {r.get('ratio_vs_1_node_median_of_rounds', 0):.2f}x | {r['ms_per_token']:.2f} | "
                  f"{r['added_ms_per_token']:+.2f} | {w} | {r['tokens']} | {'yes' if r['same_text_as_1_node'] else 'NO'} |")
    if "wire" in out:
        w = out["wire"]
        print(f"\nBytes per decoded token, 2 stages {w['layers']}, median of {w['runs']}")
        print("| hidden | bytes/token (sent + received) | sent | received | tok/s | tokens | same text as f32 |")
        print("|---|---|---|---|---|---|---|")
        for r in w["rows"]:
            same = "-" if r["same_text_as_f32"] is None else ("yes" if r["same_text_as_f32"] else "no")
            print(f"| {r['hidden']} | {r['bytes_per_token']:.0f} | {r['sent_per_token']:.0f} | "
                  f"{r['received_per_token']:.0f} | {r['tok_s_median']:.2f} | {r['tokens']} | {same} |")
    if "rss" in out:
        print("\nMemory: VmRSS after the decode runs against the stage's weights (manifest artifacts)")
        print("| configuration | node | layers | weights | RSS | RSS / weights |")
        print("|---|---|---|---|---|---|")
        for r in out["rss"]:
            print(f"| {r['config']} | {r['node']} | {r['layers'][0]}..{r['layers'][1]} | {fmt_bytes(r['weights_bytes'])} | "
                  f"{fmt_bytes(r['rss_bytes'])} | {r['rss_over_weights']:.2f} |")
    if "kill" in out:
        k = out["kill"]
        print(f"\nA stage fails mid-stream ({out['kill_model']}, layers {k['layers']}, {k['latency_each_way_ms']:g} ms "
              f"each way through the relay, {k['tokens']} tokens, failure after {k['kill_after']}; undisturbed "
              f"{k['undisturbed_ms_per_token']} ms/token). kill9: SIGKILL; stop: SIGSTOP (hung, sockets stay open)")
        print("| mode | run | victim | failure -> next token (ms) | gap between tokens (ms) | recovery (pipeline, ms) | replayed tokens | tokens | same text | error |")
        print("|---|---|---|---|---|---|---|---|---|---|")
        for mode, m in k["modes"].items():
            for i, r in enumerate(m["runs"]):
                rec = f"{r['last_recovery_ms']:.1f}" if r["recoveries"] else "-"
                print(f"| {mode} | {i + 1} | {r['victim']} | {r['kill_to_resume_ms']} | {r['gap_ms']} | {rec} | "
                      f"{r['replayed_tokens']} | {r['tokens']} | {'yes' if r['same_text'] else 'NO'} | {r['error'] or ''} |")
            print(f"{mode}: median failure -> resume {m['kill_to_resume_ms_median']} ms (max {m['kill_to_resume_ms_max']}); "
                  f"all complete and identical: {m['all_complete_and_identical']}")


def ensure_model(path):
    if os.path.exists(path):
        return path
    if os.path.basename(path) != "tinyllama-1.1b-q4_0.gguf":
        sys.exit(f"split_bench: no model at {path}")
    alt = os.path.join(tempfile.gettempdir(), "llmesh_split_bench_models", "tinyllama-1.1b-q4_0.gguf")
    if not os.path.exists(alt):
        os.makedirs(os.path.dirname(alt), exist_ok=True)
        log(f"generating the synthetic TinyLlama-1.1B Q4_0 at {alt}")
        subprocess.run([sys.executable, os.path.join(SHARED, "tools", "make_synthetic_gguf.py"), "--preset",
                        "tinyllama-1.1b", "--qtype", "q4_0", "--vocab-from",
                        os.path.join(SHARED, "models", "llama-2-tiny-random.gguf"), alt], check=True)
    return alt


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bin", default=os.path.join(ROOT, "build", "bin"))
    ap.add_argument("--model", default=DEFAULT_MODEL, help="GGUF for decode / wire / rss (default: synthetic "
                    "TinyLlama-1.1B Q4_0 in bench/models, generated under /tmp when absent)")
    ap.add_argument("--kill-model", default=STORIES, help="GGUF for the kill part (default stories260K)")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2, help="-t of every node")
    ap.add_argument("--ctx", type=int, default=512)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--rtts", default="5,20", help="RTTs (ms) through the fault relay")
    ap.add_argument("--kill-tokens", type=int, default=400)
    ap.add_argument("--kill-after", type=int, default=100)
    ap.add_argument("--kill-latency", type=float, default=5, help="relay latency each way (ms) in the kill part")
    ap.add_argument("--kill-runs", type=int, default=3, help="runs per kill mode")
    ap.add_argument("--kill-modes", default="kill9,stop", help="kill9 (SIGKILL) and/or stop (SIGSTOP: a hung node)")
    ap.add_argument("--ban-eos", action="store_true", help="decode with EOS banned by logit_bias (exactly "
                    "--max-tokens tokens, but the last stage then returns whole logits rows)")
    ap.add_argument("--quiet-idle", type=float, default=0.25, help="wait before the decode part until other "
                    "processes use at most this fraction of the CPUs ...")
    ap.add_argument("--quiet-timeout", type=float, default=120, help="... for at most this many seconds")
    ap.add_argument("--only", default="decode,wire,rss,kill")
    ap.add_argument("--quick", action="store_true", help="stories260K for everything, 2 runs")
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of the tables")
    args = ap.parse_args()
    if args.quick:
        args.model = STORIES
        args.runs = min(args.runs, 2)
        args.kill_runs = 1
        args.quiet_timeout = min(args.quiet_timeout, 10)
    args.rtts = [float(x) for x in args.rtts.split(",") if x]
    args.kill_modes = [x for x in args.kill_modes.split(",") if x]
    parts = args.only.split(",")
    b = Bench(args)
    head = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    out = {"commit": head, "binary_mtime": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(os.path.getmtime(b.llmesh))),
           "model": os.path.basename(args.model), "kill_model": os.path.basename(args.kill_model),
           "threads_per_node": args.threads, "cpus": os.cpu_count()}
    try:
        if {"decode", "rss", "wire"} & set(parts):
            args.model = ensure_model(args.model)
            out["model"] = os.path.basename(args.model)
            pkg, manifest = b.package(args.model)
            model_id = manifest["model_id"]
            eos = eos_id(b.llmesh, args.model) if args.ban_eos else None
            busy, waited = wait_quiet(args.quiet_idle, args.quiet_timeout)
            out["before_decode"] = {"others_cpu": busy, "waited_s": waited}
            log(f"other processes use {busy:.0%} of the CPUs (waited {waited} s)")
            if "decode" in parts or "rss" in parts:
                d, rss = measure_decode(b, pkg, manifest, model_id, eos)
                if "decode" in parts:
                    out["decode"] = d
                if "rss" in parts:
                    out["rss"] = rss
                log(f"decode {[(r['config'], r['tok_s_median'], r['ratio_vs_1_node']) for r in d['rows']]}")
            if "wire" in parts:
                out["wire"] = measure_wire(b, pkg, manifest, model_id, eos, eos_id(b.llmesh, args.model))
                log(f"wire {out['wire']['rows']}")
        if "kill" in parts:
            pkg, manifest = b.package(args.kill_model)
            out["kill"] = measure_kill(b, pkg, manifest, manifest["model_id"], eos_id(b.llmesh, args.kill_model))
    finally:
        b.close()
    if args.json:
        print(json.dumps(out))
    else:
        print_tables(out)


if __name__ == "__main__":
    main()
