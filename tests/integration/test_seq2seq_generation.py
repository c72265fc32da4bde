"""Encoder-decoder generation through the real server, over gRPC: the golden
t5-mini (HF transformers 4.31) greedy and beam outputs, every case of the
real OpenNMT Arabic->English transliteration model's reference_outputs.json
(greedy ids, per-token log-probs, text; the target_prefix cases too),
`prompt` as the source, streaming equals unary, concurrent requests
(continuous batching with per-request encoder states), seeded sampling,
stop strings, and request errors naming the field. Skips with a message when
../shared is absent."""

import json
import os
import threading
import unittest

import harness

GOLDEN = os.path.join(harness.SHARED_DIR, "golden")
T5 = os.path.join(GOLDEN, "models", "t5-mini")
ONMT = os.path.join(harness.SHARED_DIR, "models", "opennmt-aren-transliteration")
HAVE_SHARED = os.path.isdir(T5) and os.path.isdir(ONMT)
SKIP_MSG = f"{T5} or {ONMT} not found: encoder-decoder generation tests skipped"
# The golden README's tolerances: beam scores / transition scores; the
# OpenNMT reference rounds its log-probs to 6 decimals.
SCORE_TOL = 1e-4


def load(path):
    with open(path) as f:
        return json.load(f)


@unittest.skipUnless(HAVE_SHARED, SKIP_MSG)
class Seq2SeqGenerationTest(unittest.TestCase):
    """One server with t5-mini and the OpenNMT model for the whole class."""

    @classmethod
    def setUpClass(cls):
        harness.generate_stubs()
        cls.srv = harness.ServerProcess(args=[f"--model=t5={T5}", f"--model=onmt={ONMT}"]).start()
        cls.srv.wait_serving("maskserve.v1.Generation")
        cls.ch = cls.srv.channel()
        from maskserve.v1 import generation_pb2_grpc
        cls.stub = generation_pb2_grpc.GenerationStub(cls.ch)
        cls.t5 = load(os.path.join(GOLDEN, "t5-mini", "outputs.json"))["inputs"]
        cls.onmt = load(os.path.join(ONMT, "reference_outputs.json"))["cases"]

    @classmethod
    def tearDownClass(cls):
        cls.ch.close()
        cls.srv.__exit__(None, None, None)

    def onmt_request(self, case, **kw):
        from maskserve.v1 import generation_pb2 as g
        return g.GenerateRequest(
            model="onmt", source="".join(case["source_tokens"]),
            target_prefix=" ".join(case["target_prefix"]), max_new_tokens=40,
            strategy=g.STRATEGY_GREEDY, logprobs=True, **kw)

    def check_onmt(self, case, seq):
        from maskserve.v1 import generation_pb2 as g
        start = len(case["decoder_input_start"])
        self.assertEqual(list(seq.ids), case["greedy_output_ids"][start:], case["expected_text"])
        self.assertEqual(seq.finish_reason, g.FINISH_REASON_STOP_TOKEN)
        for a, b in zip(seq.logprobs, case["generated_token_logprobs"], strict=True):
            self.assertLessEqual(abs(a - b), SCORE_TOL)
        # The text is the target segment after the prefix.
        prefix = " ".join(case["target_prefix"])
        want = case["expected_text"][len(prefix):] if prefix else case["expected_text"]
        self.assertEqual(seq.text, want)

    def test_model_info(self):
        from maskserve.v1 import models_pb2, models_pb2_grpc
        stub = models_pb2_grpc.ModelsStub(self.ch)
        for name, arch in (("t5", "t5"), ("onmt", "opennmt_transformer")):
            info = stub.GetModel(models_pb2.GetModelRequest(name=name), timeout=30)
            self.assertEqual(info.architecture, arch)
            self.assertIn(models_pb2.TASK_GENERATE, list(info.tasks))
            self.assertNotIn(models_pb2.TASK_EMBED, list(info.tasks))

    def test_t5_greedy_matches_golden(self):
        from maskserve.v1 import generation_pb2 as g
        for item in self.t5:
            for field in ("source", "prompt"):
                r = self.stub.Generate(g.GenerateRequest(
                    model="t5", max_new_tokens=24, strategy=g.STRATEGY_GREEDY, ignore_eos=True,
                    **{field: item["text"]}), timeout=120)
                self.assertEqual(list(r.sequences[0].ids), item["greedy_ids"], item["text"])
                # Source tokens (with </s>) + the decoder start token.
                self.assertEqual(r.usage.prompt_tokens, len(item["input_ids"]) + 1)
                self.assertEqual(r.usage.completion_tokens, 24)

    def test_t5_beam_matches_golden(self):
        from maskserve.v1 import generation_pb2 as g
        worst = 0.0
        for item in self.t5:
            want = item["beam"]
            r = self.stub.Generate(g.GenerateRequest(
                model="t5", source=item["text"], max_new_tokens=16, strategy=g.STRATEGY_BEAM,
                beam_width=4, num_return_sequences=2, length_penalty=1.0, early_stopping=False,
                logprobs=True), timeout=120)
            self.assertEqual([list(s.ids) for s in r.sequences], want["new_ids"], item["text"])
            for s, score, trans in zip(r.sequences, want["sequences_scores"],
                                       want["transition_scores"], strict=True):
                worst = max(worst, abs(s.score - score))
                self.assertLessEqual(abs(s.score - score), SCORE_TOL)
                for a, b in zip(s.logprobs, trans):
                    self.assertLessEqual(abs(a - b), SCORE_TOL)
        print(f"t5 beam: worst |score diff| {worst:.2e}")

    def test_opennmt_reference_outputs(self):
        for case in self.onmt:
            r = self.stub.Generate(self.onmt_request(case), timeout=60)
            self.check_onmt(case, r.sequences[0])
            self.assertEqual(r.usage.prompt_tokens,
                             len(case["source_ids"]) + len(case["decoder_input_start"]))

    def test_stream_equals_unary(self):
        from maskserve.v1 import generation_pb2 as g
        reqs = [self.onmt_request(c) for c in self.onmt] + [
            g.GenerateRequest(model="t5", source=self.t5[0]["text"], max_new_tokens=24,
                              strategy=g.STRATEGY_GREEDY, ignore_eos=True),
            g.GenerateRequest(model="t5", source=self.t5[1]["text"], max_new_tokens=20,
                              strategy=g.STRATEGY_SAMPLE, temperature=0.8, top_k=20, seed=3,
                              num_return_sequences=2, ignore_eos=True),
        ]
        for req in reqs:
            unary = self.stub.Generate(req, timeout=120)
            texts, ids, finish = {}, {}, {}
            msgs = list(self.stub.GenerateStream(req, timeout=120))
            for m in msgs:
                texts[m.index] = texts.get(m.index, "") + m.text
                ids.setdefault(m.index, []).extend(m.ids)
                if m.finish_reason:
                    finish[m.index] = m.finish_reason
            for i, s in enumerate(unary.sequences):
                self.assertEqual(texts.get(i, ""), s.text, req)
                self.assertEqual(ids.get(i, []), list(s.ids), req)
                self.assertEqual(finish.get(i), s.finish_reason, req)
            self.assertTrue(msgs[-1].HasField("usage"))
            self.assertEqual(msgs[-1].usage.prompt_tokens, unary.usage.prompt_tokens)

    def test_concurrent_requests(self):
        """16 concurrent requests (mixed models and prefixes) join the same steps
        and each gets its own reference output."""
        results, errors = {}, []

        def run(i):
            case = self.onmt[i % len(self.onmt)]
            try:
                results[i] = (case, self.stub.Generate(self.onmt_request(case), timeout=120))
            except Exception as e:  # noqa: BLE001 - reported below
                errors.append(e)

        threads = [threading.Thread(target=run, args=(i,)) for i in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.assertEqual(errors, [])
        for case, r in results.values():
            self.check_onmt(case, r.sequences[0])

    def test_sampling_is_seeded(self):
        from maskserve.v1 import generation_pb2 as g
        req = g.GenerateRequest(model="onmt", source="".join(self.onmt[1]["source_tokens"]),
                                max_new_tokens=20, strategy=g.STRATEGY_SAMPLE, temperature=1.5,
                                seed=11, num_return_sequences=4)
        a = self.stub.Generate(req, timeout=60)
        b = self.stub.Generate(req, timeout=60)
        self.assertEqual([list(s.ids) for s in a.sequences], [list(s.ids) for s in b.sequences])
        self.assertEqual(len(a.sequences), 4)

    def test_stop_string(self):
        from maskserve.v1 import generation_pb2 as g
        case = self.onmt[0]  # a t z m o n
        r = self.stub.Generate(g.GenerateRequest(
            model="onmt", source="".join(case["source_tokens"]), max_new_tokens=40,
            strategy=g.STRATEGY_GREEDY, stop=["m o"]), timeout=60)
        self.assertEqual(r.sequences[0].text, "a t z ")
        self.assertEqual(r.sequences[0].finish_reason, g.FINISH_REASON_STOP_STRING)

    def test_bad_requests_name_the_field(self):
        import grpc
        from maskserve.v1 import common_pb2, generation_pb2 as g
        R = g.GenerateRequest
        INV = grpc.StatusCode.INVALID_ARGUMENT
        cases = [
            (R(model="t5", prompt_ids=[37], max_new_tokens=4), INV, "prompt_ids"),
            (R(model="t5", prompt="a", source="b", max_new_tokens=4), INV, "source or prompt"),
            (R(model="t5", max_new_tokens=4), INV, "source (or prompt)"),
            (R(model="t5", source="x", max_new_tokens=4,
               mask=common_pb2.MaskSpec(kind=common_pb2.MASK_KIND_UNILM)), INV, "mask"),
            (R(model="onmt", source="x", max_new_tokens=600), INV, "maximum length 500"),
        ]
        for req, code, needle in cases:
            with self.assertRaises(grpc.RpcError) as cm:
                self.stub.Generate(req, timeout=60)
            self.assertEqual(cm.exception.code(), code, cm.exception.details())
            self.assertIn(needle, cm.exception.details())


if __name__ == "__main__":
    harness.run_tests()
