"""Generation through the real server: golden greedy / processor / beam ids of
gpt2-mini and stories260K and UniLM greedy ids of bert-mini over gRPC,
streaming equals unary, a client that disconnects mid-stream gets its KV
blocks freed, concurrent streams share steps (continuous batching), request
errors name the field, Paraphrase, the demo model generating with UNILM, and
maskserve-cli generate / paraphrase."""

import json
import os
import re
import subprocess
import threading
import time
import unittest

import harness

GOLDEN = os.path.join(harness.SHARED_DIR, "golden")
GPT2 = os.path.join(GOLDEN, "models", "gpt2-mini")
BERT = os.path.join(GOLDEN, "models", "bert-mini")
STORIES = os.path.join(harness.SHARED_DIR, "models", "stories260K")
HAVE_GOLDEN = all(os.path.isdir(p) for p in (GPT2, BERT, STORIES))
SKIP_MSG = f"{GOLDEN} or {STORIES} not found: golden generation tests skipped"
# The golden README's tolerance for beam scores and transition scores.
SCORE_TOL = 1e-4


def load(path):
    with open(path) as f:
        return json.load(f)


def metric(text, name, labels):
    """Value of the sample `name{labels}` in Prometheus text, or None."""
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    for line in text.splitlines():
        if line.startswith(name + "{") and line[len(name) + 1:].startswith(want):
            return float(line.rsplit(" ", 1)[1])
    return None


