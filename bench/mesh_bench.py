#!/usr/bin/env python3
"""Mesh figures from real llmesh processes on loopback (docs/benchmarks.md, "Mesh").

  python3 bench/mesh_bench.py [--bin build/bin] [--model ../shared/models/stories260K-f32.gguf]
                              [--runs N] [--nodes 20] [--idle 30] [--json]

Measures, each as a median over runs (and the max where the bound matters):
  join       time for `llmesh client --join TOKEN` from the join call to the mesh's view
             ("join_ms" of the listening line), and from process start to that line;
  kill       kill -9 of a node in a 5-node mesh until EVERY other node's /mesh/status says dead;
  gossip     bytes per second sent by each node of an idle N-node mesh (SWIM probes, acks,
             piggybacked updates), from the nodes' own counters over --idle seconds;
  hop        time to first token of a streamed chat completion sent to a client node (one
             routing hop over the mesh) versus sent to the serving node directly, interleaved.
Every node gets its own LLMESH_HOME in a temporary directory; nothing else is touched.
"""
import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def log(msg):
    print(msg, file=sys.stderr, flush=True)


class Node:
    def __init__(self, bench, name, args, home=None):
        self.bench = bench
        self.name = name
        self.home = home or os.path.join(bench.tmp, name)
        os.makedirs(self.home, exist_ok=True)
        self.args = args
        self.start()

    def start(self):
        env = dict(os.environ, LLMESH_HOME=self.home)
        self.err = open(os.path.join(self.home, "stderr.log"), "a")
        self.t_start = time.monotonic()
        self.proc = subprocess.Popen([self.bench.llmesh, *self.args, "--port", "0", "--json", "--mesh-listen",
                                      "127.0.0.1", "-q"], stdout=subprocess.PIPE, stderr=self.err, text=True,
                                     env=env)
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"{self.name} did not start: see {self.home}/stderr.log")
        self.t_listening = time.monotonic()
        self.info = json.loads(line)
        self.port = self.info["port"]
        self.id = self.info["node_id"]

    def status(self):
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/mesh/status", timeout=5) as r:
            return json.loads(r.read())

    def statuses(self):
        return {m["id"]: m["status"] for m in self.status()["members"]}

    def invite(self):
        env = dict(os.environ, LLMESH_HOME=self.home)
        out = subprocess.run([self.bench.llmesh, "invite", "--json"], env=env, capture_output=True, text=True,
                             check=True).stdout
        return json.loads(out)["token"]

    def kill9(self):
        self.proc.kill()
        self.proc.wait()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class Bench:
    def __init__(self, args):
        self.args = args
        self.llmesh = os.path.join(args.bin, "llmesh")
        self.tmp = tempfile.mkdtemp(prefix="llmesh_mesh_bench_")
        self.nodes = []

    def server(self, name, extra=()):
        n = Node(self, name, ["serve", "-m", self.args.model, "-c", "256", "--parallel", "2", "-t", "1",
                              "--mesh-port", "0", *extra])
        self.nodes.append(n)
        return n

    def client(self, name, token):
        n = Node(self, name, ["client", "--join", token])
        self.nodes.append(n)
        return n

    def close(self):
        for n in self.nodes:
            n.stop()
        shutil.rmtree(self.tmp, ignore_errors=True)


def wait_until(pred, timeout, step=0.02):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(step)
    return False


def time_until_all_see_dead(victim, watchers, timeout=30):
    """kill -9 the victim; seconds until every watcher's /mesh/status says it is dead (None: not all did)."""
    victim.kill9()
    t0 = time.monotonic()
    seen = {}
    while len(seen) < len(watchers) and time.monotonic() - t0 < timeout:
        for w in watchers:
            if w.id not in seen and w.statuses().get(victim.id) == "dead":
                seen[w.id] = time.monotonic() - t0
        time.sleep(0.02)
    return max(seen.values()) if len(seen) == len(watchers) else None


def measure_join(b, runs):
    seed = b.server("join-seed")
    token = seed.invite()
    join_ms, wall_ms = [], []
    for i in range(runs):
        c = b.client(f"join-{i}", token)
        if not c.info.get("joined"):
            raise RuntimeError(f"join-{i} did not join: {c.info}")
        join_ms.append(c.info["join_ms"])
        wall_ms.append((c.t_listening - c.t_start) * 1000)
    for n in list(b.nodes):
        n.stop()
    b.nodes.clear()
    return {"join_ms_median": statistics.median(join_ms), "join_ms_max": max(join_ms),
            "start_to_joined_ms_median": round(statistics.median(wall_ms), 1), "runs": runs}


def measure_kill(b, runs, size=5):
    a = b.server("kill-a")
    token = a.invite()
    others = [b.client(f"kill-{i}", token) for i in range(size - 1)]
    nodes = [a, *others]
    if not wait_until(lambda: all(sum(1 for s in n.statuses().values() if s == "alive") == size for n in nodes), 15):
        raise RuntimeError("the kill mesh did not converge")
    times = []
    for r in range(runs):
        victim = others[r % len(others)]
        watchers = [n for n in nodes if n is not victim]
        took = time_until_all_see_dead(victim, watchers)
        if took is None:
            raise RuntimeError(f"run {r}: not every node saw the kill within 30 s")
        times.append(took)
        log(f"mesh_bench: kill run {r}: every node knew after {times[-1]:.2f} s")
        victim.start()  # same home: same identity, rejoins through peers.json
        if not wait_until(lambda: all(n.statuses().get(victim.id) == "alive" for n in watchers), 20):
            raise RuntimeError(f"run {r}: the restarted node did not come back alive")
        time.sleep(1.0)
    for n in list(b.nodes):
        n.stop()
    b.nodes.clear()
    return {"all_know_dead_s_median": round(statistics.median(times), 2), "all_know_dead_s_max": round(max(times), 2),
            "runs": runs, "mesh_size": size}


