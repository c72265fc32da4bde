#!/usr/bin/python3
"""Overload: at 4x capacity the server sheds load quickly, and what it accepts
stays within its deadline.

Starts maskserve on the demo model (default flags: --shed_on_deadline on),
then, with `maskserve-bench --workload=embed --batch=16` (--batch):
  1. capacity: a closed loop at --concurrency until throughput settles
     (requests/s C);
  2. overload: an open loop (Poisson arrivals) at --factor x C requests/s,
     every request with a --deadline_ms deadline, latency measured from each
     request's scheduled send time (no coordinated omission).
With --compare it repeats step 2 against a server started with
--shed_on_deadline=false (admission by queue size only), for contrast.

Pass criteria (exit 0, else 1), for the default server:
  - p99 latency of the accepted requests <= the deadline;
  - RESOURCE_EXHAUSTED answers come back quickly: p99 <= --max_shed_ms
    (default a quarter of the deadline; the client shares the CPUs);
  - load was actually shed (some RESOURCE_EXHAUSTED), and at most 1% of the
    requests end any other way than OK or RESOURCE_EXHAUSTED (e.g.
    DEADLINE_EXCEEDED after queueing).

  /usr/bin/python3 bench/overload.py [--build build/release] [--factor 4]
      [--duration 30] [--deadline_ms 500] [--batch 16] [--compare] [--json out.json]
The full run is a benchmark (numbers in bench/README.md); the tests run a
short smoke of it (tests/integration/test_soak_overload_smoke.py).
"""
import argparse
import json
import os
import shutil
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE = os.path.dirname(HERE)
sys.path.insert(0, HERE)
from soak import Server, finish_report  # noqa: E402

# Sentences per Embed request (--batch). Big enough that the offered rate
# (4x capacity) is one the client, on the same cores, can send without lagging.
BATCH = 16