@unittest.skipUnless(HAVE_GOLDEN, SKIP_MSG)
class GoldenGenerationTest(unittest.TestCase):
    """One server with the three golden generators for the whole class."""

    @classmethod
    def setUpClass(cls):
        harness.generate_stubs()
        cls.srv = harness.ServerProcess(args=[f"--model=gpt2={GPT2}", f"--model=stories={STORIES}",
                                              f"--model=bert={BERT}"]).start()
        cls.srv.wait_serving("maskserve.v1.Generation")
        cls.ch = cls.srv.channel()
        from maskserve.v1 import generation_pb2_grpc
        cls.stub = generation_pb2_grpc.GenerationStub(cls.ch)

    @classmethod
    def tearDownClass(cls):
        cls.ch.close()
        cls.srv.__exit__(None, None, None)

    def greedy(self, model, prompt, n, **kw):
        from maskserve.v1 import generation_pb2 as g
        return self.stub.Generate(g.GenerateRequest(
            model=model, prompt=prompt, max_new_tokens=n, strategy=g.STRATEGY_GREEDY,
            ignore_eos=True, **kw), timeout=120)

    def test_causal_lm_greedy_and_processors_match_golden(self):
        for model, name in (("gpt2", "gpt2-mini"), ("stories", "stories260K")):
            for p in load(os.path.join(GOLDEN, name, "generation.json"))["prompts"]:
                r = self.greedy(model, p["prompt"], 32)
                self.assertEqual(r.usage.prompt_tokens, len(p["input_ids"]), p["prompt"])
                self.assertEqual(list(r.sequences[0].ids), p["greedy_ids"], f"{model}: {p['prompt']}")
                self.assertEqual(r.usage.completion_tokens, 32)
                self.assertEqual(r.model, model)
                # Pre-tokenised prompts give the same ids.
                from maskserve.v1 import generation_pb2 as g
                r2 = self.stub.Generate(g.GenerateRequest(
                    model=model, prompt_ids=p["input_ids"], max_new_tokens=32,
                    strategy=g.STRATEGY_GREEDY, ignore_eos=True), timeout=120)
                self.assertEqual(list(r2.sequences[0].ids), p["greedy_ids"])
                for key, kw in (("greedy_no_repeat_ngram_2", {"no_repeat_ngram_size": 2}),
                                ("greedy_repetition_penalty_1.3", {"repetition_penalty": 1.3}),
                                ("greedy_no_repeat_ngram_2_repetition_penalty_1.3",
                                 {"no_repeat_ngram_size": 2, "repetition_penalty": 1.3})):
                    r = self.greedy(model, p["prompt"], 32, **kw)
                    self.assertEqual(list(r.sequences[0].ids), p[key]["ids"],
                                     f"{model} {key}: {p['prompt']}")

    def test_causal_lm_beam_matches_golden(self):
        from maskserve.v1 import generation_pb2 as g
        worst = 0.0
        for model, name in (("gpt2", "gpt2-mini"), ("stories", "stories260K")):
            for p in load(os.path.join(GOLDEN, name, "generation.json"))["prompts"]:
                for key, ngram in (("beam", 0), ("beam_no_repeat_ngram_2", 2)):
                    want = p[key]
                    r = self.stub.Generate(g.GenerateRequest(
                        model=model, prompt=p["prompt"], max_new_tokens=16,
                        strategy=g.STRATEGY_BEAM, beam_width=4, num_return_sequences=2,
                        length_penalty=1.0, early_stopping=False, no_repeat_ngram_size=ngram,
                        logprobs=True), timeout=120)
                    self.assertEqual([list(s.ids) for s in r.sequences], want["new_ids"],
                                     f"{model} {key}: {p['prompt']}")
                    for s, score, trans in zip(r.sequences, want["sequences_scores"],
                                               want["transition_scores"]):
                        worst = max(worst, abs(s.score - score))
                        self.assertLessEqual(abs(s.score - score), SCORE_TOL)
                        for a, b in zip(s.logprobs, trans):
                            self.assertLessEqual(abs(a - b), SCORE_TOL)
                        self.assertEqual(s.finish_reason, g.FINISH_REASON_LENGTH)
        print(f"beam: worst |score diff| {worst:.2e}")

    def test_unilm_greedy_matches_golden(self):
        from maskserve.v1 import common_pb2, generation_pb2 as g
        for item in load(os.path.join(GOLDEN, "bert-mini", "unilm_generation.json"))["generations"]:
            for mask in (None, common_pb2.MaskSpec(kind=common_pb2.MASK_KIND_UNILM)):
                kw = {"mask": mask} if mask else {}
                r = self.stub.Generate(g.GenerateRequest(
                    model="bert", source=item["source"], max_new_tokens=len(item["greedy_ids"]),
                    strategy=g.STRATEGY_GREEDY, ignore_eos=True, **kw), timeout=120)
                self.assertEqual(r.usage.prompt_tokens, item["source_len"])
                self.assertEqual(list(r.sequences[0].ids), item["greedy_ids"], item["source"])

    def test_text_continues_the_prompt_or_starts_the_target(self):
        """Decoder-only: prompt text + generated text == the text of prompt + generated ids
        (a leading space stays); UniLM: the text is the target segment's own text."""
        from maskserve.v1 import common_pb2, embedding_pb2, embedding_pb2_grpc, generation_pb2 as g
        emb = embedding_pb2_grpc.EmbeddingStub(self.ch)

        def detok(model, *seqs):
            return list(emb.Detokenize(embedding_pb2.DetokenizeRequest(
                model=model, skip_special_tokens=True,
                token_ids=[common_pb2.TokenIds(ids=s) for s in seqs]), timeout=60).texts)

        for model, name in (("gpt2", "gpt2-mini"), ("stories", "stories260K")):
            for p in load(os.path.join(GOLDEN, name, "generation.json"))["prompts"]:
                text = self.greedy(model, p["prompt"], 32).sequences[0].text
                full, prompt = detok(model, p["input_ids"] + p["greedy_ids"], p["input_ids"])
                self.assertEqual(prompt + text, full, f"{model}: {p['prompt']}")
        for item in load(os.path.join(GOLDEN, "bert-mini", "unilm_generation.json"))["generations"]:
            r = self.stub.Generate(g.GenerateRequest(
                model="bert", source=item["source"], max_new_tokens=24,
                strategy=g.STRATEGY_GREEDY, ignore_eos=True), timeout=120)
            self.assertEqual(r.sequences[0].text, detok("bert", item["greedy_ids"])[0])

    def test_stream_equals_unary(self):
        from maskserve.v1 import generation_pb2 as g
        cases = [
            g.GenerateRequest(model="stories", prompt="Once upon a time", max_new_tokens=60,
                              strategy=g.STRATEGY_GREEDY, logprobs=True),
            g.GenerateRequest(model="gpt2", prompt="The meaning of life is", max_new_tokens=40,
                              strategy=g.STRATEGY_SAMPLE, temperature=0.9, top_k=50, seed=7,
                              num_return_sequences=2, ignore_eos=True),
            g.GenerateRequest(model="bert", source="How do I reset my password?",
                              max_new_tokens=24, strategy=g.STRATEGY_GREEDY),
            g.GenerateRequest(model="stories", prompt="Tom and his dog", max_new_tokens=50,
                              strategy=g.STRATEGY_GREEDY, stop=["big hou", "never"]),
            g.GenerateRequest(model="gpt2", prompt="Hello", max_new_tokens=12,
                              strategy=g.STRATEGY_BEAM, beam_width=3, num_return_sequences=2),
        ]
        for req in cases:
            unary = self.stub.Generate(req, timeout=120)
            texts, ids, finish, msgs = {}, {}, {}, list(self.stub.GenerateStream(req, timeout=120))
            for m in msgs:
                texts[m.index] = texts.get(m.index, "") + m.text
                ids.setdefault(m.index, []).extend(m.ids)
                if m.finish_reason:
                    finish[m.index] = m.finish_reason
            for i, s in enumerate(unary.sequences):
                self.assertEqual(texts.get(i, ""), s.text, f"{req.model} seq {i}")
                self.assertEqual(ids.get(i, []), list(s.ids))
                self.assertEqual(finish.get(i), s.finish_reason)
            # Only the last message carries usage and timing.
            self.assertTrue(msgs[-1].HasField("usage"))
            self.assertTrue(msgs[-1].HasField("timing"))
            self.assertFalse(any(m.HasField("usage") for m in msgs[:-1]))
            self.assertEqual(msgs[-1].usage.completion_tokens, unary.usage.completion_tokens)
            if req.strategy == g.STRATEGY_BEAM:
                self.assertEqual(len(msgs), len(unary.sequences))  # only the final result
            elif req.stop:
                self.assertEqual(unary.sequences[0].finish_reason, g.FINISH_REASON_STOP_STRING)
                self.assertTrue(unary.sequences[0].text.endswith("in a "), unary.sequences[0].text)
            else:
                # Deltas that arrive while a write is in flight are merged
                # into the next message, so a fast model sends fewer messages
                # than tokens; a stream still has more than one.
                self.assertGreater(len(msgs), 1)
        t = unary.timing
        self.assertGreater(t.total_us, 0)
        self.assertGreater(t.tokens_per_second, 0)
        self.assertGreater(t.first_token_us, 0)

    def test_disconnect_frees_kv_blocks(self):
        from maskserve.v1 import generation_pb2 as g
        labels = {"model": "gpt2"}
        self.srv.http_get("/metrics")
        call = self.stub.GenerateStream(g.GenerateRequest(
            model="gpt2", prompt="The meaning of life is", max_new_tokens=480,
            strategy=g.STRATEGY_SAMPLE, temperature=1.0, top_p=0.9, num_return_sequences=4,
            ignore_eos=True), timeout=120)
        got = 0
        for _ in call:
            got += 1
            if got == 3:
                break
        _, text = self.srv.http_get("/metrics")
        used = metric(text, "maskserve_kv_cache_blocks_used", labels)
        self.assertIsNotNone(used, "maskserve_kv_cache_blocks_used{model=gpt2} not exported")
        self.assertGreater(used, 0)
        call.cancel()
        deadline = time.time() + 30
        while time.time() < deadline:
            _, text = self.srv.http_get("/metrics")
            if metric(text, "maskserve_kv_cache_blocks_used", labels) == 0:
                break
            time.sleep(0.05)
        self.assertEqual(metric(text, "maskserve_kv_cache_blocks_used", labels), 0,
                         "KV blocks not freed after the client went away")
        self.assertEqual(metric(text, "maskserve_generation_sequences",
                                {"model": "gpt2", "state": "running"}), 0)

    def test_concurrent_streams_all_progress(self):
        from maskserve.v1 import generation_pb2 as g
        n = 8
        first, done, errors = [None] * n, [None] * n, []
        start = threading.Barrier(n)

        def run(i):
            try:
                start.wait()
                req = g.GenerateRequest(model="stories", prompt="Once upon a time",
                                        max_new_tokens=400, strategy=g.STRATEGY_SAMPLE,
                                        temperature=1.0, top_k=40, seed=i, ignore_eos=True)
                for m in self.stub.GenerateStream(req, timeout=120):
                    if first[i] is None and m.ids:
                        first[i] = time.monotonic()
                done[i] = time.monotonic()
            except Exception as e:  # noqa: BLE001 - reported below
                errors.append(e)

        threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=180)
        self.assertEqual(errors, [])
        # Every stream got its first token before any stream finished: they
        # ran side by side, not one after another.
        self.assertLess(max(first), min(done), (first, done))
        _, text = self.srv.http_get("/metrics")
        m = re.search(r'maskserve_generation_step_batch_size_bucket\{model="stories",le="4"\} (\S+)',
                      text)
        count = metric(text, "maskserve_generation_step_batch_size_count", {"model": "stories"})
        self.assertIsNotNone(m)
        self.assertLess(float(m.group(1)), count, "no step ever ran more than 4 sequences")

    def test_bad_requests_name_the_field(self):
        import grpc
        from maskserve.v1 import common_pb2, generation_pb2 as g
        R = g.GenerateRequest
        INV = grpc.StatusCode.INVALID_ARGUMENT
        cases = [
            (R(model="nope", prompt="x", max_new_tokens=4), grpc.StatusCode.NOT_FOUND, "nope"),
            (R(model="gpt2", max_new_tokens=4), INV, "prompt"),
            (R(model="gpt2", prompt="x", prompt_ids=[1], max_new_tokens=4), INV, "prompt_ids"),
            (R(model="gpt2", prompt="x", source="y", max_new_tokens=4), INV, "source"),
            (R(model="bert", prompt_ids=[101], max_new_tokens=4), INV, "prompt_ids"),
            (R(model="bert", prompt="a", source="b", max_new_tokens=4), INV, "source or prompt"),
            (R(model="gpt2", prompt_ids=[464, 99999], max_new_tokens=4), INV,
             "prompt_ids[1] = 99999"),
            (R(model="gpt2", prompt="x", max_new_tokens=0), INV, "max_new_tokens"),
            (R(model="gpt2", prompt="x", max_new_tokens=5000), INV, "--max_new_tokens"),
            (R(model="gpt2", prompt="x", max_new_tokens=600), INV, "maximum length 512"),
            (R(model="gpt2", prompt="x", max_new_tokens=4, strategy=g.STRATEGY_SAMPLE,
               temperature=0), INV, "temperature"),
            (R(model="gpt2", prompt="x", max_new_tokens=4, temperature=float("nan")), INV,
             "temperature"),
            (R(model="gpt2", prompt="x", max_new_tokens=4, top_p=1.5), INV, "top_p"),
            (R(model="gpt2", prompt="x", max_new_tokens=4, top_k=-1), INV, "top_k"),
            (R(model="gpt2", prompt="x", max_new_tokens=4, repetition_penalty=0), INV,
             "repetition_penalty"),
            (R(model="gpt2", prompt="x", max_new_tokens=4, length_penalty=float("nan")), INV,
             "length_penalty"),
            (R(model="gpt2", prompt="x", max_new_tokens=4, strategy=g.STRATEGY_BEAM,
               beam_width=2, num_return_sequences=3), INV, "num_return_sequences"),
            (R(model="gpt2", prompt="x", max_new_tokens=4, strategy=g.STRATEGY_BEAM,
               beam_width=32, num_return_sequences=4), INV, "beam_width (32) x"),
            (R(model="gpt2", prompt="x", max_new_tokens=4,
               mask=common_pb2.MaskSpec(kind=common_pb2.MASK_KIND_BIDIRECTIONAL)), INV, "mask"),
            (R(model="gpt2", prompt="x", max_new_tokens=4,
               mask=common_pb2.MaskSpec(kind=common_pb2.MASK_KIND_UNILM)), INV, "mask"),
        ]
        for req, code, needle in cases:
            for call in (self.stub.Generate, lambda r, **kw: list(self.stub.GenerateStream(r, **kw))):
                with self.assertRaises(grpc.RpcError) as cm:
                    call(req, timeout=60)
                self.assertEqual(cm.exception.code(), code, cm.exception.details())
                self.assertIn(needle, cm.exception.details())
        # Invalid UTF-8 (only a raw client can send it) names the field and byte.
        raw = self.ch.unary_unary("/maskserve.v1.Generation/Generate",
                                  request_serializer=lambda x: x,
                                  response_deserializer=g.GenerateResponse.FromString)
        bad = b"ab\xc3("
        wire = R(model="gpt2", max_new_tokens=4).SerializeToString() + b"\x12" + bytes(
            [len(bad)]) + bad
        with self.assertRaises(grpc.RpcError) as cm:
            raw(wire, timeout=30)
        self.assertEqual(cm.exception.code(), INV)
        self.assertEqual(cm.exception.details(), "prompt is not valid UTF-8 at byte 2")

    def test_paraphrase(self):
        import grpc
        from maskserve.v1 import generation_pb2 as g
        text = "How do I reset my password?"
        r = self.stub.Paraphrase(g.ParaphraseRequest(model="bert", text=text, num_candidates=8,
                                                     top_k=3, max_new_tokens=16, seed=3),
                                 timeout=120)
        self.assertLessEqual(len(r.paraphrases), 3)
        self.assertGreater(len(r.paraphrases), 0)
        sims = [p.similarity for p in r.paraphrases]
        self.assertEqual(sims, sorted(sims, reverse=True))
        self.assertEqual(len({p.text for p in r.paraphrases}), len(r.paraphrases))
        for p in r.paraphrases:
            self.assertNotEqual(p.text.lower(), text.lower())
            self.assertTrue(-1.0001 <= p.similarity <= 1.0001)
        self.assertGreater(r.timing.total_us, 0)
        # Same seed, same answer.
        r2 = self.stub.Paraphrase(g.ParaphraseRequest(model="bert", text=text, num_candidates=8,
                                                      top_k=3, max_new_tokens=16, seed=3),
                                  timeout=120)
        self.assertEqual([p.text for p in r.paraphrases], [p.text for p in r2.paraphrases])
        for req, code, needle in (
                (g.ParaphraseRequest(model="gpt2", text="x", num_candidates=2, max_new_tokens=4),
                 grpc.StatusCode.FAILED_PRECONDITION, "cannot paraphrase"),
                (g.ParaphraseRequest(model="bert", text="", num_candidates=2, max_new_tokens=4),
                 grpc.StatusCode.INVALID_ARGUMENT, "text"),
                (g.ParaphraseRequest(model="bert", text="x", num_candidates=0, max_new_tokens=4),
                 grpc.StatusCode.INVALID_ARGUMENT, "num_candidates"),
                (g.ParaphraseRequest(model="bert", text="x", num_candidates=2, top_k=3,
                                     max_new_tokens=4),
                 grpc.StatusCode.INVALID_ARGUMENT, "top_k")):
            with self.assertRaises(grpc.RpcError) as cm:
                self.stub.Paraphrase(req, timeout=60)
            self.assertEqual(cm.exception.code(), code, cm.exception.details())
            self.assertIn(needle, cm.exception.details())

    def test_cli_generate_and_paraphrase(self):
        def cli(*args):
            return subprocess.run([harness.CLI_BIN, f"--target={self.srv.target}", *args],
                                  capture_output=True, text=True, timeout=120)
        p = load(os.path.join(GOLDEN, "stories260K", "generation.json"))["prompts"][0]
        unary = self.greedy("stories", p["prompt"], 32)
        r = cli("generate", "--model", "stories", "--max_new_tokens", "32", "--ignore_eos",
                "--strategy", "greedy", p["prompt"])
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout, unary.sequences[0].text + "\n")
        self.assertIn("completion_tokens=32", r.stderr)
        r = cli("generate", "--model", "stories", "--max_new_tokens", "32", "--ignore_eos",
                "--strategy", "greedy", "--stream", p["prompt"])
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout, unary.sequences[0].text + "\n")
        r = cli("paraphrase", "--model", "bert", "--num_candidates", "4", "--top_k", "2",
                "--max_new_tokens", "8", "--seed", "1", "a cat sits on the mat")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertTrue(r.stdout.strip())
        r = cli("generate", "--model", "gpt2", "--max_new_tokens", "0", "hi")
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("max_new_tokens", r.stderr)