def measure_gossip(b, size, idle):
    a = b.server("gossip-a")
    token = a.invite()
    nodes = [a]
    for i in range(size - 1):
        nodes.append(b.client(f"gossip-{i}", token))
        if i % 5 == 4:
            token = nodes[-1].invite()  # seeds spread over the mesh, as real invites would
    t_last = time.monotonic()
    if not wait_until(lambda: all(sum(1 for s in n.statuses().values() if s == "alive") == size for n in nodes), 60,
                      step=0.2):
        raise RuntimeError("the gossip mesh did not converge")
    converge = time.monotonic() - t_last
    time.sleep(3)  # let the joins' own updates finish spreading
    first = {n.id: (time.monotonic(), n.status()["gossip"]) for n in nodes}
    time.sleep(idle)
    rates, recv, wire, msgs = [], [], [], []
    for n in nodes:
        t1, g1 = time.monotonic(), n.status()["gossip"]
        t0, g0 = first[n.id]
        rates.append((g1["bytes_sent"] - g0["bytes_sent"]) / (t1 - t0))
        recv.append((g1["bytes_received"] - g0["bytes_received"]) / (t1 - t0))
        wire.append((g1["wire_bytes_sent_estimate"] - g0["wire_bytes_sent_estimate"]) / (t1 - t0))
        msgs.append((g1["messages_sent"] - g0["messages_sent"]) / (t1 - t0))
    deaths = sum(1 for n in nodes for s in n.statuses().values() if s != "alive")
    # A kill -9 in the big mesh: until every one of the others knows.
    victim = nodes[size // 2]
    watchers = [n for n in nodes if n is not victim]
    kill_all = time_until_all_see_dead(victim, watchers)
    for n in list(b.nodes):
        n.stop()
    b.nodes.clear()
    return {"mesh_size": size, "converged_after_last_start_s": round(converge, 2),
            "bytes_sent_per_s_per_node_median": round(statistics.median(rates), 1),
            "bytes_sent_per_s_per_node_max": round(max(rates), 1),
            "bytes_received_per_s_per_node_median": round(statistics.median(recv), 1),
            "wire_bytes_sent_per_s_per_node_median": round(statistics.median(wire), 1),
            "messages_sent_per_s_per_node_median": round(statistics.median(msgs), 2),
            "not_alive_entries": deaths, "idle_s": idle,
            "kill_all_know_dead_s": round(kill_all, 2) if kill_all is not None else None}


def ttft(port, model, serial):
    body = json.dumps({"model": model, "stream": True, "max_tokens": 4, "temperature": 0,
                       "messages": [{"role": "user", "content": f"Once upon a time {serial}"}]}).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/chat/completions", data=body,
                                 headers={"Content-Type": "application/json"})
    t0 = time.monotonic()
    first = None
    with urllib.request.urlopen(req, timeout=60) as r:
        for raw in r:
            line = raw.decode().strip()
            if first is None and line.startswith("data:") and '"content"' in line:
                first = time.monotonic() - t0
        if first is None:
            raise RuntimeError("no content in the stream")
    return first * 1000


def measure_hop(b, runs):
    a = b.server("hop-server", extra=["--name", "hop"])
    c = b.client("hop-client", a.invite())
    for i in range(3):  # warm both paths
        ttft(a.port, "hop", -i)
        ttft(c.port, "hop", -i - 10)
    direct, hop = [], []
    for i in range(runs):
        pair = [(direct, a.port), (hop, c.port)]
        if i % 2:
            pair.reverse()
        for acc, port in pair:
            acc.append(ttft(port, "hop", i))
    for n in list(b.nodes):
        n.stop()
    b.nodes.clear()
    d, h = statistics.median(direct), statistics.median(hop)
    return {"ttft_direct_ms_median": round(d, 2), "ttft_via_client_ms_median": round(h, 2),
            "added_ms_median": round(h - d, 2),
            "added_ms_median_of_pairs": round(statistics.median([y - x for x, y in zip(direct, hop)]), 2),
            "runs": runs}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bin", default=os.path.join(ROOT, "build", "bin"))
    ap.add_argument("--model", default=os.path.join(ROOT, "..", "shared", "models", "stories260K-f32.gguf"))
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--nodes", type=int, default=20)
    ap.add_argument("--idle", type=float, default=30)
    ap.add_argument("--only", default="join,kill,gossip,hop")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    out = {}
    b = Bench(args)
    try:
        parts = args.only.split(",")
        if "join" in parts:
            out["join"] = measure_join(b, args.runs)
            log(f"mesh_bench: join {out['join']}")
        if "kill" in parts:
            out["kill"] = measure_kill(b, max(3, args.runs // 2))
            log(f"mesh_bench: kill {out['kill']}")
        if "gossip" in parts:
            out["gossip"] = measure_gossip(b, args.nodes, args.idle)
            log(f"mesh_bench: gossip {out['gossip']}")
        if "hop" in parts:
            out["hop"] = measure_hop(b, max(20, args.runs * 3))
            log(f"mesh_bench: hop {out['hop']}")
    finally:
        b.close()
    print(json.dumps(out, indent=None if args.json else 2))


if __name__ == "__main__":
    main()
