#!/usr/bin/python3
"""Memory soak: mixed traffic at saturation, resident memory must stay flat.

Starts maskserve on the demo model (with a small batching queue, so that
saturation sheds load with RESOURCE_EXHAUSTED instead of queueing) and drives
it with `maskserve-bench --workload=mixed --verify` in a closed loop:
Embed, Generate, GenerateStream and streams the client cancels after their
first message, every answer compared with a reference answer. The server's
resident memory (/proc/<pid>/status VmRSS) is sampled every second.

Pass criteria (exit 0, else 1):
  - no error other than RESOURCE_EXHAUSTED, no wrong answer;
  - RSS flat after warm-up: least-squares slope over the samples after the
    warm-up <= --max_slope_mib_per_min, and end - start <= --max_growth_mib;
  - afterwards the server is idle again: KV-cache blocks in use 0, nothing
    in flight.

  /usr/bin/python3 bench/soak.py [--build build/release] [--duration 180]
      [--warmup 30] [--concurrency 32] [--json out.json]
The full 3-minute run is a benchmark (numbers in bench/README.md); the tests
run a short smoke of it (tests/integration/test_soak_overload_smoke.py).
"""
import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE = os.path.dirname(HERE)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    raise RuntimeError("no VmRSS")


def slope_per_min(samples):
    """Least-squares slope of (seconds, MiB) samples, in MiB per minute."""
    n = len(samples)
    if n < 2:
        return 0.0
    mx = sum(t for t, _ in samples) / n
    my = sum(v for _, v in samples) / n
    sxx = sum((t - mx) ** 2 for t, _ in samples)
    sxy = sum((t - mx) * (v - my) for t, v in samples)
    return 60.0 * sxy / sxx if sxx > 0 else 0.0


def metric(text, name, labels=None):
    want = ",".join(f'{k}="{v}"' for k, v in (labels or {}).items())
    prefix = name + ("{" + want + "}" if want else "")
    total = None
    for line in text.splitlines():
        if line.startswith(prefix + " ") or (not want and line.startswith(name + "{")):
            total = (total or 0.0) + float(line.rsplit(" ", 1)[1])
    return total


class Server:
    def __init__(self, build, args, data_dir):
        self.port, self.metrics_port = free_port(), free_port()
        self.log_path = os.path.join(data_dir, "server.log")
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            [os.path.join(build, "server", "maskserve"), "--bind=127.0.0.1",
             f"--port={self.port}", f"--metrics_port={self.metrics_port}",
             f"--data_dir={data_dir}", *args],
            stdout=self.log, stderr=subprocess.STDOUT,
            env=dict(os.environ, OMP_WAIT_POLICY="PASSIVE"))

    def get(self, path):
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}{path}",
                                    timeout=5) as r:
            return r.read().decode()

    def wait_ready(self, timeout=120):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("maskserve exited: " + open(self.log_path).read())
            try:
                self.get("/readyz")
                return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("maskserve not ready")

    def stop(self):
        """Stops the server; returns (exit code before SIGTERM or None, log text)."""
        exited_early = self.proc.poll()
        if exited_early is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        with open(self.log_path) as f:
            return exited_early, f.read()


