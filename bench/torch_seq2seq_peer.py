#!/usr/bin/python3
"""Encoder-decoder generation speed peer for bench/generate_bench: greedy decoding with a KV
cache in plain PyTorch 1.13 (Debian python3-torch), for the two encoder-decoder checkpoints of
../shared, re-stated here from their reference semantics (there is no transformers library on
these machines, and ../shared/peers only has GPT-2 / BERT peers):

  opennmt  the OpenNMT/CTranslate2 pre-norm Transformer of ../shared/models/opennmt-aren-
           transliteration (MODELS.md: x = E[ids] * sqrt(d) + [sin | cos] tensor2tensor sinusoid
           from position 1; pre-LN blocks with biases, ReLU FFN, final norms; cross K/V from the
           final encoder output; untied lm_head with bias)
  t5       HF transformers 4.31 T5ForConditionalGeneration (../shared/golden/models/t5-mini:
           RMSNorm, no biases, unscaled scores, relative position buckets from layer 0 added in
           every layer, relu or gated-gelu FFN, d_model^-0.5 before a tied lm_head)

  /usr/bin/python3 bench/torch_seq2seq_peer.py MODEL_DIR [--batches 1,16] [--source-len 24]
                   [--new-tokens 48] [--threads 2] [--reps 3] [--verify]

Per batch: B random sources of --source-len ids; one encoder forward over the batch (cross K/V of
every decoder layer computed once), a decoder step over the start token, then new_tokens - 1
single-token steps (greedy argmax, EOS ignored), self-attention keys/values in a preallocated
cache.  One JSON line per batch: {"peer", "model", "batch", "source_len", "new_tokens",
"encode_ms_median", "decode_ms_per_step_median", "decode_tokens_per_s"} with decode_tokens_per_s
= batch / median single-step seconds (the number generate_bench reports for our side).
--verify first checks the re-statement against the model's reference (OpenNMT
reference_outputs.json greedy ids; t5-mini golden greedy ids) and prints {"verify": ...}; exit 2
on a mismatch.  Environment: OMP_WAIT_POLICY=PASSIVE (re-exec), like ../shared/peers.
"""
import os
import sys

