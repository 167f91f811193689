#!/usr/bin/env python3
"""Runs the same DAGs on Dask distributed, Ray and Stratus and prints one table.

Every DAG node is a task that touches `memory_mb` MiB, busy-loops
`duration_ms`, receives its inputs' bytes and returns `output_bytes` bytes;
a node without inputs gets the workflow input. Each engine is measured the
same way from this process: warm-up invocations, then sequential end-to-end
invocations per DAG (p50/p99), plus independent no-op tasks per second.

Engines run one after another (never at the same time), each on 2 CPU slots:
Dask LocalCluster(n_workers=2, threads_per_worker=1), Ray ray.init(num_cpus=2),
Stratus `stratus up` with one `stratus fn bench` Service per node.

Usage (normally through run.sh, which provides the virtualenv):
    peers.py [--dags DIR/dags.json] [--no-micro] [--iterations N] [--warmup W]
             [--tasks M] [--engines dask,ray,stratus] [--json OUT]
Only the standard library besides dask/distributed and ray.
"""

import argparse
import collections
import http.client
import itertools
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
ENGINES = ("dask", "ray", "stratus")
TASKS_ROW = "tasks/s"


# The task lives in its own module so that Dask and Ray workers import it by
# reference (a function of __main__ would be pickled by value with every task).
sys.path.insert(0, HERE)
os.environ["PYTHONPATH"] = HERE + (os.pathsep + os.environ["PYTHONPATH"] if os.environ.get("PYTHONPATH") else "")
from peers_task import bench_task  # noqa: E402


# --------------------------------------------------------------------------
# DAGs


class Dag:
    """A validated DAG: nodes in topological order, one sink."""

    def __init__(self, name, nodes, source="micro", output=None):
        self.name = name
        self.source = source
        by_name = {}
        for n in nodes:
            if n["name"] in by_name:
                raise ValueError(f"DAG {name}: duplicate node {n['name']!r}")
            by_name[n["name"]] = n
        for n in nodes:
            for i in n.get("inputs", []):
                if i not in by_name:
                    raise ValueError(f"DAG {name}: node {n['name']!r} reads unknown node {i!r}")
        # Kahn's algorithm, keeping the file's order among ready nodes.
        indeg = {n["name"]: len(n.get("inputs", [])) for n in nodes}
        users = collections.defaultdict(list)
        for n in nodes:
            for i in n.get("inputs", []):
                users[i].append(n["name"])
        ready = collections.deque(n["name"] for n in nodes if indeg[n["name"]] == 0)
        order = []
        while ready:
            k = ready.popleft()
            order.append(by_name[k])
            for u in users[k]:
                indeg[u] -= 1
                if indeg[u] == 0:
                    ready.append(u)
        if len(order) != len(nodes):
            raise ValueError(f"DAG {name}: has a cycle")
        sinks = [n["name"] for n in nodes if not users[n["name"]]]
        if len(sinks) != 1:
            raise ValueError(f"DAG {name}: expected exactly one sink, found {sinks}")
        if output is not None and output != sinks[0]:
            raise ValueError(f"DAG {name}: says its output is {output!r}, but its sink is {sinks[0]!r}")
        self.nodes = order
        self.sink = by_name[sinks[0]]
        self.by_name = by_name

    def critical_path_ms(self):
        best = {}
        for n in self.nodes:
            before = max((best[i] for i in n.get("inputs", [])), default=0.0)
            best[n["name"]] = before + float(n.get("duration_ms", 0.0))
        return max(best.values(), default=0.0)

    def total_ms(self):
        return sum(float(n.get("duration_ms", 0.0)) for n in self.nodes)


def node(dag, name, inputs=(), duration_ms=0.0, memory_mb=0, output_bytes=0, profile="micro"):
    return {
        "name": name,
        "function": f"{dag}-{name}",
        "duration_ms": duration_ms,
        "memory_mb": memory_mb,
        "output_bytes": output_bytes,
        "inputs": list(inputs),
        "profile": profile,
    }


def micro_dags():
    """chain10: 10 no-op nodes in a row; fan16: source -> 16 parallel no-ops -> join."""
    chain = [node("chain10", f"n{i}", [f"n{i - 1}"] if i else []) for i in range(10)]
    fan = [node("fan16", "src")]
    fan += [node("fan16", f"m{i}", ["src"]) for i in range(16)]
    fan.append(node("fan16", "join", [f"m{i}" for i in range(16)]))
    return {
        "seed": 0,
        "config": {"micro": True},
        "dags": [{"name": "chain10", "nodes": chain}, {"name": "fan16", "nodes": fan}],
    }