class DemoModelGenerationTest(unittest.TestCase):
    """No --model: the demo BERT generates with the UNILM mask and paraphrases."""

    def test_demo_generates_with_unilm(self):
        harness.generate_stubs()
        from maskserve.v1 import common_pb2, generation_pb2 as g, generation_pb2_grpc
        with harness.ServerProcess() as srv:
            srv.wait_serving("maskserve.v1.Generation")
            with srv.channel() as ch:
                stub = generation_pb2_grpc.GenerationStub(ch)
                r = stub.Generate(g.GenerateRequest(
                    model="demo", source="hello world", max_new_tokens=8, ignore_eos=True,
                    mask=common_pb2.MaskSpec(kind=common_pb2.MASK_KIND_UNILM),
                    strategy=g.STRATEGY_GREEDY), timeout=60)
                self.assertEqual(len(r.sequences[0].ids), 8)
                self.assertEqual(r.usage.prompt_tokens, 4)  # [CLS] hello world [SEP]
                # A plain prompt is the source of a seq2seq model.
                r2 = stub.Generate(g.GenerateRequest(
                    model="demo", prompt="hello world", max_new_tokens=8, ignore_eos=True,
                    strategy=g.STRATEGY_GREEDY), timeout=60)
                self.assertEqual(list(r2.sequences[0].ids), list(r.sequences[0].ids))
                p = stub.Paraphrase(g.ParaphraseRequest(model="demo", text="hello world",
                                                        num_candidates=4, top_k=2,
                                                        max_new_tokens=6, seed=1), timeout=60)
                self.assertLessEqual(len(p.paraphrases), 2)


if __name__ == "__main__":
    harness.run_tests()
