"""The real maskserve binary on loopback: health, reflection, ListModels from
Python, the metrics endpoint checked by promtool, and graceful SIGTERM."""

import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import unittest

import harness


class ServerLifecycleTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        harness.generate_stubs()

    def test_health_reflection_models_metrics(self):
        import grpc
        from maskserve.v1 import models_pb2, models_pb2_grpc
        import reflection_client_pb2 as rpb
        import reflection_client_pb2_grpc as rgrpc

        with harness.ServerProcess() as srv:
            srv.wait_serving("")
            srv.wait_serving("maskserve.v1.Models")
            line = srv.wait_for_log("event=listening")
            self.assertIn(f"127.0.0.1:{srv.port}", line)

            with srv.channel() as ch:
                # Reflection lists our three services plus health.
                refl = rgrpc.ServerReflectionStub(ch)
                resp = next(iter(refl.ServerReflectionInfo(
                    iter([rpb.ServerReflectionRequest(list_services="*")]), timeout=10)))
                names = {s.name for s in resp.list_services_response.service}
                for want in ("maskserve.v1.Models", "maskserve.v1.Embedding",
                             "maskserve.v1.Generation", "grpc.health.v1.Health"):
                    self.assertIn(want, names)

                # The demo model is listed and READY.
                stub = models_pb2_grpc.ModelsStub(ch)
                models = stub.ListModels(models_pb2.ListModelsRequest(), timeout=10).models
                self.assertEqual([m.name for m in models], ["demo"])
                demo = models[0]
                self.assertEqual(demo.state, models_pb2.MODEL_STATE_READY)
                self.assertEqual(demo.architecture, "bert")
                self.assertGreater(demo.hidden_size, 0)
                self.assertGreater(demo.vocab_size, 0)
                self.assertIn(models_pb2.TASK_EMBED, demo.tasks)

                # Unknown model: NOT_FOUND naming it; request id echoed back.
                call = stub.GetModel.with_call(models_pb2.GetModelRequest(name="demo"),
                                               metadata=[("x-request-id", "test-req-42")],
                                               timeout=10)
                self.assertIn(("x-request-id", "test-req-42"), call[1].initial_metadata())
                with self.assertRaises(grpc.RpcError) as cm:
                    stub.GetModel(models_pb2.GetModelRequest(name="nope"), timeout=10)
                self.assertEqual(cm.exception.code(), grpc.StatusCode.NOT_FOUND)
                self.assertIn("nope", cm.exception.details())

            srv.wait_for_log("request_id=test-req-42")

            # Metrics endpoint: probes and a scrape that promtool accepts.
            self.assertEqual(srv.http_get("/healthz")[0], 200)
            self.assertEqual(srv.http_get("/readyz")[0], 200)
            status, text = srv.http_get("/metrics")
            self.assertEqual(status, 200)
            self.assertIn('maskserve_requests_total{', text)
            self.assertIn('method="ListModels"', text)
            self.assertIn('maskserve_request_duration_seconds_bucket{', text)
            self.assertIn('maskserve_model_ready{model="demo"} 1', text)
            self.assertIn('maskserve_build_info{version="', text)
            self.assertIn("process_resident_memory_bytes", text)
            self.assertIn("process_cpu_seconds_total", text)
            promtool = shutil.which("promtool")
            if promtool is None:
                self.skipTest("promtool not installed (Debian package prometheus)")
            check = subprocess.run([promtool, "check", "metrics"], input=text, text=True,
                                   capture_output=True)
            self.assertEqual(check.returncode, 0, check.stdout + check.stderr)

    def test_sigterm_drains_inflight_request(self):
        import grpc
        from maskserve.v1 import embedding_pb2, embedding_pb2_grpc

        with harness.ServerProcess(args=["--log_level=debug", "--shutdown_grace_s=60",
                                         "--max_tokens_per_request=100000000"]) as srv:
            srv.wait_serving("")
            # A request big enough to be in flight for a while.
            text = "The quick brown fox jumps over the lazy dog, again and again. " * 1000
            req = embedding_pb2.TokenizeRequest(model="demo", texts=[text] * 100)
            result = {}

            def call():
                with srv.channel() as ch:
                    stub = embedding_pb2_grpc.EmbeddingStub(ch)
                    try:
                        result["resp"] = stub.Tokenize(req, timeout=120)
                    except grpc.RpcError as e:
                        result["err"] = e

            t = threading.Thread(target=call)
            t.start()
            srv.wait_for_log("method=Tokenize", timeout=60)
            srv.terminate(signal.SIGTERM)
            t.join(timeout=120)
            self.assertFalse(t.is_alive())
            self.assertNotIn("err", result, str(result.get("err")))
            self.assertEqual(len(result["resp"].results), 100)
            self.assertGreater(len(result["resp"].results[0].ids), 1000)
            self.assertEqual(srv.wait_exit(timeout=60), 0)
            srv.wait_for_log("event=shutdown_done")

    def test_bad_flags_exit_with_message(self):
        r = subprocess.run([harness.SERVER_BIN, "--port=70000"], capture_output=True, text=True,
                           timeout=30)
        self.assertEqual(r.returncode, 2)
        self.assertIn("--port", r.stderr)
        r = subprocess.run([harness.SERVER_BIN, "--model=bad name=/x"], capture_output=True,
                           text=True, timeout=30)
        self.assertEqual(r.returncode, 2)
        self.assertIn("model name", r.stderr)

    def test_failed_model_does_not_block_others(self):
        from maskserve.v1 import models_pb2, models_pb2_grpc
        missing = tempfile.mkdtemp(prefix="maskserve-missing-")
        os.rmdir(missing)
        data_dir = tempfile.mkdtemp(prefix="maskserve-data-")
        try:
            # Generate the demo model first, then serve it next to a broken one.
            with harness.ServerProcess(data_dir=data_dir) as srv:
                srv.wait_serving("")
                srv.terminate()
                self.assertEqual(srv.wait_exit(), 0)
            demo = os.path.join(data_dir, "demo-model")
            with harness.ServerProcess(args=[f"--model=good={demo}", f"--model=broken={missing}"],
                                       data_dir=data_dir) as srv:
                srv.wait_serving("")
                with srv.channel() as ch:
                    stub = models_pb2_grpc.ModelsStub(ch)
                    models = {m.name: m for m in
                              stub.ListModels(models_pb2.ListModelsRequest(), timeout=10).models}
                self.assertEqual(models["good"].state, models_pb2.MODEL_STATE_READY)
                self.assertEqual(models["broken"].state, models_pb2.MODEL_STATE_FAILED)
                self.assertIn(missing, models["broken"].error)
        finally:
            shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    harness.run_tests()
