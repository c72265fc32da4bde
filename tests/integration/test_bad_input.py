"""Bad input through the real server, one case per line, on the demo model
(so it runs everywhere): every answer is the documented status code with a
message naming the field at fault, and the server keeps serving afterwards.
(test_embedding.py / test_generation.py repeat some of these on the golden
checkpoints; this file is the complete list SECURITY.md points at.)"""

import os
import shutil
import tempfile
import unittest

import harness

INV = "INVALID_ARGUMENT"


def wire_with_string(message, field_number, raw):
    """`message` serialized plus one extra length-delimited field holding
    `raw` bytes, which no protobuf library would serialize for a string."""
    def varint(n):
        out = b""
        while n >= 0x80:
            out += bytes([(n & 0x7F) | 0x80])
            n >>= 7
        return out + bytes([n])
    return message.SerializeToString() + varint(field_number << 3 | 2) + varint(len(raw)) + raw


class BadInputTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        harness.generate_stubs()
        cls.data_dir = tempfile.mkdtemp(prefix="maskserve-badinput-")
        cls.srv = harness.ServerProcess(
            args=["--max_inputs_per_request=8", "--max_tokens_per_request=200",
                  "--max_new_tokens=64", "--max_message_bytes=1048576"],
            data_dir=cls.data_dir).start()
        cls.srv.wait_serving("maskserve.v1.Generation")
        cls.ch = cls.srv.channel()
        from maskserve.v1 import embedding_pb2_grpc, generation_pb2_grpc, models_pb2_grpc
        cls.emb = embedding_pb2_grpc.EmbeddingStub(cls.ch)
        cls.gen = generation_pb2_grpc.GenerationStub(cls.ch)
        cls.models = models_pb2_grpc.ModelsStub(cls.ch)

    @classmethod
    def tearDownClass(cls):
        cls.ch.close()
        cls.srv.__exit__(None, None, None)
        shutil.rmtree(cls.data_dir, ignore_errors=True)

    def expect(self, call, code, needle, what=None):
        import grpc
        with self.assertRaises(grpc.RpcError, msg=what or needle) as cm:
            call()
        self.assertEqual(cm.exception.code().name, code, f"{what or needle}: "
                         f"{cm.exception.details()}")
        self.assertIn(needle, cm.exception.details() or "", what or needle)

    def raw(self, method, response_cls):
        return self.ch.unary_unary(method, request_serializer=lambda x: x,
                                   response_deserializer=response_cls.FromString)

    def test_embed_and_tokenize(self):
        from maskserve.v1 import common_pb2 as c, embedding_pb2 as e
        E = e.EmbedRequest
        embed = lambda r: lambda: self.emb.Embed(r, timeout=30)  # noqa: E731
        cases = [
            (E(model="demo"), INV, "texts (or token_ids) must not be empty"),
            (E(texts=["x"]), INV, "model must be set"),
            (E(model="nope", texts=["x"]), "NOT_FOUND", "nope"),
            (E(model="demo", texts=["x"] * 9), INV, "texts"),
            (E(model="demo", texts=["word " * 60] * 5), INV, "--max_tokens_per_request"),
            (E(model="demo", texts=["word " * 600]), INV, "texts[0]"),
            (E(model="demo", texts=["x"], token_ids=[c.TokenIds(ids=[1])]), INV, "either texts"),
            (E(model="demo", texts=["a", "b"], text_pairs=["c"]), INV, "text_pairs"),
            (E(model="demo", token_ids=[c.TokenIds(ids=[2, 99999])]), INV,
             "token_ids[0].ids[1] = 99999 is outside the vocabulary"),
            (E(model="demo", token_ids=[c.TokenIds(ids=[2]), c.TokenIds(ids=[-1])]), INV,
             "token_ids[1].ids[0] = -1"),
            (E(model="demo", texts=["x"], whitening_profile="missing"), "NOT_FOUND", "missing"),
            (E(model="demo", texts=["x"], whitening_profile="../etc"), INV, "whitening_profile"),
            (E(model="demo", texts=["x"], pooling=99), INV, "pooling has unknown value 99"),
            (E(model="demo", texts=["x"], mask=c.MaskSpec(kind=99)), INV,
             "mask.kind has unknown value 99"),
            (E(model="demo", texts=["a b"], mask=c.MaskSpec(kind=c.MASK_KIND_UNILM,
                                                             prefix_length=100)), INV,
             "mask.prefix_length"),
            (E(model="demo", texts=["x"], dimensions=100000), INV, "dimensions"),
            (E(model="demo", texts=["x"], dimensions=-1), INV, "dimensions"),
            (E(model="demo", texts=["x"], max_length=-1), INV, "max_length"),
            (E(model="demo", texts=["x"], max_length=100000), INV, "max_length"),
        ]
        for req, code, needle in cases:
            self.expect(embed(req), code, needle, str(req)[:80])
        # Too big for --max_message_bytes: gRPC refuses it before any handler.
        self.expect(embed(E(model="demo", texts=["a " * 600000])), "RESOURCE_EXHAUSTED",
                    "larger than max")
        # Invalid UTF-8 and NUL bytes, which only a raw client can send, name
        # the field, the index and the byte.
        raw_embed = self.raw("/maskserve.v1.Embedding/Embed", e.EmbedResponse)
        raw_tok = self.raw("/maskserve.v1.Embedding/Tokenize", e.TokenizeResponse)
        base = E(model="demo", texts=["fine"])
        self.expect(lambda: raw_embed(wire_with_string(base, 2, b"ab\xff\xfe"), timeout=30), INV,
                    "texts[1] is not valid UTF-8 at byte 2")
        self.expect(lambda: raw_embed(wire_with_string(base, 2, b"ab\xed\xa0\x80"), timeout=30),
                    INV, "texts[1] is not valid UTF-8 at byte 2")  # a UTF-16 surrogate
        self.expect(lambda: self.emb.Embed(E(model="demo", texts=["ok", "a\x00b"]), timeout=30),
                    INV, "texts[1] contains a NUL byte at byte 1")
        tok = e.TokenizeRequest(model="demo", texts=["a", "b"], text_pairs=["c"])
        self.expect(lambda: raw_tok(wire_with_string(tok, 3, b"\xc3("), timeout=30), INV,
                    "text_pairs[1] is not valid UTF-8 at byte 0")
        self.expect(lambda: self.emb.Tokenize(e.TokenizeRequest(model="demo",
                                                                 texts=["\x00"]), timeout=30),
                    INV, "texts[0] contains a NUL byte at byte 0")
        self.expect(lambda: raw_embed(b"\x0a\xff\xff\xff", timeout=30), INV,
                    "not a valid protobuf message")
        self.expect(lambda: self.emb.Tokenize(e.TokenizeRequest(model="demo", texts=["x"] * 9),
                                              timeout=30), INV, "texts")
        self.expect(lambda: self.emb.Detokenize(e.DetokenizeRequest(
            model="demo", token_ids=[c.TokenIds(ids=[1, 99999999])]), timeout=30), INV,
            "token_ids[0].ids[1] = 99999999 is outside the vocabulary")

    def test_whitening(self):
        import grpc
        from maskserve.v1 import embedding_pb2 as e
        F = e.FitWhiteningRequest

        def fit(*msgs):
            return lambda: self.emb.FitWhitening(iter(msgs), timeout=60)
        self.expect(fit(F(model="demo", profile="p", k=100000, texts=["a", "b"])), INV,
                    "k must be in [0, 128]")
        self.expect(fit(F(model="demo", profile="p", k=-1, texts=["a", "b"])), INV, "k must be")
        self.expect(fit(F(model="demo", profile="a/b", texts=["a", "b"])), INV, "profile")
        self.expect(fit(F(model="nope", profile="p", texts=["a"])), "NOT_FOUND", "nope")
        self.expect(fit(F(model="demo", profile="p", beta=2.0, texts=["a", "b"])), INV, "beta")
        self.expect(fit(F(model="demo", profile="p", gamma=float("nan"), texts=["a", "b"])), INV,
                    "gamma")
        self.expect(fit(F(model="demo", profile="p", texts=["a", "b"]),
                        F(texts=["c", "d\x00"])), INV, "texts[1] contains a NUL byte")
        self.expect(fit(F(model="demo", profile="p", texts=["a"] * 9)), INV, "texts")
        # A stream with no texts at all.
        self.expect(fit(F(model="demo", profile="p")), "FAILED_PRECONDITION",
                    "texts: whitening needs at least 2 samples, got 0")
        raw_fit = self.ch.stream_unary("/maskserve.v1.Embedding/FitWhitening",
                                       request_serializer=lambda x: x,
                                       response_deserializer=e.WhiteningProfile.FromString)
        first = F(model="demo", profile="p", texts=["a"]).SerializeToString()
        self.expect(lambda: raw_fit(iter([first, wire_with_string(F(), 3, b"\x80")]), timeout=30),
                    INV, "texts[0] is not valid UTF-8 at byte 0")
        self.expect(lambda: self.emb.GetWhitening(e.GetWhiteningRequest(
            model="demo", profile="absent"), timeout=30), "NOT_FOUND", "absent")
        self.expect(lambda: self.emb.DeleteWhitening(e.DeleteWhiteningRequest(
            model="demo", profile="absent"), timeout=30), "NOT_FOUND", "absent")
        self.expect(lambda: self.emb.ImportWhitening(e.ImportWhiteningRequest(
            profile=e.WhiteningProfile(model="demo", name="imp", dim=7)), timeout=30), INV,
            "profile.dim")
        # Nothing half-made was stored by any of the above.
        listed = self.emb.ListWhitening(e.ListWhiteningRequest(model="demo"), timeout=30)
        self.assertEqual(list(listed.profiles), [])
        del grpc

    def test_generate_and_paraphrase(self):
        from maskserve.v1 import common_pb2 as c, generation_pb2 as g
        R = g.GenerateRequest
        cases = [
            (R(model="demo", max_new_tokens=4), "source (or prompt) must not be empty"),
            (R(model="demo", prompt="x", max_new_tokens=0), "max_new_tokens"),
            (R(model="demo", prompt="x", max_new_tokens=2**31 - 1), "--max_new_tokens"),
            (R(model="demo", prompt="x", max_new_tokens=4, temperature=-1), "temperature"),
            (R(model="demo", prompt="x", max_new_tokens=4, temperature=float("nan")),
             "temperature"),
            (R(model="demo", prompt="x", max_new_tokens=4, top_p=float("nan")), "top_p"),
            (R(model="demo", prompt="x", max_new_tokens=4, top_p=-0.5), "top_p"),
            (R(model="demo", prompt="x", max_new_tokens=4, top_k=-1), "top_k"),
            (R(model="demo", prompt="x", max_new_tokens=4, repetition_penalty=float("inf")),
             "repetition_penalty"),
            (R(model="demo", prompt="x", max_new_tokens=4, length_penalty=float("nan")),
             "length_penalty"),
            (R(model="demo", prompt="x", max_new_tokens=4, no_repeat_ngram_size=-3),
             "no_repeat_ngram_size"),
            (R(model="demo", prompt="x", max_new_tokens=2, min_new_tokens=5), "min_new_tokens"),
            (R(model="demo", prompt="x", max_new_tokens=4, strategy=g.STRATEGY_BEAM,
               beam_width=64, num_return_sequences=64), "beam_width (64) x num_return_sequences"),
            (R(model="demo", prompt="x", max_new_tokens=4, num_return_sequences=1000),
             "num_return_sequences"),
            (R(model="demo", prompt="x", max_new_tokens=4, strategy=42),
             "strategy has unknown value 42"),
            (R(model="demo", prompt="x", max_new_tokens=4, stop_token_ids=[-1]),
             "stop_token_ids[0] = -1"),
            (R(model="demo", prompt="x", max_new_tokens=4, mask=c.MaskSpec(kind=77)),
             "mask.kind has unknown value 77"),
            (R(model="demo", prompt="x", max_new_tokens=4,
               mask=c.MaskSpec(kind=c.MASK_KIND_BIDIRECTIONAL)), "mask"),
            (R(model="demo", prompt_ids=[5, 6], max_new_tokens=4), "prompt_ids"),
            (R(model="demo", prompt="x", source="y", max_new_tokens=4), "source or prompt"),
            (R(model="demo", prompt="a\x00b", max_new_tokens=4), "prompt contains a NUL byte"),
            (R(model="demo", prompt="x", max_new_tokens=4, stop=["ok", "\x00"]),
             "stop[1] contains a NUL byte"),
        ]
        for req, needle in cases:
            for name, call in (("Generate", lambda r: self.gen.Generate(r, timeout=30)),
                               ("GenerateStream",
                                lambda r: list(self.gen.GenerateStream(r, timeout=30)))):
                self.expect(lambda: call(req), INV, needle, f"{name} {str(req)[:60]!r}")
        self.expect(lambda: self.gen.Generate(R(model="nope", prompt="x", max_new_tokens=4),
                                              timeout=30), "NOT_FOUND", "nope")
        raw_gen = self.raw("/maskserve.v1.Generation/Generate", g.GenerateResponse)
        self.expect(lambda: raw_gen(wire_with_string(R(model="demo", max_new_tokens=4), 2,
                                                     b"ab\xc3("), timeout=30), INV,
                    "prompt is not valid UTF-8 at byte 2")
        P = g.ParaphraseRequest
        for req, needle in (
                (P(model="demo", text="", num_candidates=2, max_new_tokens=4), "text"),
                (P(model="demo", text="x", num_candidates=0, max_new_tokens=4), "num_candidates"),
                (P(model="demo", text="x", num_candidates=2, top_k=3, max_new_tokens=4), "top_k"),
                (P(model="demo", text="x\x00", num_candidates=2, max_new_tokens=4),
                 "text contains a NUL byte")):
            self.expect(lambda: self.gen.Paraphrase(req, timeout=30), INV, needle, str(req)[:60])

    def test_zz_server_still_serves(self):
        from maskserve.v1 import embedding_pb2 as e, models_pb2
        self.assertIsNone(self.srv.proc.poll())
        self.models.ListModels(models_pb2.ListModelsRequest(), timeout=10)
        r = self.emb.Embed(e.EmbedRequest(model="demo", texts=["still fine"]), timeout=30)
        self.assertEqual(len(r.embeddings), 1)


if __name__ == "__main__":
    harness.run_tests()
