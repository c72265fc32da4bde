"""Shared by test_python_client.py and test_node_client.py: starts maskserve
with the demo model (plus the shared stories260K checkpoint as a generator
when ../shared has it), runs an example client with --json and checks its
summary against what the server reports."""

import json
import os
import subprocess
import unittest

import harness

STORIES = os.path.join(harness.SHARED_DIR, "models", "stories260K")


def server():
    """A ServerProcess serving demo (+ stories260K when present)."""
    args = []
    data_dir = None
    if os.path.isdir(STORIES):
        import tempfile
        data_dir = tempfile.mkdtemp(prefix="maskserve-clients-")
        args = [f"--model=demo={data_dir}/demo-model", f"--model=stories={STORIES}"]
    srv = harness.ServerProcess(args=args, data_dir=data_dir)
    srv._own_data_dir = True  # removed on exit either way
    return srv


def run_example(test, cmd, srv, timeout=120, cwd=None):
    """Runs an example client against srv; returns its parsed JSON summary."""
    from maskserve.v1 import models_pb2, models_pb2_grpc
    with srv.channel() as ch:
        listed = models_pb2_grpc.ModelsStub(ch).ListModels(models_pb2.ListModelsRequest(),
                                                           timeout=30).models
    extra = []
    if any(m.name == "stories" and m.state == models_pb2.MODEL_STATE_READY
           and models_pb2.TASK_GENERATE in m.tasks for m in listed):
        # Generate with the real causal LM rather than the demo BERT's UniLM mode.
        extra = ["--generate-model", "stories"]
    r = subprocess.run(cmd + ["--target", srv.target, "--json", "--timeout", "60"] + extra,
                       capture_output=True, text=True, timeout=timeout, cwd=cwd)
    test.assertEqual(r.returncode, 0, f"{cmd} failed:\nstdout:\n{r.stdout}\nstderr:\n{r.stderr}")
    lines = [l for l in r.stdout.strip().split("\n") if l.strip()]
    test.assertTrue(lines, f"no output; stderr:\n{r.stderr}")
    print(r.stderr)  # the human-readable lines, for the test log
    return json.loads(lines[-1])


def check_summary(test, summary, srv):
    """The example's view must match the server's."""
    import grpc
    from maskserve.v1 import models_pb2, models_pb2_grpc
    with srv.channel() as ch:
        listed = models_pb2_grpc.ModelsStub(ch).ListModels(models_pb2.ListModelsRequest(),
                                                           timeout=30).models
    by_name = {m.name: m for m in listed}
    test.assertEqual({m["name"] for m in summary["models"]}, set(by_name))
    demo = by_name["demo"]

    e = summary["embed"]
    test.assertEqual(e["model"], "demo")
    test.assertEqual(e["count"], 3)
    test.assertEqual(e["dimensions"], demo.hidden_size)
    for n in e["norms"]:
        test.assertAlmostEqual(n, 1.0, places=3)  # normalize=true
    for c in e["cosines"]:
        test.assertTrue(-1.0001 <= c <= 1.0001)

    w = summary["whiten"]
    test.assertEqual(w["num_samples"], 8)
    test.assertEqual(w["dim"], demo.hidden_size)
    test.assertEqual(w["k"], 4)
    test.assertEqual(w["dimensions"], 4)
    test.assertTrue(w["listed"])

    g = summary["generate"]
    generators = [m for m in listed if m.state == models_pb2.MODEL_STATE_READY
                  and models_pb2.TASK_GENERATE in m.tasks]
    if "skipped" in g:
        if generators:
            # A generator is loaded: only an unimplemented Generation
            # service may excuse skipping.
            test.assertEqual(g["code"], "UNIMPLEMENTED", g)
        else:
            # Generate on the embedding model must come back as a status.
            test.assertIsNotNone(g["code"], g)
        print(f"generation not exercised: {g}")
        return False
    test.assertIn(g["model"], [m.name for m in generators])
    test.assertGreater(g["completion_tokens"], 0)
    test.assertTrue(g["text"])
    # Greedy decoding is deterministic: the streamed deltas add up to the
    # unary result.
    test.assertEqual(g["stream_text"], g["text"])
    test.assertIsNotNone(g["stream_finish"])
    return True
