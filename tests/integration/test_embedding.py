"""Embed and BERT-whitening through the real server: golden bert-mini vectors
over gRPC (tolerance: max |diff| <= 1e-4, as the golden README states),
request errors, and whitening profiles that survive a restart and kill -9."""

import json
import math
import os
import shutil
import signal
import tempfile
import threading
import time
import unittest

import harness

GOLDEN = os.path.join(harness.SHARED_DIR, "golden")
BERT_MINI = os.path.join(GOLDEN, "models", "bert-mini")
TOL = 1e-4


def max_abs_diff(a, b):
    return max(abs(x - y) for x, y in zip(a, b))


@unittest.skipUnless(os.path.isdir(BERT_MINI),
                     f"{BERT_MINI} not found: golden Embed tests skipped")
class EmbeddingTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        harness.generate_stubs()
        with open(os.path.join(GOLDEN, "bert-mini", "encoder_outputs.json")) as f:
            cls.items = json.load(f)["items"]
        with open(os.path.join(GOLDEN, "bert-mini", "pair_outputs.json")) as f:
            cls.pairs = json.load(f)["items"]

    def setUp(self):
        # Each test gets its own store of whitening profiles.
        self.data_dir = tempfile.mkdtemp(prefix="maskserve-embed-")

    def tearDown(self):
        shutil.rmtree(self.data_dir, ignore_errors=True)

    def server(self, *extra):
        return harness.ServerProcess(args=[f"--model=bert={BERT_MINI}", *extra],
                                     data_dir=self.data_dir)

    def stubs(self, ch):
        from maskserve.v1 import embedding_pb2_grpc
        return embedding_pb2_grpc.EmbeddingStub(ch)

    def test_golden_vectors_over_grpc(self):
        from maskserve.v1 import common_pb2, embedding_pb2
        poolings = {"cls": common_pb2.POOLING_CLS, "mean": common_pb2.POOLING_MEAN,
                    "first_last_avg": common_pb2.POOLING_FIRST_LAST_AVG,
                    "max": common_pb2.POOLING_MAX, "last_token": common_pb2.POOLING_LAST_TOKEN}
        with self.server() as srv:
            srv.wait_serving("maskserve.v1.Embedding")
            with srv.channel() as ch:
                stub = self.stubs(ch)
                texts = [it["text"] for it in self.items]
                worst = 0.0
                for name, pooling in poolings.items():
                    for normalize in (False, True):
                        r = stub.Embed(embedding_pb2.EmbedRequest(
                            model="bert", texts=texts, pooling=pooling, normalize=normalize,
                            truncate=True), timeout=120)
                        self.assertEqual(len(r.embeddings), len(texts))
                        key = name + ("_normalized" if normalize else "")
                        for it, e in zip(self.items, r.embeddings):
                            self.assertEqual(e.token_count, it["num_tokens"], it["id"])
                            d = max_abs_diff(e.values, it["pooled"][key])
                            worst = max(worst, d)
                            self.assertLessEqual(d, TOL, f"{it['id']} {key}")
                print(f"worst |diff| over {len(texts)} sentences x 10 poolings: {worst:.2e}")
                # Pre-tokenised ids give the same vectors as the texts.
                r = stub.Embed(embedding_pb2.EmbedRequest(
                    model="bert", token_ids=[common_pb2.TokenIds(ids=it["input_ids"])
                                             for it in self.items[:5]],
                    pooling=common_pb2.POOLING_MEAN), timeout=60)
                for it, e in zip(self.items[:5], r.embeddings):
                    self.assertLessEqual(max_abs_diff(e.values, it["pooled"]["mean"]), TOL)
                # Sentence pairs.
                r = stub.Embed(embedding_pb2.EmbedRequest(
                    model="bert", texts=[p["text_a"] for p in self.pairs],
                    text_pairs=[p["text_b"] for p in self.pairs], truncate=True,
                    pooling=common_pb2.POOLING_CLS), timeout=120)
                for p, e in zip(self.pairs, r.embeddings):
                    self.assertLessEqual(max_abs_diff(e.values, p["pooled"]["cls"]), TOL, p["id"])
                self.assertGreater(r.timing.total_us, 0)
                self.assertGreater(r.timing.inference_us, 0)

    def test_bad_requests_name_the_field(self):
        import grpc
        from maskserve.v1 import common_pb2, embedding_pb2
        long_text = " ".join(["word"] * 700)
        cases = [
            (embedding_pb2.EmbedRequest(model="nope", texts=["x"]),
             grpc.StatusCode.NOT_FOUND, "nope"),
            (embedding_pb2.EmbedRequest(model="bert"),
             grpc.StatusCode.INVALID_ARGUMENT, "texts"),
            (embedding_pb2.EmbedRequest(model="bert", texts=["ok", long_text]),
             grpc.StatusCode.INVALID_ARGUMENT, "texts[1]"),
            (embedding_pb2.EmbedRequest(model="bert", texts=["x"], whitening_profile="missing"),
             grpc.StatusCode.NOT_FOUND, "missing"),
            (embedding_pb2.EmbedRequest(model="bert", texts=["x"], dimensions=100000),
             grpc.StatusCode.INVALID_ARGUMENT, "dimensions"),
            (embedding_pb2.EmbedRequest(model="bert", token_ids=[
                common_pb2.TokenIds(ids=[101, 999999, 102])]),
             grpc.StatusCode.INVALID_ARGUMENT, "token_ids[0].ids[1]"),
            (embedding_pb2.EmbedRequest(model="bert", texts=["a", "b"], text_pairs=["c"]),
             grpc.StatusCode.INVALID_ARGUMENT, "text_pairs"),
        ]
        with self.server("--max_inputs_per_request=4") as srv:
            srv.wait_serving("maskserve.v1.Embedding")
            with srv.channel() as ch:
                stub = self.stubs(ch)
                for req, code, needle in cases:
                    with self.assertRaises(grpc.RpcError) as cm:
                        stub.Embed(req, timeout=60)
                    self.assertEqual(cm.exception.code(), code, cm.exception.details())
                    self.assertIn(needle, cm.exception.details())
                with self.assertRaises(grpc.RpcError) as cm:
                    stub.Embed(embedding_pb2.EmbedRequest(model="bert", texts=["x"] * 5),
                               timeout=60)
                self.assertEqual(cm.exception.code(), grpc.StatusCode.INVALID_ARGUMENT)
                self.assertIn("limit is 4", cm.exception.details())
                # Invalid UTF-8 (only a raw client can send it): INVALID_ARGUMENT naming
                # the input and the byte, not an opaque parse failure.
                for method, request_cls in (("Embed", embedding_pb2.EmbedResponse),
                                            ("Tokenize", embedding_pb2.TokenizeResponse)):
                    raw = ch.unary_unary(f"/maskserve.v1.Embedding/{method}",
                                         request_serializer=lambda x: x,
                                         response_deserializer=request_cls.FromString)
                    bad = b"ab\xff\xfecd"
                    wire = (embedding_pb2.EmbedRequest(model="bert", texts=["fine"])
                            .SerializeToString() + b"\x12" + bytes([len(bad)]) + bad)
                    with self.assertRaises(grpc.RpcError) as cm:
                        raw(wire, timeout=30)
                    self.assertEqual(cm.exception.code(), grpc.StatusCode.INVALID_ARGUMENT)
                    self.assertEqual(cm.exception.details(),
                                     "texts[1] is not valid UTF-8 at byte 2")
                # Truncation on request turns the over-long input into 512 tokens.
                r = stub.Embed(embedding_pb2.EmbedRequest(model="bert", texts=[long_text],
                                                          truncate=True), timeout=60)
                self.assertEqual(r.embeddings[0].token_count, 512)
                self.assertTrue(r.embeddings[0].truncated)

    def fit(self, stub, profile, texts, k=0, batch=16, **kw):
        from maskserve.v1 import common_pb2, embedding_pb2

        def gen():
            first = True
            for i in range(0, len(texts), batch):
                msg = embedding_pb2.FitWhiteningRequest(texts=texts[i:i + batch])
                if first:
                    msg.model, msg.profile, msg.k = "bert", profile, k
                    msg.pooling = common_pb2.POOLING_FIRST_LAST_AVG
                    for key, v in kw.items():
                        setattr(msg, key, v)
                    first = False
                yield msg
        return stub.FitWhitening(gen(), timeout=300)

    def sentences(self, n):
        words = ("the a cat dog sat ran on under mat table quickly slowly red blue big small "
                 "house garden river city music book").split()
        out = []
        for i in range(n):
            out.append(" ".join(words[(i * 7 + j * 3) % len(words)] for j in range(4 + i % 9)))
        return out

    def test_whitening_persists_across_restart(self):
        from maskserve.v1 import embedding_pb2
        texts = self.sentences(300)
        probe = ["a small red cat", "the river under the city"]
        with self.server() as srv:
            srv.wait_serving("maskserve.v1.Embedding")
            with srv.channel() as ch:
                stub = self.stubs(ch)
                prof = self.fit(stub, "sts", texts, k=64)
                self.assertEqual((prof.k, prof.dim, prof.num_samples), (64, 256, 300))
                half = self.fit(stub, "sts-half", texts, k=32, beta=0.5, gamma=0.5)
                self.assertAlmostEqual(half.beta, 0.5)
                before = stub.Embed(embedding_pb2.EmbedRequest(
                    model="bert", texts=probe, whitening_profile="sts"), timeout=60)
                self.assertEqual(before.dimensions, 64)
                # Full whitening of the fitting set: mean ~ 0.
                fitted = stub.Embed(embedding_pb2.EmbedRequest(
                    model="bert", texts=texts[:200], whitening_profile="sts"), timeout=120)
                mean0 = sum(e.values[0] for e in fitted.embeddings) / 200
                self.assertLess(abs(mean0), 0.3)
                params = stub.GetWhitening(embedding_pb2.GetWhiteningRequest(
                    model="bert", profile="sts", include_parameters=True), timeout=30)
                self.assertEqual(len(params.eigenvectors), 256 * 256)
            srv.terminate()
            self.assertEqual(srv.wait_exit(), 0)

        with self.server() as srv:
            srv.wait_serving("maskserve.v1.Embedding")
            with srv.channel() as ch:
                stub = self.stubs(ch)
                names = {p.name for p in stub.ListWhitening(
                    embedding_pb2.ListWhiteningRequest(model="bert"), timeout=30).profiles}
                self.assertEqual(names, {"sts", "sts-half"})
                after = stub.Embed(embedding_pb2.EmbedRequest(
                    model="bert", texts=probe, whitening_profile="sts"), timeout=60)
                for a, b in zip(before.embeddings, after.embeddings):
                    self.assertEqual(list(a.values), list(b.values))
                # Export -> delete -> import gives the same vectors back.
                stub.DeleteWhitening(embedding_pb2.DeleteWhiteningRequest(
                    model="bert", profile="sts"), timeout=30)
                stub.ImportWhitening(embedding_pb2.ImportWhiteningRequest(profile=params),
                                     timeout=30)
                again = stub.Embed(embedding_pb2.EmbedRequest(
                    model="bert", texts=probe, whitening_profile="sts"), timeout=60)
                for a, b in zip(before.embeddings, again.embeddings):
                    self.assertLessEqual(max_abs_diff(a.values, b.values), 1e-5)

    def test_kill_9_during_fit_keeps_the_store_consistent(self):
        import grpc
        from maskserve.v1 import embedding_pb2
        texts = self.sentences(120)
        with self.server() as srv:
            srv.wait_serving("maskserve.v1.Embedding")
            with srv.channel() as ch:
                self.fit(self.stubs(ch), "keep", texts, k=16)
            srv.terminate()
            srv.wait_exit()
        for attempt, delay in enumerate((0.05, 0.3, 1.0)):
            with self.server() as srv:
                srv.wait_serving("maskserve.v1.Embedding")
                errors = []

                def refit():
                    try:
                        with srv.channel() as ch:
                            self.fit(self.stubs(ch), "keep", texts * 3, k=8, batch=4)
                    except grpc.RpcError as e:
                        errors.append(e)
                t = threading.Thread(target=refit)
                t.start()
                time.sleep(delay)
                srv.terminate(signal.SIGKILL)
                srv.wait_exit()
                t.join(60)
            with self.server() as srv:
                srv.wait_serving("maskserve.v1.Embedding")
                with srv.channel() as ch:
                    p = self.stubs(ch).GetWhitening(embedding_pb2.GetWhiteningRequest(
                        model="bert", profile="keep"), timeout=30)
                    # The old (k=16) or a complete new (k=8) profile, never a torn one.
                    self.assertIn(p.k, (8, 16))
                    self.assertIn(p.num_samples, (120, 360))
                    self.assertEqual(p.k == 8, p.num_samples == 360)
                    self.assertNotIn("whitening_profile_skipped", "\n".join(srv.log_lines))
                srv.terminate()
                srv.wait_exit()


if __name__ == "__main__":
    harness.run_tests()