def load_dags(path):
    if os.path.isdir(path):
        path = os.path.join(path, "dags.json")
    with open(path) as f:
        doc = json.load(f)
    return [Dag(d["name"], d["nodes"], source=path, output=d.get("output")) for d in doc["dags"]]


def estimate_ms(dag):
    """About one invocation's time: the critical path or the work spread over
    2 slots, whichever is longer, plus ~1 ms of overhead per node."""
    return max(dag.critical_path_ms(), dag.total_ms() / 2.0) + len(dag.nodes) * 1.0


def plan_iterations(dag, args):
    """(warmup, iterations) for a DAG: the flags, capped so that one engine
    spends about --budget seconds on it, with at least --min-iterations."""
    if dag.source == "micro":
        return args.warmup, args.iterations
    n = int(args.budget * 1000.0 / max(estimate_ms(dag), 1.0))
    n = max(args.min_iterations, min(args.iterations, n))
    w = max(1, min(args.warmup, n // 10))
    return w, n


# --------------------------------------------------------------------------
# Measurement (the same loop for every engine)


def percentile(sorted_xs, p):
    if not sorted_xs:
        return float("nan")
    k = (len(sorted_xs) - 1) * p / 100.0
    lo = int(k)
    hi = min(lo + 1, len(sorted_xs) - 1)
    return sorted_xs[lo] + (sorted_xs[hi] - sorted_xs[lo]) * (k - lo)


def measure_dag(run_once, dag, warmup, iterations, payload):
    expect = int(dag.sink.get("output_bytes", 0))
    for _ in range(warmup):
        check(dag, run_once(payload), expect)
    times = []
    for _ in range(iterations):
        t0 = time.perf_counter()
        out = run_once(payload)
        times.append((time.perf_counter() - t0) * 1000.0)
        check(dag, out, expect)
    s = sorted(times)
    return {
        "n": len(s),
        "warmup": warmup,
        "p50_ms": percentile(s, 50),
        "p99_ms": percentile(s, 99),
        "mean_ms": statistics.fmean(s),
        "min_ms": s[0],
        "max_ms": s[-1],
    }


def check(dag, out, expect):
    if len(out) != expect:
        raise RuntimeError(f"{dag.name}: output has {len(out)} bytes, expected {expect}")


def tasks_result(m, elapsed):
    return {"tasks": m, "seconds": elapsed, "tasks_per_s": m / elapsed}


# --------------------------------------------------------------------------
# Dask


class DaskEngine:
    name = "dask"

    def __init__(self, args):
        import dask
        import distributed

        self.versions = {"dask": dask.__version__, "distributed": distributed.__version__}
        # Dask's default worker-saturation (1.1) queues tasks on the scheduler
        # and hands each worker a new one only when the previous finished: a
        # scheduler round trip per task, which halves tasks/s here. `inf`
        # (the behaviour before 2022.11) sends runnable tasks to workers at once.
        dask.config.set({"distributed.scheduler.worker-saturation": args.dask_worker_saturation})
        self.cluster = distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        )
        self.client = distributed.Client(self.cluster)
        self.seq = itertools.count()

    def run_dag(self, dag, payload):
        c = self.client
        i = next(self.seq)
        futs = {}
        for n in dag.nodes:
            ins = [futs[x] for x in n["inputs"]] if n["inputs"] else [payload]
            futs[n["name"]] = c.submit(
                bench_task,
                float(n["duration_ms"]),
                int(n["memory_mb"]),
                int(n["output_bytes"]),
                *ins,
                key=f"{dag.name}-{n['name']}-{i}",
                pure=False,
            )
        return futs[dag.sink["name"]].result()

    def tasks_per_s(self, m):
        c = self.client

        def burst(k):
            t0 = time.perf_counter()
            futs = [c.submit(bench_task, 0.0, 0, 0, pure=False) for _ in range(k)]
            c.gather(futs)
            return time.perf_counter() - t0

        burst(min(m, 500))  # warm-up
        return tasks_result(m, burst(m))

    def close(self):
        self.client.shutdown()  # scheduler and workers
        self.cluster.close()


# --------------------------------------------------------------------------
# Ray


class RayEngine:
    name = "ray"

    def __init__(self, args):
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        import ray

        self.ray = ray
        self.versions = {"ray": ray.__version__}
        ray.init(
            num_cpus=2,
            include_dashboard=False,
            logging_level="warning",
            log_to_driver=False,
        )
        self.task = ray.remote(bench_task)

    def run_dag(self, dag, payload):
        refs = {}
        for n in dag.nodes:
            ins = [refs[x] for x in n["inputs"]] if n["inputs"] else [payload]
            refs[n["name"]] = self.task.remote(
                float(n["duration_ms"]), int(n["memory_mb"]), int(n["output_bytes"]), *ins
            )
        return self.ray.get(refs[dag.sink["name"]])

    def tasks_per_s(self, m):
        def burst(k):
            t0 = time.perf_counter()
            refs = [self.task.remote(0.0, 0, 0) for _ in range(k)]
            self.ray.get(refs)
            return time.perf_counter() - t0

        burst(min(m, 500))  # warm-up
        return tasks_result(m, burst(m))

    def close(self):
        self.ray.shutdown()


# --------------------------------------------------------------------------
# Stratus

NAME_RE = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")


def dns_label(s, taken):
    """A unique DNS-1123 label (starting with a letter) derived from `s`."""
    base = re.sub(r"[^a-z0-9-]+", "-", s.lower()).strip("-") or "x"
    if not base[0].isalpha():
        base = "n-" + base
    base = base[:55].rstrip("-")
    name, k = base, 1
    while name in taken or not NAME_RE.match(name):
        k += 1
        name = f"{base}-{k}"
    taken.add(name)
    return name


def service_yaml(name, duration_ms, memory_mb, output_bytes, min_scale=1, max_scale=None, cc=1):
    ann = f'        autoscaling.knative.dev/min-scale: "{min_scale}"\n'
    if max_scale is not None:
        ann += f'        autoscaling.knative.dev/max-scale: "{max_scale}"\n'
    return (
        "apiVersion: serving.knative.dev/v1\n"
        "kind: Service\n"
        "metadata:\n"
        f"  name: {name}\n"
        "spec:\n"
        "  template:\n"
        "    metadata:\n"
        "      annotations:\n"
        f"{ann}"
        "    spec:\n"
        f"      containerConcurrency: {cc}\n"
        "      containers:\n"
        "        - image: stratus.dev/bench/bench\n"
        '          command: ["stratus", "fn", "bench"]\n'
        "          env:\n"
        f'            - {{name: BENCH_MS, value: "{float(duration_ms)!r}"}}\n'
        f'            - {{name: BENCH_MEMORY_MB, value: "{int(memory_mb)}"}}\n'
        f'            - {{name: BENCH_OUTPUT_BYTES, value: "{int(output_bytes)}"}}\n'
    )


def dag_bundle(dag, taken):
    """(workflow name, service names, YAML) deploying `dag` on Stratus."""
    wf = dns_label(dag.name, taken)
    docs, services = [], []
    fn_of = {}  # node -> service; nodes sharing a function and its settings share a Service
    by_fn = {}
    step_names = set()
    steps = {}
    for n in dag.nodes:
        params = (float(n["duration_ms"]), int(n["memory_mb"]), int(n["output_bytes"]))
        key = (n.get("function") or f"{dag.name}-{n['name']}", params)
        if key not in by_fn:
            svc = dns_label(key[0], taken)
            by_fn[key] = svc
            services.append(svc)
            docs.append(service_yaml(svc, *params))
        fn_of[n["name"]] = by_fn[key]
        steps[n["name"]] = dns_label(n["name"], step_names)
    lines = [
        "apiVersion: stratus.dev/v1alpha1",
        "kind: Workflow",
        "metadata:",
        f"  name: {wf}",
        "spec:",
        "  steps:",
    ]
    for n in dag.nodes:
        s = f"    - {{name: {steps[n['name']]}, function: {fn_of[n['name']]}"
        if n["inputs"]:
            s += ", inputs: [" + ", ".join(steps[i] for i in n["inputs"]) + "]"
        lines.append(s + "}")
    lines.append(f"  output: {steps[dag.sink['name']]}")
    docs.append("\n".join(lines) + "\n")
    return wf, services, "---\n".join(docs)


class StratusEngine:
    name = "stratus"
    # The tasks/s function gets 2 instances of concurrency 1: two slots, like
    # Dask's 2 single-threaded workers and Ray's num_cpus=2.
    NOOP = "peers-noop"

    def __init__(self, args):
        self.bin = os.path.abspath(args.stratus_bin)
        self.versions = {"stratus": subprocess.run(
            [self.bin, "--version"], capture_output=True, text=True
        ).stdout.strip() or "unknown"}
        self.tmp = tempfile.mkdtemp(prefix="stratus-peers-")
        self.port = free_port()
        env = dict(os.environ)
        env["PATH"] = os.path.dirname(self.bin) + os.pathsep + env.get("PATH", "")
        env.pop("STRATUS_TOKEN", None)  # so `stratus up` writes state/admin.token
        self.log_path = os.path.join(self.tmp, "stratus.log")
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [
                self.bin, "up",
                "--addr", f"127.0.0.1:{self.port}",
                "--state-dir", os.path.join(self.tmp, "state"),
            ],
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            preexec_fn=die_with_parent,
        )
        self.local = threading.local()
        # `stratus up` writes its admin token here (mode 0600) before it
        # listens; every request but /healthz needs it.
        self.token_path = os.path.join(self.tmp, "state", "admin.token")
        self.token = None
        self.noop_slots = args.stratus_noop_slots
        self.noop_cc = args.stratus_noop_concurrency
        deadline = time.monotonic() + 30
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"stratus up exited with {self.proc.returncode}: {self.log_tail()}")
            try:
                if self.request("GET", "/healthz")[0] == 200:
                    break
            except OSError:
                self.local.conn = None
            if time.monotonic() > deadline:
                raise RuntimeError(f"stratus up did not become healthy: {self.log_tail()}")
            time.sleep(0.05)
        with open(self.token_path) as f:
            self.token = f.read().strip()

    def log_tail(self, n=2000):
        try:
            with open(self.log_path, "rb") as f:
                return f.read()[-n:].decode(errors="replace")
        except OSError:
            return ""

    def conn(self):
        c = getattr(self.local, "conn", None)
        if c is None:
            # Long enough for the slowest synthesised DAG (nodes of up to an hour).
            c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=4 * 3600)
            self.local.conn = c
        return c

    def request(self, method, path, body=None, headers=None):
        c = self.conn()
        headers = dict(headers or {})
        if self.token:
            headers["authorization"] = f"Bearer {self.token}"
        try:
            c.request(method, path, body=body, headers=headers)
            r = c.getresponse()
            data = r.read()
        except (http.client.HTTPException, OSError):
            c.close()
            self.local.conn = None
            raise
        if r.getheader("connection", "").lower() == "close":
            c.close()
            self.local.conn = None
        return r.status, data

    def deploy(self, filename, yaml):
        st, body = self.request(
            "POST", "/v1/deploy", yaml.encode(),
            {"x-stratus-file": filename, "content-type": "application/yaml"},
        )
        if st != 200:
            raise RuntimeError(f"deploy {filename} failed ({st}): {body[:2000].decode(errors='replace')}")

    def wait_ready(self, services, want=1, timeout=60):
        deadline = time.monotonic() + timeout
        services = set(services)
        while True:
            st, body = self.request("GET", "/v1/resources")
            ready = {
                r["name"] for r in json.loads(body)
                if r.get("kind") == "Service" and (r.get("instances") or 0) >= want
            }
            if services <= ready:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"instances not ready after {timeout}s: {sorted(services - ready)}")
            time.sleep(0.05)

    def delete(self, name):
        self.request("DELETE", f"/v1/resources/{name}")

    def invoke(self, name, payload):
        st, body = self.request("POST", f"/v1/invoke/{name}", payload)
        if st != 200:
            raise RuntimeError(f"invoke {name} failed ({st}): {body[:500].decode(errors='replace')}")
        return body

    def measure(self, dag, warmup, iterations, payload):
        wf, services, yaml = dag_bundle(dag, set())
        self.deploy(f"{wf}.yaml", yaml)
        try:
            self.wait_ready(services)
            return measure_dag(lambda p: self.invoke(wf, p), dag, warmup, iterations, payload)
        finally:
            # Free the instances before the next DAG.
            self.delete(wf)
            for s in services:
                self.delete(s)

    def tasks_per_s(self, m, clients=32):
        self.deploy(
            "peers-noop.yaml",
            service_yaml(self.NOOP, 0.0, 0, 0, self.noop_slots, self.noop_slots, self.noop_cc),
        )
        self.wait_ready([self.NOOP], want=self.noop_slots)
        counter = itertools.count()
        errors = []

        def worker(limit):
            try:
                while next(counter) < limit:
                    self.invoke(self.NOOP, b"")
            except Exception as e:  # noqa: BLE001 - reported below
                errors.append(e)

        def burst(k):
            nonlocal counter
            counter = itertools.count()
            threads = [threading.Thread(target=worker, args=(k,)) for _ in range(clients)]
            t0 = time.perf_counter()
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            return time.perf_counter() - t0

        burst(min(m, 500))  # warm-up: opens the 32 connections
        elapsed = burst(m)
        # Close the worker threads' connections (their thread-locals are gone).
        self.delete(self.NOOP)
        if errors:
            raise RuntimeError(f"{len(errors)} invocations failed, first: {errors[0]}")
        return tasks_result(m, elapsed)

    def close(self):
        c = getattr(self.local, "conn", None)
        if c is not None:
            c.close()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        shutil.rmtree(self.tmp, ignore_errors=True)