def run(build, duration, warmup, concurrency, max_new_tokens, max_slope, max_growth,
        server_args=(), out=sys.stdout):
    data_dir = tempfile.mkdtemp(prefix="maskserve-soak-")
    srv = Server(build, ["--max_queue_size=16", *server_args], data_dir)
    samples = []
    stop = threading.Event()
    try:
        srv.wait_ready()
        t0 = time.time()

        def sample():
            while not stop.is_set():
                samples.append((time.time() - t0, rss_mib(srv.proc.pid)))
                stop.wait(1.0)
        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        bench = subprocess.run(
            [os.path.join(build, "client", "maskserve-bench"), f"--target=127.0.0.1:{srv.port}",
             "--workload=mixed", "--mix=embed=4,generate=2,stream=2,cancel=2", "--verify",
             "--mode=closed", f"--concurrency={concurrency}", "--batch=4",
             f"--max_new_tokens={max_new_tokens}", "--deadline_ms=30000",
             f"--warmup_s={warmup}", f"--duration_s={duration - warmup}", "--json"],
            capture_output=True, text=True, timeout=duration + 300)
        stop.set()
        sampler.join()
        if bench.returncode not in (0, 1) or not bench.stdout.strip():
            raise RuntimeError(f"maskserve-bench failed ({bench.returncode}): {bench.stderr}")
        result = json.loads(bench.stdout.strip().splitlines()[-1])
        # Idle again: abandoned streams' KV blocks freed, nothing in flight.
        deadline = time.time() + 30
        while True:
            text = srv.get("/metrics")
            kv = metric(text, "maskserve_kv_cache_blocks_used", {"model": "demo"})
            inflight = metric(text, "maskserve_inflight_requests")
            if (kv or 0) == 0 and (inflight or 0) == 0 or time.time() > deadline:
                break
            time.sleep(0.2)
        rss_after = rss_mib(srv.proc.pid)
    finally:
        stop.set()
        exited, log = srv.stop()
        shutil.rmtree(data_dir, ignore_errors=True)

    steady = [(t, v) for t, v in samples if t >= warmup]
    start_rss = steady[0][1] if steady else float("nan")
    end_rss = steady[-1][1] if steady else float("nan")
    slope = slope_per_min(steady)
    errors = result.get("errors", {})
    unexpected = {k: v for k, v in errors.items() if k != "RESOURCE_EXHAUSTED"}
    report = {
        "duration_s": duration, "warmup_s": warmup, "concurrency": concurrency,
        "requests": result["requests"], "ok": result["ok"], "by_kind": result.get("by_kind"),
        "cancelled_by_client": result.get("cancelled"), "errors": errors,
        "first_error": result.get("first_error"),
        "wrong": result.get("wrong"), "wrong_examples": result.get("wrong_examples"),
        "requests_per_s": result["requests_per_s"], "latency_ms": result["latency_ms"],
        "rss_mib_start": round(start_rss, 1), "rss_mib_end": round(end_rss, 1),
        "rss_mib_peak": round(max(v for _, v in samples), 1) if samples else None,
        "rss_mib_after_idle": round(rss_after, 1),
        "rss_slope_mib_per_min": round(slope, 3), "rss_samples": len(steady),
        "kv_blocks_used_after": kv, "inflight_after": inflight,
    }
    problems = []
    if unexpected:
        problems.append(f"errors other than RESOURCE_EXHAUSTED: {unexpected}")
    if result.get("wrong"):
        problems.append(f"{result['wrong']} wrong answers: {result.get('wrong_examples')}")
    if slope > max_slope:
        problems.append(f"RSS slope {slope:.2f} MiB/min > {max_slope}")
    if end_rss - start_rss > max_growth:
        problems.append(f"RSS grew {end_rss - start_rss:.1f} MiB > {max_growth}")
    if kv:
        problems.append(f"{kv} KV blocks still used after the load stopped")
    if inflight:
        problems.append(f"{inflight} calls still in flight after the load stopped")
    if "AddressSanitizer" in log or "runtime error" in log:
        problems.append("sanitizer report in the server log")
    if exited is not None:
        problems.append(f"maskserve exited during the run ({exited}): {log[-2000:]}")
    return finish_report(report, problems, out)


def finish_report(report, problems, out):
    """Records the pass criteria that failed, prints the report as one JSON line."""
    report["problems"] = problems
    report["pass"] = not problems
    print(json.dumps(report), file=out)
    return report


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--build", default=os.path.join(SOURCE, "build", "release"))
    ap.add_argument("--duration", type=float, default=180)
    ap.add_argument("--warmup", type=float, default=30)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--max_new_tokens", type=int, default=24)
    ap.add_argument("--max_slope_mib_per_min", type=float, default=1.0)
    ap.add_argument("--max_growth_mib", type=float, default=8.0)
    ap.add_argument("--json", help="also append the report to this file")
    a = ap.parse_args()
    report = run(a.build, a.duration, a.warmup, a.concurrency, a.max_new_tokens,
                 a.max_slope_mib_per_min, a.max_growth_mib)
    if a.json:
        with open(a.json, "a") as f:
            f.write(json.dumps(report) + "\n")
    sys.exit(0 if report["pass"] else 1)


if __name__ == "__main__":
    main()
