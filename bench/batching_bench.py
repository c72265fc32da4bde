#!/usr/bin/python3
"""Dynamic batching, measured end to end over gRPC.

Serves a MiniLM-L6-shaped checkpoint (random weights written by
`encoder_bench --write_only`, the real all-MiniLM-L6-v2 tokenizer files from
../shared) twice per pass: once with the default dynamic batching
(--max_batch_size=32) and once with --max_batch_size=1, and drives each with
`maskserve-bench --mode=closed --concurrency=32 --batch=1` (32 concurrent
clients, one sentence per request; STS-B test sentences when ../shared is
there). The two runs of a pass are back to back, so their ratio comes from the
same minute of this machine's drifting speed; passes alternate the order.

Checks the issue's two targets per pass:
  throughput(batched) >= 3 x throughput(max_batch_size=1)
  p99(batched) <= max_queue_delay + 3 x median batch compute time
where the batch compute time is the server's own `timing.inference_us` of each
response (the compute of the batch the request ran in).

  /usr/bin/python3 bench/batching_bench.py [--build build/release] [--passes 2]
      [--duration 15] [--delay_us 2000] [--server_args '--workers=2'] [--json out.jsonl]
Never run by the tests.
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

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE = os.path.dirname(HERE)
sys.path.insert(0, HERE)
from soak import free_port  # noqa: E402


def sentences_file(shared, work):
    path = os.path.join(work, "sentences.txt")
    test = os.path.join(shared, "data", "stsbenchmark", "sts-test.csv")
    if not os.path.exists(test):
        return ""  # maskserve-bench's built-in sentences
    seen = []
    with open(test, encoding="utf-8") as f:  # tab-separated, no quoting (DATA.md)
        for line in f:
            cols = line.rstrip("\n").split("\t")
            if len(cols) >= 7:
                seen.extend(cols[5:7])
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(s for s in seen if s.strip()) + "\n")
    return path


def prepare_model(build, shared, work):
    subprocess.run([os.path.join(build, "bench", "encoder_bench"), "--models", "minilm-l6",
                    "--gen_dir", work, "--write_only"], check=True, stdout=subprocess.DEVNULL)
    model = os.path.join(work, "minilm-l6")
    tok = os.path.join(shared, "models", "tokenizer-only", "all-MiniLM-L6-v2")
    for name in ("vocab.txt", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(os.path.join(tok, name), model)
    return model


def run_one(build, model, max_batch_size, args, sentences):
    port, mport = free_port(), free_port()
    data = tempfile.mkdtemp(prefix="maskserve-batching-data-")
    server = subprocess.Popen(
        [os.path.join(build, "server", "maskserve"), "--bind=127.0.0.1", f"--port={port}",
         f"--metrics_port={mport}", f"--data_dir={data}", f"--model=minilm={model}",
         f"--max_batch_size={max_batch_size}", f"--max_queue_delay_us={args.delay_us}",
         "--log_level=warn", *args.server_args.split()],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        cli = os.path.join(build, "client", "maskserve-cli")
        for _ in range(600):
            if subprocess.run([cli, f"--target=127.0.0.1:{port}", "--timeout_s=2", "health"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode == 0:
                break
            time.sleep(0.2)
        else:
            raise RuntimeError("server did not become healthy")
        cmd = [os.path.join(build, "client", "maskserve-bench"), f"--target=127.0.0.1:{port}",
               "--mode=closed", "--concurrency=32", "--batch=1", "--model=minilm",
               f"--duration_s={args.duration}", "--warmup_s=3", "--json"]
        if sentences:
            cmd.append(f"--sentences_file={sentences}")
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        return json.loads(out.strip().splitlines()[-1])
    finally:
        server.terminate()
        server.wait(timeout=60)
        shutil.rmtree(data, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", default=os.path.join(SOURCE, "build", "release"))
    ap.add_argument("--shared", default=os.path.join(SOURCE, "..", "shared"))
    ap.add_argument("--work", default="/tmp/maskserve-batching-bench")
    ap.add_argument("--passes", type=int, default=2)
    ap.add_argument("--duration", type=float, default=15)
    ap.add_argument("--delay_us", type=int, default=2000)
    ap.add_argument("--json", default="")
    ap.add_argument("--server_args", default="",
                    help="more maskserve flags for both runs, e.g. '--workers=2 --intra_op_threads=1'")
    args = ap.parse_args()
    os.makedirs(args.work, exist_ok=True)
    model = prepare_model(args.build, args.shared, args.work)
    sentences = sentences_file(args.shared, args.work)
    rows = []
    print("| pass | max_batch_size | req/s | p50 ms | p99 ms | server queue p50 ms | "
          "batch compute p50 ms | errors |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for p in range(args.passes):
        order = (32, 1) if p % 2 == 0 else (1, 32)
        res = {}
        for mbs in order:
            r = run_one(args.build, model, mbs, args, sentences)
            r["pass"], r["max_batch_size"] = p + 1, mbs
            res[mbs] = r
            rows.append(r)
            print(f"| {p + 1} | {mbs} | {r['requests_per_s']:.1f} | {r['latency_ms']['p50']:.1f} | "
                  f"{r['latency_ms']['p99']:.1f} | {r['server_queue_ms']['p50']:.2f} | "
                  f"{r['server_inference_ms']['p50']:.2f} | {sum(r['errors'].values())} |",
                  flush=True)
        b, s = res[32], res[1]
        ratio = b["requests_per_s"] / s["requests_per_s"]
        bound = args.delay_us / 1000 + 3 * b["server_inference_ms"]["p50"]
        summary = {"summary": True, "pass": p + 1, "throughput_ratio": ratio,
                   "p99_ms": b["latency_ms"]["p99"], "p99_bound_ms": bound,
                   "ratio_target_met": ratio >= 3.0, "p99_target_met": b["latency_ms"]["p99"] <= bound}
        rows.append(summary)
        print(f"pass {p + 1}: throughput {ratio:.2f}x (target >= 3x); batched p99 "
              f"{b['latency_ms']['p99']:.1f} ms vs bound {bound:.1f} ms "
              f"(= {args.delay_us / 1000:.1f} + 3 x {b['server_inference_ms']['p50']:.2f})", flush=True)
    ratios = [r["throughput_ratio"] for r in rows if r.get("summary")]
    print(f"median throughput ratio over {len(ratios)} passes: {statistics.median(ratios):.2f}x")
    if args.json:
        with open(args.json, "a") as f:
            for r in rows:
                f.write(json.dumps(r) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