if os.environ.get("OMP_WAIT_POLICY") != "PASSIVE":
    os.execve(sys.executable, [sys.executable] + sys.argv, {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"})

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import statistics  # noqa: E402
import struct  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402


def read_safetensors(path):
    """name -> float32 torch tensor (F32 / F16 / BF16 files)."""
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        b, e = info["data_offsets"]
        raw = np.frombuffer(data[b:e], dtype={"F32": np.float32, "F16": np.float16, "BF16": np.uint16}[info["dtype"]])
        if info["dtype"] == "BF16":
            raw = (raw.astype(np.uint32) << 16).view(np.float32)
        out[name] = torch.from_numpy(raw.astype(np.float32).reshape(info["shape"]))
    return out


class Model:
    """Both families: the stacks as plain tensors, a batched encoder and a cached decoder step."""

    def __init__(self, model_dir):
        with open(os.path.join(model_dir, "config.json")) as f:
            self.cfg = cfg = json.load(f)
        self.w = read_safetensors(os.path.join(model_dir, "model.safetensors"))
        self.t5 = cfg["model_type"] == "t5"
        self.d = cfg["d_model"]
        if self.t5:
            self.heads = cfg["num_heads"]
            self.hd = cfg["d_kv"]
            self.enc_layers = cfg["num_layers"]
            self.dec_layers = cfg.get("num_decoder_layers", self.enc_layers)
            self.eps = cfg.get("layer_norm_epsilon", 1e-6)
            self.gated = cfg.get("feed_forward_proj", "relu").startswith("gated")
            self.tied = cfg.get("tie_word_embeddings", True)
            self.buckets = cfg.get("relative_attention_num_buckets", 32)
            self.max_distance = cfg.get("relative_attention_max_distance", 128)
            self.start = cfg.get("decoder_start_token_id", 0)
            self.src_vocab = cfg["vocab_size"]
        else:
            self.heads = cfg["encoder_attention_heads"]
            self.hd = cfg["head_dim"]
            self.enc_layers = cfg["encoder_layers"]
            self.dec_layers = cfg["decoder_layers"]
            self.eps = cfg.get("layer_norm_eps", 1e-5)
            self.scale = cfg["embedding_scale"]
            self.start = cfg["decoder_start_token_id"]
            self.src_vocab = cfg["src_vocab_size"]
            self.first_pos = cfg["position_encoding"]["first_position_index"]
            self.pe = self.sinusoid(cfg.get("max_position_embeddings", 500) + self.first_pos)
        self.inner = self.heads * self.hd
        self.pack()

    # -- parameters
    def sinusoid(self, rows):
        half = self.d // 2
        inv = torch.exp(-torch.arange(half, dtype=torch.float64) * math.log(10000.0) / (half - 1))
        ang = torch.arange(rows, dtype=torch.float64)[:, None] * inv[None, :]
        return torch.cat([torch.sin(ang), torch.cos(ang)], 1).float()

    def pack(self):
        w, L = self.w, []
        if self.t5:
            self.embed_src = self.embed_tgt = w["shared.weight"]
            self.head = w["shared.weight"] if self.tied else w["lm_head.weight"]
            self.head_bias = None
            for side, n in (("encoder", self.enc_layers), ("decoder", self.dec_layers)):
                layers = []
                for i in range(n):
                    p = f"{side}.block.{i}.layer."
                    sa = p + "0.SelfAttention."
                    lay = {"n1": (w[p + "0.layer_norm.weight"], None),
                           "qkv": (torch.cat([w[sa + x + ".weight"] for x in "qkv"]), None),
                           "o": (w[sa + "o.weight"], None)}
                    ff = p + "1."
                    if side == "decoder":
                        ca = p + "1.EncDecAttention."
                        lay["n2"] = (w[p + "1.layer_norm.weight"], None)
                        lay["cq"] = (w[ca + "q.weight"], None)
                        lay["ckv"] = (torch.cat([w[ca + "k.weight"], w[ca + "v.weight"]]), None)
                        lay["co"] = (w[ca + "o.weight"], None)
                        ff = p + "2."
                    lay["n3"] = (w[ff + "layer_norm.weight"], None)
                    dr = ff + "DenseReluDense."
                    lay["fc1"] = (torch.cat([w[dr + "wi_0.weight"], w[dr + "wi_1.weight"]]) if self.gated
                                  else w[dr + "wi.weight"], None)
                    lay["fc2"] = (w[dr + "wo.weight"], None)
                    layers.append(lay)
                L.append(layers)
            self.enc_final = (w["encoder.final_layer_norm.weight"], None)
            self.dec_final = (w["decoder.final_layer_norm.weight"], None)
            self.enc_rel = w["encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"]
            self.dec_rel = w["decoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"]
        else:
            m = "model."
            self.embed_src = w[m + "encoder.embed_tokens.weight"]
            self.embed_tgt = w[m + "decoder.embed_tokens.weight"]
            self.head, self.head_bias = w["lm_head.weight"], w["lm_head.bias"]

            def lin(name):
                return (w[name + ".weight"], w[name + ".bias"])

            def qkv(name, parts):
                return (torch.cat([w[f"{name}.{x}_proj.weight"] for x in parts]),
                        torch.cat([w[f"{name}.{x}_proj.bias"] for x in parts]))

            for side, n in (("encoder", self.enc_layers), ("decoder", self.dec_layers)):
                layers = []
                for i in range(n):
                    p = f"{m}{side}.layers.{i}."
                    lay = {"n1": lin(p + "self_attn_layer_norm"), "qkv": qkv(p + "self_attn", "qkv"),
                           "o": lin(p + "self_attn.out_proj"), "n3": lin(p + "final_layer_norm"),
                           "fc1": lin(p + "fc1"), "fc2": lin(p + "fc2")}
                    if side == "decoder":
                        lay["n2"] = lin(p + "encoder_attn_layer_norm")
                        lay["cq"] = lin(p + "encoder_attn.q_proj")
                        lay["ckv"] = qkv(p + "encoder_attn", "kv")
                        lay["co"] = lin(p + "encoder_attn.out_proj")
                    layers.append(lay)
                L.append(layers)
            self.enc_final = lin(m + "encoder.layer_norm")
            self.dec_final = lin(m + "decoder.layer_norm")
        self.enc, self.dec = L

    # -- blocks
    def norm(self, x, p):
        g, b = p
        if self.t5:
            return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * g
        return F.layer_norm(x, (self.d,), g, b, self.eps)

    @staticmethod
    def lin(x, p):
        return F.linear(x, p[0], p[1])

    def ffn(self, x, lay):
        h = self.lin(x, lay["fc1"])
        if self.t5 and self.gated:
            g, u = h.chunk(2, -1)
            h = F.gelu(g, approximate="tanh") * u
        else:
            h = F.relu(h)
        return self.lin(h, lay["fc2"])

    def split(self, x):  # [B, T, H*hd] -> [B, H, T, hd]
        B, T, _ = x.shape
        return x.view(B, T, self.heads, self.hd).transpose(1, 2)

    def attend(self, q, k, v, bias=None, mask=None):
        s = q @ k.transpose(-1, -2)
        if not self.t5:
            s = s / math.sqrt(self.hd)
        if bias is not None:
            s = s + bias
        if mask is not None:
            s = s.masked_fill(mask, float("-inf"))
        o = torch.softmax(s, -1) @ v
        B, H, T, hd = o.shape
        return o.transpose(1, 2).reshape(B, T, H * hd)

    def bucket(self, rel, bidirectional):
        nb, md = self.buckets, self.max_distance
        out = torch.zeros_like(rel)
        if bidirectional:
            nb //= 2
            out += (rel > 0).long() * nb
            rel = rel.abs()
        else:
            rel = -torch.min(rel, torch.zeros_like(rel))
        exact = nb // 2
        large = exact + (torch.log(rel.float() / exact) / math.log(md / exact) * (nb - exact)).long()
        large = torch.min(large, torch.full_like(large, nb - 1))
        return out + torch.where(rel < exact, rel, large)

    def rel_bias(self, table, q_pos, k_len, bidirectional):
        rel = torch.arange(k_len)[None, :] - q_pos[:, None]
        return table[self.bucket(rel, bidirectional)].permute(2, 0, 1)[None]  # [1, H, q, k]

    # -- encoder (batched, equal-length sources) and decoder step
    def encode(self, src):
        B, S = src.shape
        x = self.embed_src[src]
        bias = None
        if self.t5:
            bias = self.rel_bias(self.enc_rel, torch.arange(S), S, True)
        else:
            x = x * self.scale + self.pe[self.first_pos:self.first_pos + S]
        for lay in self.enc:
            h = self.lin(self.norm(x, lay["n1"]), lay["qkv"])
            q, k, v = (self.split(t) for t in h.split(self.inner, -1))
            x = x + self.lin(self.attend(q, k, v, bias), lay["o"])
            x = x + self.ffn(self.norm(x, lay["n3"]), lay)
        x = self.norm(x, self.enc_final)
        cross = []
        for lay in self.dec:
            k, v = self.lin(x, lay["ckv"]).split(self.inner, -1)
            cross.append((self.split(k), self.split(v)))
        return cross

    def step(self, tok, pos, cache, cross):
        """tok [B, 1] at decoder position pos; cache: per layer (K, V) [B, H, max, hd]."""
        x = self.embed_tgt[tok]
        bias = None
        if self.t5:
            bias = self.rel_bias(self.dec_rel, torch.tensor([pos]), pos + 1, False)
        else:
            x = x * self.scale + self.pe[self.first_pos + pos]
        for lay, (kc, vc), (ck, cv) in zip(self.dec, cache, cross):
            h = self.lin(self.norm(x, lay["n1"]), lay["qkv"])
            q, k, v = (self.split(t) for t in h.split(self.inner, -1))
            kc[:, :, pos:pos + 1] = k
            vc[:, :, pos:pos + 1] = v
            x = x + self.lin(self.attend(q, kc[:, :, :pos + 1], vc[:, :, :pos + 1], bias), lay["o"])
            q = self.split(self.lin(self.norm(x, lay["n2"]), lay["cq"]))
            x = x + self.lin(self.attend(q, ck, cv), lay["co"])
            x = x + self.ffn(self.norm(x, lay["n3"]), lay)
        x = self.norm(x, self.dec_final)
        if self.t5 and self.tied:
            x = x * (self.d ** -0.5)
        return F.linear(x[:, -1], self.head, self.head_bias)

    def greedy(self, src, new_tokens, eos=None):
        """Greedy ids [B, new_tokens] (EOS ignored unless `eos`), encode s, [step s]."""
        B = src.shape[0]
        t0 = time.perf_counter()
        cross = self.encode(src)
        enc_s = time.perf_counter() - t0
        cache = [(torch.zeros(B, self.heads, new_tokens + 1, self.hd),
                  torch.zeros(B, self.heads, new_tokens + 1, self.hd)) for _ in self.dec]
        tok = torch.full((B, 1), self.start, dtype=torch.long)
        out, steps = [], []
        for pos in range(new_tokens):
            t = time.perf_counter()
            tok = self.step(tok, pos, cache, cross).argmax(-1, keepdim=True)
            if pos > 0:
                steps.append(time.perf_counter() - t)
            out.append(tok)
            if eos is not None and int(tok[0, 0]) == eos:
                break
        return torch.cat(out, 1), enc_s, steps


def verify(model, model_dir):
    """The re-statement against the model's own reference outputs."""
    shared = os.path.dirname(os.path.dirname(os.path.abspath(model_dir)))
    cases = []
    if model.t5:
        golden = os.path.join(shared, "t5-mini", "outputs.json")
        for item in json.load(open(golden))["inputs"]:
            cases.append((item["input_ids"], item["greedy_ids"], None))
    else:
        ref = json.load(open(os.path.join(model_dir, "reference_outputs.json")))
        for c in ref["cases"]:
            if c["target_prefix"]:
                continue  # the peer does not force prefixes
            cases.append((c["source_ids"], c["greedy_output_ids"][1:], model.cfg["eos_token_id"]))
    ok = True
    with torch.inference_mode():
        for src, want, eos in cases:
            ids, _, _ = model.greedy(torch.tensor([src]), len(want), eos)
            ok &= ids[0].tolist() == want
    return ok, len(cases)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("--batches", default="1,16")
    ap.add_argument("--source-len", type=int, default=24)
    ap.add_argument("--new-tokens", type=int, default=48)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--verify", action="store_true")
    args = ap.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    model = Model(args.model)
    name = os.path.basename(os.path.normpath(args.model))
    if args.verify:
        ok, n = verify(model, args.model)
        print(json.dumps({"verify": ok, "model": name, "cases": n}), flush=True)
        if not ok:
            sys.exit(2)
    g = torch.Generator().manual_seed(0)
    for batch in [int(b) for b in args.batches.split(",")]:
        src = torch.randint(3, model.src_vocab, (batch, args.source_len), generator=g)
        enc, step = [], []
        with torch.inference_mode():
            model.greedy(src, 4)  # warm-up
            for _ in range(args.reps):
                _, e, s = model.greedy(src, args.new_tokens)
                enc.append(e)
                step.append(statistics.median(s))
        st = statistics.median(step)
        print(json.dumps({"peer": "torch-seq2seq", "torch": torch.__version__, "model": name,
                          "batch": batch, "source_len": args.source_len, "new_tokens": args.new_tokens,
                          "threads": torch.get_num_threads(),
                          "encode_ms_median": 1e3 * statistics.median(enc),
                          "decode_ms_per_step_median": 1e3 * st,
                          "decode_tokens_per_s": batch / st}), flush=True)


if __name__ == "__main__":
    main()
