"""Faults through the real server, on the demo model (so it runs everywhere):
kill -9 in the middle of profile deletions (and the re-imports between
them) leaves every whitening profile whole or absent, never torn; models
whose directory is corrupt or missing at start-up are FAILED with their error
while the others serve; a client that disconnects mid-stream gets its KV
blocks freed. (kill -9 during FitWhitening: test_embedding.py.)"""

import os
import random
import shutil
import signal
import tempfile
import threading
import time
import unittest

import harness


def metric(text, name, labels):
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    for line in text.splitlines():
        if line.startswith(name + "{" + want + "}"):
            return float(line.rsplit(" ", 1)[1])
    return None


class FaultsTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        harness.generate_stubs()

    def setUp(self):
        self.data_dir = tempfile.mkdtemp(prefix="maskserve-faults-")

    def tearDown(self):
        shutil.rmtree(self.data_dir, ignore_errors=True)

    def server(self, *args):
        return harness.ServerProcess(args=list(args), data_dir=self.data_dir)

    def test_kill_9_during_deletes_keeps_profiles_whole(self):
        import grpc
        from maskserve.v1 import embedding_pb2 as e, embedding_pb2_grpc as eg
        names = [f"p{i}" for i in range(8)]
        texts = [f"sentence number {i} about {w}" for i, w in
                 enumerate("cats dogs rivers cities music books gardens trains".split() * 6)]
        with self.server() as srv:
            srv.wait_serving("maskserve.v1.Embedding")
            with srv.channel() as ch:
                emb = eg.EmbeddingStub(ch)
                emb.FitWhitening(iter([e.FitWhiteningRequest(model="demo", profile="base", k=8,
                                                             texts=texts)]), timeout=120)
                base = emb.GetWhitening(e.GetWhiteningRequest(
                    model="demo", profile="base", include_parameters=True), timeout=30)
                for n in names:
                    p = e.WhiteningProfile()
                    p.CopyFrom(base)
                    p.name = n
                    emb.ImportWhitening(e.ImportWhiteningRequest(profile=p), timeout=30)
            srv.terminate()
            self.assertEqual(srv.wait_exit(), 0)

        def same(p):
            return (p.k, p.dim, p.num_samples, list(p.mean), list(p.eigenvalues),
                    list(p.eigenvectors)) == (base.k, base.dim, base.num_samples, list(base.mean),
                                              list(base.eigenvalues), list(base.eigenvectors))

        rng = random.Random(7)
        deletes_seen = 0
        for attempt in range(4):
            with self.server() as srv:
                srv.wait_serving("maskserve.v1.Embedding")
                stop = threading.Event()
                done = []

                def churn():
                    # Delete and re-import every profile, over and over.
                    try:
                        with srv.channel() as ch:
                            emb = eg.EmbeddingStub(ch)
                            while not stop.is_set():
                                for n in names:
                                    try:
                                        emb.DeleteWhitening(e.DeleteWhiteningRequest(
                                            model="demo", profile=n), timeout=10)
                                        done.append(n)
                                    except grpc.RpcError as err:
                                        if err.code() != grpc.StatusCode.NOT_FOUND:
                                            return
                                    p = e.WhiteningProfile()
                                    p.CopyFrom(base)
                                    p.name = n
                                    emb.ImportWhitening(e.ImportWhiteningRequest(profile=p),
                                                        timeout=10)
                    except grpc.RpcError:
                        pass  # the server was killed
                t = threading.Thread(target=churn)
                t.start()
                time.sleep(0.05 + rng.random() * 0.4)
                srv.terminate(signal.SIGKILL)
                srv.wait_exit()
                stop.set()
                t.join(30)
                deletes_seen += len(done)

            with self.server() as srv:
                srv.wait_serving("maskserve.v1.Embedding")
                log = "\n".join(srv.log_lines)
                # Torn or corrupt files would be "skipping <path>: ..." warnings;
                # an interrupted write may only leave a temporary file, removed.
                for line in srv.log_lines:
                    if "whitening_profile_skipped" in line:
                        self.assertIn("leftover temporary file", line, log)
                with srv.channel() as ch:
                    emb = eg.EmbeddingStub(ch)
                    present = 0
                    for n in names:
                        try:
                            p = emb.GetWhitening(e.GetWhiteningRequest(
                                model="demo", profile=n, include_parameters=True), timeout=30)
                        except grpc.RpcError as err:
                            self.assertEqual(err.code(), grpc.StatusCode.NOT_FOUND, err.details())
                            p = e.WhiteningProfile()
                            p.CopyFrom(base)
                            p.name = n
                            emb.ImportWhitening(e.ImportWhiteningRequest(profile=p), timeout=30)
                            continue
                        present += 1
                        self.assertTrue(same(p), f"attempt {attempt}: profile {n} changed")
                srv.terminate()
                srv.wait_exit()
            leftovers = [f for f in os.listdir(os.path.join(self.data_dir, "whitening", "demo"))
                         if ".tmp." in f]
            self.assertEqual(leftovers, [])
        self.assertGreater(deletes_seen, 0, "no delete ran before the kills")

    def test_corrupt_or_missing_model_fails_alone(self):
        from maskserve.v1 import embedding_pb2 as e, embedding_pb2_grpc as eg
        from maskserve.v1 import models_pb2, models_pb2_grpc
        # Generate the demo checkpoint, then break copies of it.
        with self.server() as srv:
            srv.wait_serving("")
            srv.terminate()
            self.assertEqual(srv.wait_exit(), 0)
        demo = os.path.join(self.data_dir, "demo-model")
        broken = {}

        def copy(name):
            d = os.path.join(self.data_dir, name)
            shutil.copytree(demo, d)
            broken[name] = d
            return d
        with open(os.path.join(copy("badconfig"), "config.json"), "w") as f:
            f.write('{"model_type": "bert", "hidden_size": ')
        st = os.path.join(copy("truncated"), "model.safetensors")
        with open(st, "r+b") as f:
            f.truncate(os.path.getsize(st) // 2)
        st = os.path.join(copy("badheader"), "model.safetensors")
        with open(st, "r+b") as f:
            f.write(b"\xff" * 16)
        os.remove(os.path.join(copy("novocab"), "vocab.txt"))
        broken["missing"] = os.path.join(self.data_dir, "does-not-exist")
        args = [f"--model=good={demo}"] + [f"--model={n}={p}" for n, p in broken.items()]
        with self.server(*args) as srv:
            srv.wait_serving("maskserve.v1.Embedding")
            with srv.channel() as ch:
                stub = models_pb2_grpc.ModelsStub(ch)
                for name, path in broken.items():
                    m = stub.GetModel(models_pb2.GetModelRequest(name=name), timeout=10)
                    self.assertEqual(m.state, models_pb2.MODEL_STATE_FAILED, name)
                    self.assertTrue(m.error, name)
                    self.assertIn(path, m.error, f"{name}: the error names the path: {m.error}")
                good = stub.GetModel(models_pb2.GetModelRequest(name="good"), timeout=10)
                self.assertEqual(good.state, models_pb2.MODEL_STATE_READY)
                r = eg.EmbeddingStub(ch).Embed(e.EmbedRequest(model="good", texts=["fine"]),
                                               timeout=30)
                self.assertEqual(len(r.embeddings), 1)
                import grpc
                with self.assertRaises(grpc.RpcError) as cm:
                    eg.EmbeddingStub(ch).Embed(e.EmbedRequest(model="truncated", texts=["x"]),
                                               timeout=30)
                self.assertEqual(cm.exception.code(), grpc.StatusCode.FAILED_PRECONDITION)
            self.assertEqual(srv.http_get("/readyz")[0], 200)
            for name in broken:
                srv.wait_for_log(f"event=model_failed model={name}")

    def test_disconnect_mid_stream_frees_kv_blocks(self):
        from maskserve.v1 import generation_pb2 as g, generation_pb2_grpc as gg
        with self.server() as srv:
            srv.wait_serving("maskserve.v1.Generation")
            with srv.channel() as ch:
                stub = gg.GenerationStub(ch)
                baseline = None
                # Two streams at once, both abandoned mid-way.
                calls = [stub.GenerateStream(g.GenerateRequest(
                    model="demo", prompt="hello there", max_new_tokens=400, ignore_eos=True,
                    strategy=g.STRATEGY_SAMPLE, temperature=1.0, top_k=20, seed=i), timeout=60)
                    for i in range(2)]
                for c in calls:
                    next(c)
                _, text = srv.http_get("/metrics")
                used = metric(text, "maskserve_kv_cache_blocks_used", {"model": "demo"})
                self.assertIsNotNone(used)
                self.assertGreater(used, 0)
                for c in calls:
                    c.cancel()
                deadline = time.time() + 30
                while time.time() < deadline:
                    _, text = srv.http_get("/metrics")
                    baseline = metric(text, "maskserve_kv_cache_blocks_used", {"model": "demo"})
                    if baseline == 0:
                        break
                    time.sleep(0.05)
                self.assertEqual(baseline, 0, "KV blocks not freed after the clients went away")
                self.assertEqual(metric(text, "maskserve_generation_sequences",
                                        {"model": "demo", "state": "running"}), 0)


if __name__ == "__main__":
    harness.run_tests()