def die_with_parent():
    """In the child: get SIGTERM when this script dies, even by SIGKILL (Linux)."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --------------------------------------------------------------------------
# Driver


def run_engine(name, dags, args, payload):
    cls = {"dask": DaskEngine, "ray": RayEngine, "stratus": StratusEngine}[name]
    res = {"dags": {}, "tasks": None, "versions": {}, "errors": []}
    t0 = time.perf_counter()
    log(f"[{name}] starting")
    try:
        eng = cls(args)
    except Exception as e:  # noqa: BLE001 - one engine failing must not stop the others
        traceback.print_exc()
        res["errors"].append(f"start: {e}")
        return res
    res["versions"] = eng.versions
    log(f"[{name}] started in {time.perf_counter() - t0:.1f}s ({eng.versions})")
    try:
        for dag in dags:
            w, n = plan_iterations(dag, args)
            t1 = time.perf_counter()
            try:
                if name == "stratus":
                    r = eng.measure(dag, w, n, payload)
                else:
                    r = measure_dag(lambda p: eng.run_dag(dag, p), dag, w, n, payload)
            except Exception as e:  # noqa: BLE001
                traceback.print_exc()
                res["errors"].append(f"{dag.name}: {e}")
                continue
            res["dags"][dag.name] = r
            log(
                f"[{name}] {dag.name}: p50 {r['p50_ms']:.2f} ms, p99 {r['p99_ms']:.2f} ms "
                f"(n={n}, {time.perf_counter() - t1:.1f}s)"
            )
        if args.tasks > 0:
            try:
                r = eng.tasks_per_s(args.tasks)
                res["tasks"] = r
                log(f"[{name}] {args.tasks} independent tasks: {r['tasks_per_s']:,.0f} tasks/s")
            except Exception as e:  # noqa: BLE001
                traceback.print_exc()
                res["errors"].append(f"tasks/s: {e}")
    finally:
        t1 = time.perf_counter()
        try:
            eng.close()
        except Exception:  # noqa: BLE001
            traceback.print_exc()
        log(f"[{name}] stopped in {time.perf_counter() - t1:.1f}s")
    return res


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def fmt_ms(r):
    return f"{r['p50_ms']:.1f} / {r['p99_ms']:.1f}" if r else "–"


def fmt_ratio(a, b, keys):
    if not a or not b:
        return "–"
    return " / ".join(f"{a[k] / b[k]:.2f}" if b[k] else "–" for k in keys)


def table(dags, results, engines):
    head = [""] + [e.capitalize() for e in engines]
    ratio_of = [e for e in ("dask", "ray") if e in engines and "stratus" in engines]
    head += [f"{e.capitalize()}/Stratus" for e in ratio_of]
    rows = []
    for d in dags:
        row = [f"{d.name} (p50 / p99 ms)"]
        cells = {e: results[e]["dags"].get(d.name) for e in engines}
        row += [fmt_ms(cells[e]) for e in engines]
        row += [fmt_ratio(cells[e], cells["stratus"], ("p50_ms", "p99_ms")) for e in ratio_of]
        rows.append(row)
    t = {e: results[e]["tasks"] for e in engines}
    if any(t.values()):
        row = [TASKS_ROW]
        row += [f"{t[e]['tasks_per_s']:,.0f}" if t[e] else "–" for e in engines]
        row += [fmt_ratio(t[e], t["stratus"], ("tasks_per_s",)) for e in ratio_of]
        rows.append(row)
    widths = [max(len(r[i]) for r in [head] + rows) for i in range(len(head))]
    line = lambda r: "| " + " | ".join(  # noqa: E731
        c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))
    ) + " |"
    out = [line(head), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    out += [line(r) for r in rows]
    return "\n".join(out)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dags", help="synthesised DAGs: DIR/dags.json (or DIR); added to the micro DAGs")
    p.add_argument("--micro", action="store_true", help="run the micro DAGs chain10 and fan16 (the default; kept with --dags unless --no-micro)")
    p.add_argument("--no-micro", action="store_true", help="skip the micro DAGs")
    p.add_argument("--iterations", type=int, default=200, help="measured invocations per DAG (synthesised DAGs: at most this many, see --budget; default 200)")
    p.add_argument("--warmup", type=int, default=20, help="unmeasured invocations first (default 20)")
    p.add_argument("--budget", type=float, default=10.0, help="synthesised DAGs: about this many seconds per DAG and engine (default 10)")
    p.add_argument("--min-iterations", type=int, default=5, help="synthesised DAGs: at least this many invocations (default 5)")
    p.add_argument("--tasks", type=int, default=5000, help="independent no-op tasks in the tasks/s test, 0 to skip (default 5000)")
    p.add_argument("--input-bytes", type=int, default=0, help="size of the workflow input (default 0)")
    p.add_argument("--engines", default=",".join(ENGINES), help="comma-separated subset of dask,ray,stratus")
    p.add_argument("--dask-worker-saturation", type=float, default=float("inf"), help="Dask's distributed.scheduler.worker-saturation (default inf; Dask's own default is 1.1)")
    p.add_argument("--stratus-bin", default=os.path.join(ROOT, "target", "release", "stratus"))
    p.add_argument("--stratus-noop-slots", type=int, default=2, help="instances of the tasks/s function (default 2, like 2 workers)")
    p.add_argument("--stratus-noop-concurrency", type=int, default=1, help="containerConcurrency of the tasks/s function (default 1)")
    p.add_argument("--json", metavar="OUT", help="write the results here as JSON")
    args = p.parse_args()

    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    for e in engines:
        if e not in ENGINES:
            p.error(f"unknown engine {e!r} (expected {', '.join(ENGINES)})")
    dags = []
    if not args.no_micro or args.micro:
        m = micro_dags()
        dags += [Dag(d["name"], d["nodes"]) for d in m["dags"]]
    if args.dags:
        extra = load_dags(args.dags)
        taken = {d.name for d in dags}
        for d in extra:
            if d.name in taken:
                raise SystemExit(f"DAG name {d.name!r} appears twice")
            taken.add(d.name)
        dags += extra
    if not dags and args.tasks <= 0:
        p.error("nothing to run")
    payload = b"i" * args.input_bytes

    log(f"{len(dags)} DAGs: " + ", ".join(f"{d.name} ({len(d.nodes)} nodes)" for d in dags))
    est = sum(sum(plan_iterations(d, args)) * estimate_ms(d) for d in dags) / 1000.0
    log(f"DAG invocations alone take at least ~{est * len(engines):.0f} s on {len(engines)} engines")
    started = time.time()
    results = {}
    for e in engines:
        results[e] = run_engine(e, dags, args, payload)

    print()
    print(table(dags, results, engines))
    print()
    print("Latency rows: end-to-end time of one DAG invocation seen from Python, sequential invocations;")
    print("ratios > 1 mean Stratus is faster. tasks/s: independent no-op tasks per second; ratios < 1 mean Stratus is faster.")
    for e in engines:
        for err in results[e]["errors"]:
            print(f"error: {e}: {err}")

    if args.json:
        doc = {
            "started_unix": started,
            "seconds": time.time() - started,
            "machine": {
                "cpus": os.cpu_count(),
                "python": platform.python_version(),
                "platform": platform.platform(),
            },
            "args": vars(args),
            "dags": [
                {
                    "name": d.name,
                    "nodes": len(d.nodes),
                    "critical_path_ms": d.critical_path_ms(),
                    "total_ms": d.total_ms(),
                    "source": d.source,
                }
                for d in dags
            ],
            "results": results,
        }
        with open(args.json, "w") as f:
            json.dump(doc, f, indent=2)
            f.write("\n")
        log(f"wrote {args.json}")
    return 1 if any(results[e]["errors"] for e in engines) else 0


if __name__ == "__main__":
    sys.exit(main())
