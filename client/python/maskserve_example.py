#!/usr/bin/env python3
"""Calling maskserve from Python with grpcio (Debian: python3-grpcio).

Stubs are generated from proto/ with protoc + grpc_python_plugin (Debian's
protobuf-compiler and protobuf-compiler-grpc); this script does that into a
temporary directory when --stubs is not given, so it runs from a checkout
as is:

    python3 client/python/maskserve_example.py --target localhost:50051

It lists the models, embeds sentences (mean pooling, L2-normalised),
fits a BERT-whitening profile by streaming sentences, embeds with it,
deletes it again, and generates text unary and streaming when a model with
TASK_GENERATE is loaded. --json prints one JSON summary at the end (the
integration test reads it).

Calls carry deadlines (timeout=) and the channel retries UNAVAILABLE through
gRPC's own retry policy (service config), which covers a server that is
restarting or a pod that is draining.
"""

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile

import grpc

HERE = os.path.dirname(os.path.abspath(__file__))
PROTO_DIR = os.path.normpath(os.path.join(HERE, "..", "..", "proto"))

# Retry idempotent calls on UNAVAILABLE with exponential backoff; applies to
# every method of the three services. FitWhitening (client streaming) is
# retried by gRPC only while nothing has been committed.
SERVICE_CONFIG = json.dumps({
    "methodConfig": [{
        "name": [{"service": "maskserve.v1.Models"}, {"service": "maskserve.v1.Embedding"},
                 {"service": "maskserve.v1.Generation"}],
        "retryPolicy": {
            "maxAttempts": 4,
            "initialBackoff": "0.1s",
            "maxBackoff": "2s",
            "backoffMultiplier": 2,
            "retryableStatusCodes": ["UNAVAILABLE"],
        },
    }]
})

SENTENCES = [
    "A man is playing a guitar.",
    "A man is playing a flute.",
    "A woman is slicing an onion.",
    "The cat sleeps on the sofa.",
    "Two dogs run on the beach.",
    "It is raining in the city.",
    "A child is reading a book.",
    "The stock market fell sharply today.",
]


def generate_stubs(out_dir):
    """protoc --python_out/--grpc_python_out for proto/maskserve/v1/*.proto."""
    plugin = shutil.which("grpc_python_plugin") or "/usr/bin/grpc_python_plugin"
    protos = sorted(os.path.join("maskserve", "v1", f)
                    for f in os.listdir(os.path.join(PROTO_DIR, "maskserve", "v1"))
                    if f.endswith(".proto"))
    subprocess.run(["protoc", "-I", PROTO_DIR, f"--python_out={out_dir}",
                    f"--grpc_python_out={out_dir}",
                    f"--plugin=protoc-gen-grpc_python={plugin}"] + protos, check=True)


def make_channel(target, args):
    options = [("grpc.service_config", SERVICE_CONFIG), ("grpc.enable_retries", 1),
               # Embeddings of large batches exceed gRPC's 4 MiB default.
               ("grpc.max_receive_message_length", 64 << 20),
               ("grpc.max_send_message_length", 64 << 20)]
    if args.tls or args.tls_ca:
        root = open(args.tls_ca, "rb").read() if args.tls_ca else None
        cert = open(args.tls_cert, "rb").read() if args.tls_cert else None
        key = open(args.tls_key, "rb").read() if args.tls_key else None
        creds = grpc.ssl_channel_credentials(root, key, cert)
        if args.tls_server_name:
            options.append(("grpc.ssl_target_name_override", args.tls_server_name))
        return grpc.secure_channel(target, creds, options=options)
    return grpc.insecure_channel(target, options=options)


def cosine(a, b):
    dot = sum(x * y for x, y in zip(a, b))
    na = math.sqrt(sum(x * x for x in a))
    nb = math.sqrt(sum(y * y for y in b))
    return dot / (na * nb) if na and nb else 0.0


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--target", default="localhost:50051")
    p.add_argument("--stubs", help="directory with pre-generated stubs (default: generate now)")
    p.add_argument("--embed-model", help="model for embeddings (default: first READY embedder)")
    p.add_argument("--generate-model", help="model for generation (default: first READY generator)")
    p.add_argument("--prompt", default="Once upon a time")
    p.add_argument("--max-new-tokens", type=int, default=16)
    p.add_argument("--timeout", type=float, default=60, help="deadline per call, seconds")
    p.add_argument("--json", action="store_true", help="print a JSON summary")
    p.add_argument("--tls", action="store_true")
    p.add_argument("--tls-ca")
    p.add_argument("--tls-cert")
    p.add_argument("--tls-key")
    p.add_argument("--tls-server-name")
    args = p.parse_args()

    tmp = None
    stubs = args.stubs
    if not stubs:
        tmp = tempfile.mkdtemp(prefix="maskserve-py-")
        generate_stubs(tmp)
        stubs = tmp
    sys.path.insert(0, stubs)
    try:
        return run(args)
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)


