"""Access control and transport through the real server (demo model, so it
runs everywhere): TLS and mutual TLS for gRPC, HTTPS metrics, bearer tokens
on every RPC with scopes, health/reflection left open by flag, SIGHUP
reloading the tokens file, tokens never in the log, per-token rate and
concurrency limits and per-peer limits with their retry hint, and the
auth/limit metrics. Certificates are made with the openssl CLI at test time."""

import os
import re
import shutil
import signal
import ssl
import subprocess
import tempfile
import threading
import time
import unittest
import urllib.error
import urllib.request

import harness

ALICE = "alice-embed-token-5f1c2d3e4a5b"    # embed only, limited below
GEN = "gen-generate-token-9a8b7c6d5e4f"     # generate only
OPS = "ops-everything-token-0f1e2d3c4b5a"   # *
CAROL = "carol-reloaded-token-77aa88bb99cc"  # appears after SIGHUP
WRONG = "not-a-real-token-000000000000"
ALL_SECRETS = (ALICE, GEN, OPS, CAROL, WRONG)


def metric(text, name, labels=None):
    """Value of the sample name{labels} in Prometheus text, or None."""
    for line in text.splitlines():
        if not line.startswith(name):
            continue
        m = re.fullmatch(r"([a-z_]+)(\{[^}]*\})? (\S+)", line)
        if not m or m.group(1) != name:
            continue
        got = dict(re.findall(r'(\w+)="([^"]*)"', m.group(2) or ""))
        if got == (labels or {}):
            return float(m.group(3))
    return None


def openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_pki(d):
    """A CA, a server certificate for localhost/127.0.0.1, a client
    certificate from the CA and one from an unrelated CA."""
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    for ca in ("ca", "rogue-ca"):
        openssl("req", "-x509", *ec, "-keyout", f"{ca}.key", "-out", f"{ca}.pem", "-days", "2",
                "-subj", f"/CN=maskserve test {ca}", cwd=d)
    with open(os.path.join(d, "san.ext"), "w") as f:
        f.write("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    for name, ca, ext in (("server", "ca", ["-extfile", "san.ext"]), ("client", "ca", []),
                          ("rogue", "rogue-ca", [])):
        openssl("req", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj",
                f"/CN={name}", cwd=d)
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key",
                "-CAcreateserial", "-out", f"{name}.pem", "-days", "2", *ext, cwd=d)

    def read(n):
        with open(os.path.join(d, n), "rb") as f:
            return f.read()
    return read


class SecurityTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        harness.generate_stubs()
        # One demo model for every server here (generated once).
        cls.data_dir = tempfile.mkdtemp(prefix="maskserve-sec-data-")
        cls.dir = tempfile.mkdtemp(prefix="maskserve-sec-")

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.data_dir, ignore_errors=True)
        shutil.rmtree(cls.dir, ignore_errors=True)

    def tokens_file(self, text, name="tokens"):
        path = os.path.join(self.dir, name)
        with open(path, "w") as f:
            f.write(text)
        os.chmod(path, 0o600)
        return path

    def server(self, *args):
        return harness.ServerProcess(args=list(args), data_dir=self.data_dir)

    @staticmethod
    def md(token):
        return [("authorization", f"Bearer {token}")]

    def wait_ready(self, srv, channel, metadata=None, timeout=120):
        from maskserve.v1 import models_pb2, models_pb2_grpc
        import grpc
        deadline = time.time() + timeout
        stub = models_pb2_grpc.ModelsStub(channel)
        while True:
            self.assertIsNone(srv.proc.poll(), "\n".join(srv.log_lines))
            try:
                m = stub.GetModel(models_pb2.GetModelRequest(name="demo"), metadata=metadata,
                                  timeout=2)
                if m.state == models_pb2.MODEL_STATE_READY:
                    return
            except grpc.RpcError:
                if time.time() > deadline:
                    raise
            time.sleep(0.1)

    def test_tls_mutual_tls_and_https_metrics(self):
        import grpc
        from maskserve.v1 import models_pb2, models_pb2_grpc
        if shutil.which("openssl") is None:
            self.skipTest("openssl CLI not installed")
        pki = tempfile.mkdtemp(dir=self.dir)
        read = make_pki(pki)
        p = lambda n: os.path.join(pki, n)  # noqa: E731

        def secure(port, client=None):
            creds = grpc.ssl_channel_credentials(
                root_certificates=read("ca.pem"),
                private_key=read(f"{client}.key") if client else None,
                certificate_chain=read(f"{client}.pem") if client else None)
            return grpc.secure_channel(f"127.0.0.1:{port}", creds,
                                       options=[("grpc.ssl_target_name_override", "localhost")])

        with self.server(f"--tls_cert_file={p('server.pem')}", f"--tls_key_file={p('server.key')}",
                         "--metrics_tls") as srv:
            line = srv.wait_for_log("event=listening")
            self.assertIn("tls=on", line)
            self.assertIn("metrics=https://", line)
            with secure(srv.port) as ch:
                self.wait_ready(srv, ch)
                models = models_pb2_grpc.ModelsStub(ch).ListModels(models_pb2.ListModelsRequest(),
                                                                    timeout=10)
                self.assertEqual([m.name for m in models.models], ["demo"])
            # Plaintext gRPC gets no answer from a TLS port.
            with srv.channel() as ch:
                with self.assertRaises(grpc.RpcError) as cm:
                    models_pb2_grpc.ModelsStub(ch).ListModels(models_pb2.ListModelsRequest(),
                                                              timeout=3)
                self.assertEqual(cm.exception.code(), grpc.StatusCode.UNAVAILABLE)
            # HTTPS metrics with the CA; plain HTTP is refused.
            ctx = ssl.create_default_context(cafile=p("ca.pem"))
            with urllib.request.urlopen(f"https://localhost:{srv.metrics_port}/metrics",
                                        context=ctx, timeout=10) as r:
                self.assertEqual(r.status, 200)
                self.assertIn("maskserve_build_info", r.read().decode())
            with self.assertRaises((urllib.error.URLError, ConnectionError, OSError)):
                urllib.request.urlopen(f"http://127.0.0.1:{srv.metrics_port}/metrics", timeout=5)

        with self.server(f"--tls_cert_file={p('server.pem')}", f"--tls_key_file={p('server.key')}",
                         f"--tls_client_ca_file={p('ca.pem')}") as srv:
            self.assertIn("tls=mutual", srv.wait_for_log("event=listening"))
            with secure(srv.port, client="client") as ch:
                self.wait_ready(srv, ch)
            for client in (None, "rogue"):
                with secure(srv.port, client=client) as ch:
                    with self.assertRaises(grpc.RpcError) as cm:
                        models_pb2_grpc.ModelsStub(ch).ListModels(models_pb2.ListModelsRequest(),
                                                                  timeout=3)
                    self.assertEqual(cm.exception.code(), grpc.StatusCode.UNAVAILABLE, client)

        # Bad TLS flags fail at start-up, naming the flag.
        r = subprocess.run([harness.SERVER_BIN, f"--tls_cert_file={p('server.pem')}"],
                           capture_output=True, text=True, timeout=30)
        self.assertEqual(r.returncode, 2)
        self.assertIn("--tls_key_file", r.stderr)

    def call_every_method(self, ch, metadata):
        """Calls each maskserve RPC once with small valid-looking requests;
        returns {method: grpc.StatusCode}."""
        import grpc
        from maskserve.v1 import (embedding_pb2 as e, embedding_pb2_grpc as eg, generation_pb2 as g,
                                  generation_pb2_grpc as gg, models_pb2 as m, models_pb2_grpc as mg)
        models, emb, gen = mg.ModelsStub(ch), eg.EmbeddingStub(ch), gg.GenerationStub(ch)
        calls = {
            "ListModels": lambda: models.ListModels(m.ListModelsRequest(), metadata=metadata,
                                                    timeout=30),
            "GetModel": lambda: models.GetModel(m.GetModelRequest(name="demo"), metadata=metadata,
                                                timeout=30),
            "Embed": lambda: emb.Embed(e.EmbedRequest(model="demo", texts=["hi"]),
                                       metadata=metadata, timeout=30),
            "Tokenize": lambda: emb.Tokenize(e.TokenizeRequest(model="demo", texts=["hi"]),
                                             metadata=metadata, timeout=30),
            "Detokenize": lambda: emb.Detokenize(e.DetokenizeRequest(model="demo"),
                                                 metadata=metadata, timeout=30),
            "FitWhitening": lambda: emb.FitWhitening(iter([e.FitWhiteningRequest(
                model="demo", profile="p", texts=["a b", "c d", "e f"])]), metadata=metadata,
                timeout=30),
            "GetWhitening": lambda: emb.GetWhitening(e.GetWhiteningRequest(
                model="demo", profile="p"), metadata=metadata, timeout=30),
            "ListWhitening": lambda: emb.ListWhitening(e.ListWhiteningRequest(model="demo"),
                                                       metadata=metadata, timeout=30),
            "ImportWhitening": lambda: emb.ImportWhitening(e.ImportWhiteningRequest(),
                                                           metadata=metadata, timeout=30),
            "DeleteWhitening": lambda: emb.DeleteWhitening(e.DeleteWhiteningRequest(
                model="demo", profile="nope"), metadata=metadata, timeout=30),
            "Generate": lambda: gen.Generate(g.GenerateRequest(
                model="demo", prompt="hi", max_new_tokens=2), metadata=metadata, timeout=30),
            "GenerateStream": lambda: list(gen.GenerateStream(g.GenerateRequest(
                model="demo", prompt="hi", max_new_tokens=2), metadata=metadata, timeout=30)),
            "Paraphrase": lambda: gen.Paraphrase(g.ParaphraseRequest(
                model="demo", text="hi", num_candidates=2, max_new_tokens=2), metadata=metadata,
                timeout=30),
        }
        out = {}
        for name, fn in calls.items():
            try:
                fn()
                out[name] = grpc.StatusCode.OK
            except grpc.RpcError as err:
                out[name] = err.code()
                if metadata is None or metadata[0][1].endswith(WRONG):
                    self.assertIn("bearer token", err.details(), name)
        return out

    def test_bearer_tokens_scopes_reload_and_no_token_in_logs(self):
        import grpc
        from maskserve.v1 import models_pb2, models_pb2_grpc
        import health_client_pb2 as hpb
        import health_client_pb2_grpc as hgrpc
        import reflection_client_pb2 as rpb
        import reflection_client_pb2_grpc as rgrpc
        path = self.tokens_file(f"# test tokens\nalice {ALICE} embed\ngen {GEN} generate\n"
                                f"ops {OPS} *\n")
        with self.server(f"--auth_tokens_file={path}", "--log_level=debug") as srv:
            self.assertIn("auth=bearer", srv.wait_for_log("event=listening"))
            with srv.channel() as ch:
                self.wait_ready(srv, ch, metadata=self.md(OPS))
                # Every RPC: UNAUTHENTICATED without a token and with a wrong one.
                UN = grpc.StatusCode.UNAUTHENTICATED
                for md in (None, self.md(WRONG), [("authorization", "Basic abc")]):
                    codes = self.call_every_method(ch, md)
                    self.assertEqual(set(codes.values()), {UN}, codes)
                # Scopes: an embed token may embed, not generate or administer.
                PD = grpc.StatusCode.PERMISSION_DENIED
                codes = self.call_every_method(ch, self.md(ALICE))
                for name in ("Generate", "GenerateStream", "Paraphrase", "FitWhitening",
                             "ImportWhitening", "DeleteWhitening"):
                    self.assertEqual(codes[name], PD, name)
                for name in ("ListModels", "GetModel", "Embed", "Tokenize", "ListWhitening"):
                    self.assertEqual(codes[name], grpc.StatusCode.OK, name)
                codes = self.call_every_method(ch, self.md(GEN))
                for name in ("Generate", "GenerateStream", "Paraphrase", "Tokenize"):
                    self.assertEqual(codes[name], grpc.StatusCode.OK, name)
                for name in ("Embed", "FitWhitening", "DeleteWhitening", "GetWhitening"):
                    self.assertEqual(codes[name], PD, name)
                codes = self.call_every_method(ch, self.md(OPS))
                self.assertNotIn(UN, codes.values(), codes)
                self.assertNotIn(PD, codes.values(), codes)
                self.assertEqual(codes["FitWhitening"], grpc.StatusCode.OK)
                self.assertEqual(codes["DeleteWhitening"], grpc.StatusCode.NOT_FOUND)
                # PERMISSION_DENIED names the token and the missing scope.
                from maskserve.v1 import generation_pb2 as g, generation_pb2_grpc as gg
                with self.assertRaises(grpc.RpcError) as cm:
                    gg.GenerationStub(ch).Generate(g.GenerateRequest(model="demo", prompt="x"),
                                                   metadata=self.md(ALICE), timeout=10)
                self.assertEqual(cm.exception.details(), "token 'alice' lacks the scope "
                                 "'generate' that maskserve.v1.Generation/Generate needs")
                # Health is open by default, reflection is not.
                h = hgrpc.HealthStub(ch).Check(hpb.HealthCheckRequest(service=""), timeout=10)
                self.assertEqual(h.status, hpb.HealthCheckResponse.SERVING)
                refl = rgrpc.ServerReflectionStub(ch)
                with self.assertRaises(grpc.RpcError) as cm:
                    list(refl.ServerReflectionInfo(iter([rpb.ServerReflectionRequest(
                        list_services="*")]), timeout=10))
                self.assertEqual(cm.exception.code(), UN)
                resp = next(iter(refl.ServerReflectionInfo(iter([rpb.ServerReflectionRequest(
                    list_services="*")]), metadata=self.md(ALICE), timeout=10)))
                self.assertTrue(resp.list_services_response.service)

                # SIGHUP re-reads the file: alice is gone, carol arrives.
                self.tokens_file(f"carol {CAROL} embed\nops {OPS} *\n")
                n = len(srv.log_lines)
                srv.terminate(signal.SIGHUP)
                self.assertIn("tokens=2", srv.wait_for_log("event=auth_reloaded", after=n))
                stub = models_pb2_grpc.ModelsStub(ch)
                with self.assertRaises(grpc.RpcError) as cm:
                    stub.ListModels(models_pb2.ListModelsRequest(), metadata=self.md(ALICE),
                                    timeout=10)
                self.assertEqual(cm.exception.code(), UN)
                stub.ListModels(models_pb2.ListModelsRequest(), metadata=self.md(CAROL), timeout=10)
                # A broken file is refused and the tokens in force stay.
                self.tokens_file(f"carol {CAROL} embed,bogus\n")
                n = len(srv.log_lines)
                srv.terminate(signal.SIGHUP)
                line = srv.wait_for_log("event=auth_reload_failed", after=n)
                self.assertIn("unknown scope 'bogus'", line)
                stub.ListModels(models_pb2.ListModelsRequest(), metadata=self.md(CAROL), timeout=10)

            _, text = srv.http_get("/metrics")
            self.assertGreaterEqual(metric(text, "maskserve_auth_failures_total",
                                           {"reason": "missing_token"}), 13)
            self.assertGreaterEqual(metric(text, "maskserve_auth_failures_total",
                                           {"reason": "invalid_token"}), 26)
            self.assertGreaterEqual(metric(text, "maskserve_auth_failures_total",
                                           {"reason": "missing_scope"}), 10)
            self.assertEqual(metric(text, "maskserve_auth_tokens"), 2)
            self.assertEqual(metric(text, "maskserve_auth_reloads_total", {"result": "ok"}), 1)
            self.assertEqual(metric(text, "maskserve_auth_reloads_total", {"result": "error"}), 1)
            self.assertIn('code="Unauthenticated"', text)
            srv.terminate()
            self.assertEqual(srv.wait_exit(), 0)
        log = "\n".join(srv.log_lines)
        self.assertIn("principal=alice", log)
        self.assertIn("code=PERMISSION_DENIED", log)
        self.assertRegex(log, r"code=PERMISSION_DENIED .*principal=alice ")
        for secret in ALL_SECRETS:
            self.assertNotIn(secret, log, "a bearer token reached the log")
        self.assertIsNone(re.search(r"Bearer (?!<token>)", log))

    def test_rate_concurrency_and_peer_limits_with_retry_hint(self):
        import grpc
        from maskserve.v1 import embedding_pb2 as e, embedding_pb2_grpc as eg
        from maskserve.v1 import generation_pb2 as g, generation_pb2_grpc as gg
        path = self.tokens_file(f"slow {ALICE} embed rps=2 burst=2\n"
                                f"single {GEN} embed,generate max_concurrent=1\n"
                                f"ops {OPS} *\n")
        with self.server(f"--auth_tokens_file={path}") as srv:
            with srv.channel() as ch:
                self.wait_ready(srv, ch, metadata=self.md(OPS))
                emb, gen = eg.EmbeddingStub(ch), gg.GenerationStub(ch)
                req = e.TokenizeRequest(model="demo", texts=["hello"])
                # The burst of 2, then RESOURCE_EXHAUSTED with a retry hint.
                for _ in range(2):
                    emb.Tokenize(req, metadata=self.md(ALICE), timeout=10)
                start = time.monotonic()
                with self.assertRaises(grpc.RpcError) as cm:
                    emb.Tokenize(req, metadata=self.md(ALICE), timeout=10)
                self.assertLess(time.monotonic() - start, 1.0)
                self.assertEqual(cm.exception.code(), grpc.StatusCode.RESOURCE_EXHAUSTED)
                self.assertIn("rate limit of 2 calls/s", cm.exception.details())
                hint = dict(cm.exception.trailing_metadata()).get("retry-after-ms")
                self.assertIsNotNone(hint, cm.exception.trailing_metadata())
                self.assertTrue(1 <= int(hint) <= 500, hint)
                self.assertIn("grpc-status-details-bin", dict(cm.exception.trailing_metadata()))
                time.sleep(int(hint) / 1000 + 0.05)
                emb.Tokenize(req, metadata=self.md(ALICE), timeout=10)
                # Other tokens are not slowed down.
                for _ in range(5):
                    emb.Tokenize(req, metadata=self.md(OPS), timeout=10)

                # One call at a time for "single": a stream in flight blocks the next.
                stream = gen.GenerateStream(g.GenerateRequest(
                    model="demo", prompt="hello", max_new_tokens=400, ignore_eos=True),
                    metadata=self.md(GEN), timeout=60)
                next(stream)
                with self.assertRaises(grpc.RpcError) as cm:
                    emb.Tokenize(req, metadata=self.md(GEN), timeout=10)
                self.assertEqual(cm.exception.code(), grpc.StatusCode.RESOURCE_EXHAUSTED)
                self.assertIn("max_concurrent", cm.exception.details())
                self.assertIn("retry-after-ms", dict(cm.exception.trailing_metadata()))
                stream.cancel()
                deadline = time.time() + 10
                while True:
                    try:
                        emb.Tokenize(req, metadata=self.md(GEN), timeout=10)
                        break
                    except grpc.RpcError as err:
                        self.assertEqual(err.code(), grpc.StatusCode.RESOURCE_EXHAUSTED)
                        self.assertLess(time.time(), deadline, "slot not freed after cancel")
                        time.sleep(0.05)
            _, text = srv.http_get("/metrics")
            self.assertGreaterEqual(metric(text, "maskserve_rate_limited_total",
                                           {"principal": "slow", "limit": "rate"}), 1)
            self.assertGreaterEqual(metric(text, "maskserve_rate_limited_total",
                                           {"principal": "single", "limit": "concurrency"}), 1)

        # Without authentication the limits apply per client address.
        with self.server("--limit_rps=1", "--limit_burst=1") as srv:
            srv.wait_serving("maskserve.v1.Embedding")
            with srv.channel() as ch:
                emb = eg.EmbeddingStub(ch)
                req = e.TokenizeRequest(model="demo", texts=["hello"])
                time.sleep(1.0)  # the health polls above do not count; be sure of a full bucket
                emb.Tokenize(req, timeout=10)
                with self.assertRaises(grpc.RpcError) as cm:
                    emb.Tokenize(req, timeout=10)
                self.assertEqual(cm.exception.code(), grpc.StatusCode.RESOURCE_EXHAUSTED)
                self.assertIn("'ipv4:127.0.0.1'", cm.exception.details())
            _, text = srv.http_get("/metrics")
            self.assertGreaterEqual(metric(text, "maskserve_rate_limited_total",
                                           {"principal": "peer", "limit": "rate"}), 1)


if __name__ == "__main__":
    harness.run_tests()