def bench(build, port, batch, *args, timeout):
    import subprocess
    r = subprocess.run([os.path.join(build, "client", "maskserve-bench"),
                        f"--target=127.0.0.1:{port}", "--workload=embed", f"--batch={batch}",
                        "--json", *args], capture_output=True, text=True, timeout=timeout)
    if not r.stdout.strip():
        raise RuntimeError(f"maskserve-bench failed ({r.returncode}): {r.stderr}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def overload_run(build, server_args, rate, duration, deadline_ms, workers, batch):
    data_dir = tempfile.mkdtemp(prefix="maskserve-overload-")
    srv = Server(build, server_args, data_dir)
    try:
        srv.wait_ready()
        # A short warm-up so the batcher has measured its speed.
        warm = bench(build, srv.port, batch, "--mode=closed", "--concurrency=8", "--warmup_s=0",
                     "--duration_s=2", timeout=120)
        r = bench(build, srv.port, batch, "--mode=open", f"--rate={rate}",
                  f"--concurrency={workers}", f"--deadline_ms={deadline_ms}",
                  "--warmup_s=1", f"--duration_s={duration}", timeout=duration + 300)
        r["warmup_errors"] = {code: f"{n} x {warm.get('first_error', {}).get(code, '')}"
                              for code, n in warm.get("errors", {}).items()}
    finally:
        exited, log = srv.stop()
        shutil.rmtree(data_dir, ignore_errors=True)
    # What the server said is kept only when something went wrong: it is the
    # one place a crash or a refused connection shows.
    r["server_exited"] = exited
    unexpected = {k: v for k, v in r.get("errors", {}).items() if k != "RESOURCE_EXHAUSTED"}
    if exited is not None or unexpected or r["warmup_errors"]:
        # Without the per-call lines of calls that went as intended.
        lines = [line for line in log.splitlines()
                 if "code=OK " not in line and "code=RESOURCE_EXHAUSTED " not in line]
        r["server_log_tail"] = "\n".join(lines[-40:])
    return r


def run(build, factor, duration, capacity_s, deadline_ms, concurrency, workers, max_shed_ms,
        compare=False, out=sys.stdout, batch=BATCH):
    data_dir = tempfile.mkdtemp(prefix="maskserve-overload-")
    srv = Server(build, [], data_dir)
    try:
        srv.wait_ready()
        cap = bench(build, srv.port, batch, "--mode=closed", f"--concurrency={concurrency}",
                    "--warmup_s=2", f"--duration_s={capacity_s}", timeout=capacity_s + 300)
    finally:
        srv.stop()
        shutil.rmtree(data_dir, ignore_errors=True)
    capacity = cap["requests_per_s"]
    rate = factor * capacity
    runs = {"shed_on_deadline": overload_run(build, [], rate, duration, deadline_ms, workers,
                                             batch)}
    if compare:
        runs["queue_size_only"] = overload_run(build, ["--shed_on_deadline=false"], rate,
                                               duration, deadline_ms, workers, batch)
    report = {"capacity_requests_per_s": round(capacity, 1),
              "capacity_latency_ms": cap["latency_ms"], "factor": factor,
              "offered_requests_per_s": round(rate, 1), "deadline_ms": deadline_ms,
              "sentences_per_request": batch}
    for name, r in runs.items():
        total = r["requests"]
        errors = r.get("errors", {})
        shed = errors.get("RESOURCE_EXHAUSTED", 0)
        other = {k: v for k, v in errors.items() if k != "RESOURCE_EXHAUSTED"}
        report[name] = {
            "requests": total, "ok": r["ok"], "accepted_per_s": round(r["requests_per_s"], 1),
            "shed": shed, "shed_share": round(shed / total, 3) if total else None,
            "other_errors": other, "first_error": r.get("first_error", {}),
            "accepted_latency_ms": r["latency_ms"],
            "shed_latency_ms": r.get("rejected_latency_ms"),
            "max_send_lag_ms": r.get("max_send_lag_ms"),
            "warmup_errors": r["warmup_errors"], "server_exited": r["server_exited"],
        }
        if "server_log_tail" in r:
            report[name]["server_log_tail"] = r["server_log_tail"]
    main_run = report["shed_on_deadline"]
    problems = []
    if main_run["accepted_latency_ms"]["p99"] > deadline_ms:
        problems.append(f"accepted p99 {main_run['accepted_latency_ms']['p99']:.1f} ms > "
                        f"deadline {deadline_ms} ms")
    if not main_run["shed"]:
        problems.append("nothing was shed at overload")
    elif main_run["shed_latency_ms"]["p99"] > max_shed_ms:
        problems.append(f"RESOURCE_EXHAUSTED p99 {main_run['shed_latency_ms']['p99']:.1f} ms > "
                        f"{max_shed_ms} ms")
    if (main_run["max_send_lag_ms"] or 0) > deadline_ms / 4:
        problems.append(f"the client lagged its schedule by {main_run['max_send_lag_ms']:.0f} ms: "
                        "more --workers (rate x deadline), or a less loaded machine")
    if main_run["server_exited"] is not None:
        problems.append(f"maskserve exited during the run ({main_run['server_exited']})")
    if main_run["warmup_errors"]:
        problems.append(f"the warm-up had errors: {main_run['warmup_errors']}")
    other = sum(main_run["other_errors"].values())
    if other > 0.01 * max(1, main_run["requests"]):
        problems.append(f"{other} requests ended otherwise: {main_run['other_errors']}")
    return finish_report(report, problems, out)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--build", default=os.path.join(SOURCE, "build", "release"))
    ap.add_argument("--factor", type=float, default=4.0)
    ap.add_argument("--duration", type=float, default=30)
    ap.add_argument("--capacity_s", type=float, default=10)
    ap.add_argument("--deadline_ms", type=int, default=500)
    ap.add_argument("--batch", type=int, default=BATCH, help="sentences per Embed request")
    ap.add_argument("--concurrency", type=int, default=16, help="closed loop of step 1")
    ap.add_argument("--workers", type=int, default=512,
                    help="open-loop client threads (>= accepted rate x deadline)")
    ap.add_argument("--max_shed_ms", type=float, default=None,
                    help="p99 bound of RESOURCE_EXHAUSTED answers (default deadline / 4)")
    ap.add_argument("--compare", action="store_true")
    ap.add_argument("--json", help="also append the report to this file")
    a = ap.parse_args()
    max_shed = a.max_shed_ms if a.max_shed_ms is not None else a.deadline_ms / 4
    report = run(a.build, a.factor, a.duration, a.capacity_s, a.deadline_ms, a.concurrency,
                 a.workers, max_shed, a.compare, batch=a.batch)
    if a.json:
        with open(a.json, "a") as f:
            f.write(json.dumps(report) + "\n")
    sys.exit(0 if report["pass"] else 1)


if __name__ == "__main__":
    main()