def run(args):
    from maskserve.v1 import (common_pb2, embedding_pb2, embedding_pb2_grpc, generation_pb2,
                              generation_pb2_grpc, models_pb2, models_pb2_grpc)

    log = (lambda *a: print(*a, file=sys.stderr)) if args.json else print
    summary = {}
    with make_channel(args.target, args) as channel:
        models = models_pb2_grpc.ModelsStub(channel)
        embedding = embedding_pb2_grpc.EmbeddingStub(channel)
        generation = generation_pb2_grpc.GenerationStub(channel)

        # wait_for_ready: queue the first call until the channel connects
        # instead of failing at once while the server starts.
        listed = models.ListModels(models_pb2.ListModelsRequest(), timeout=args.timeout,
                                   wait_for_ready=True).models
        summary["models"] = [{"name": m.name, "state": models_pb2.ModelState.Name(m.state),
                              "tasks": [models_pb2.Task.Name(t) for t in m.tasks]}
                             for m in listed]
        for m in listed:
            log(f"model {m.name}: {models_pb2.ModelState.Name(m.state)} {m.architecture} "
                f"hidden={m.hidden_size}")
        ready = [m for m in listed if m.state == models_pb2.MODEL_STATE_READY]
        embed_model = args.embed_model or next(
            (m.name for m in ready if models_pb2.TASK_EMBED in m.tasks), None)
        gen_model = args.generate_model or next(
            (m.name for m in ready if models_pb2.TASK_GENERATE in m.tasks), None)

        if embed_model:
            # Embed: one vector per text.
            r = embedding.Embed(embedding_pb2.EmbedRequest(
                model=embed_model, texts=SENTENCES[:3], pooling=common_pb2.POOLING_MEAN,
                normalize=True), timeout=args.timeout)
            vecs = [list(e.values) for e in r.embeddings]
            sims = [cosine(vecs[0], vecs[1]), cosine(vecs[0], vecs[2])]
            log(f"embed {embed_model}: {len(vecs)} x {r.dimensions}; "
                f"cos(0,1)={sims[0]:.4f} cos(0,2)={sims[1]:.4f}")
            summary["embed"] = {"model": embed_model, "count": len(vecs),
                                "dimensions": r.dimensions,
                                "norms": [math.sqrt(sum(x * x for x in v)) for v in vecs],
                                "cosines": sims}

            # BERT-whitening: stream sentences in batches (client streaming);
            # the first message names the model, profile and parameters.
            profile = "python-example"
            k = 4

            def fit_messages():
                yield embedding_pb2.FitWhiteningRequest(model=embed_model, profile=profile, k=k,
                                                        texts=SENTENCES[:4])
                yield embedding_pb2.FitWhiteningRequest(texts=SENTENCES[4:])

            prof = embedding.FitWhitening(fit_messages(), timeout=args.timeout)
            w = embedding.Embed(embedding_pb2.EmbedRequest(
                model=embed_model, texts=SENTENCES[:2], whitening_profile=profile),
                timeout=args.timeout)
            log(f"whiten {embed_model}/{profile}: fitted on {prof.num_samples} sentences, "
                f"dim {prof.dim} -> k {prof.k}; whitened embed has {w.dimensions} dimensions")
            listed_profiles = [s.name for s in embedding.ListWhitening(
                embedding_pb2.ListWhiteningRequest(model=embed_model),
                timeout=args.timeout).profiles]
            embedding.DeleteWhitening(embedding_pb2.DeleteWhiteningRequest(
                model=embed_model, profile=profile), timeout=args.timeout)
            summary["whiten"] = {"profile": profile, "num_samples": prof.num_samples,
                                 "dim": prof.dim, "k": prof.k, "dimensions": w.dimensions,
                                 "listed": profile in listed_profiles}

        request = generation_pb2.GenerateRequest(
            model=gen_model or embed_model or "", prompt=args.prompt,
            max_new_tokens=args.max_new_tokens, strategy=generation_pb2.STRATEGY_GREEDY)
        try:
            if not gen_model:
                raise LookupError("no READY model with TASK_GENERATE")
            g = generation.Generate(request, timeout=args.timeout)
            text = g.sequences[0].text
            log(f"generate {gen_model}: {args.prompt!r} -> {text!r} "
                f"({g.usage.completion_tokens} tokens, "
                f"{g.timing.tokens_per_second:.1f} tokens/s)")
            # Server streaming: text deltas as they are decoded.
            pieces, finish = [], None
            for msg in generation.GenerateStream(request, timeout=args.timeout):
                pieces.append(msg.text)
                if msg.finish_reason:
                    finish = generation_pb2.FinishReason.Name(msg.finish_reason)
            log(f"stream {gen_model}: {len(pieces)} messages, finish={finish}")
            summary["generate"] = {"model": gen_model, "text": text,
                                   "completion_tokens": g.usage.completion_tokens,
                                   "stream_text": "".join(pieces), "stream_messages": len(pieces),
                                   "stream_finish": finish}
        except LookupError as e:
            # Still show what the server answers: a gRPC status, not a crash.
            code = None
            if request.model:
                try:
                    generation.Generate(request, timeout=args.timeout)
                except grpc.RpcError as err:
                    code = err.code().name
            log(f"generate: skipped ({e}; Generate on {request.model!r} -> {code})")
            summary["generate"] = {"skipped": str(e), "code": code}
        except grpc.RpcError as err:
            if err.code() != grpc.StatusCode.UNIMPLEMENTED:
                raise
            log(f"generate: skipped (server: UNIMPLEMENTED: {err.details()})")
            summary["generate"] = {"skipped": err.details(), "code": err.code().name}

    if args.json:
        print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except grpc.RpcError as e:
        print(f"error: {e.code().name}: {e.details()}", file=sys.stderr)
        sys.exit(2)
