"""A real Prometheus (Debian's `prometheus` binary) scrapes a running
maskserve on loopback, with deploy/prometheus/prometheus.yml as its config
(only the target and the interval changed), while Embed traffic runs.
Prometheus' HTTP API must then return maskserve_requests_total for Embed
with the server's own labels (service, method, code, not renamed by target
labels) plus job/instance, a finite latency quantile from the
histogram, and every query of the Grafana dashboard must evaluate (and
return data where the traffic produced its metrics). Bounded in time; both
processes are always cleaned up."""

import json
import math
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import unittest
import urllib.error
import urllib.parse
import urllib.request

import harness

DEADLINE_S = 90


def prometheus_binary():
    return shutil.which("prometheus") or (
        "/usr/bin/prometheus" if os.path.exists("/usr/bin/prometheus") else None)


class Prometheus:
    def __init__(self, config_text):
        self.dir = tempfile.mkdtemp(prefix="maskserve-prom-")
        self.port = harness.free_port()
        cfg = os.path.join(self.dir, "prometheus.yml")
        with open(cfg, "w") as f:
            f.write(config_text)
        self.log = open(os.path.join(self.dir, "prometheus.log"), "w+")
        self.proc = subprocess.Popen(
            [prometheus_binary(), f"--config.file={cfg}",
             f"--storage.tsdb.path={os.path.join(self.dir, 'data')}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"],
            stdout=self.log, stderr=subprocess.STDOUT)

    def url(self, path, **params):
        q = ("?" + urllib.parse.urlencode(params)) if params else ""
        return f"http://127.0.0.1:{self.port}{path}{q}"

    def get_json(self, path, **params):
        try:
            with urllib.request.urlopen(self.url(path, **params), timeout=5) as r:
                return json.loads(r.read())
        except urllib.error.HTTPError as e:
            return json.loads(e.read())

    def wait_ready(self, deadline):
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError("prometheus exited:\n" + self.logs())
            try:
                with urllib.request.urlopen(self.url("/-/ready"), timeout=2) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError):
                pass
            time.sleep(0.2)
        raise AssertionError("prometheus not ready:\n" + self.logs())

    def query(self, expr):
        return self.get_json("/api/v1/query", query=expr)

    def logs(self):
        self.log.flush()
        self.log.seek(0)
        return self.log.read()[-4000:]

    def close(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def scrape_config(metrics_port):
    """deploy/prometheus/prometheus.yml pointed at the test server, scraping
    every second; everything else (job name, path, labels) as shipped."""
    import yaml
    with open(os.path.join(harness.SOURCE_DIR, "deploy", "prometheus", "prometheus.yml")) as f:
        cfg = yaml.safe_load(f)
    cfg["global"]["scrape_interval"] = "1s"
    cfg["global"]["evaluation_interval"] = "1s"
    job = [j for j in cfg["scrape_configs"] if j["job_name"] == "maskserve"][0]
    for sc in job["static_configs"]:
        sc["targets"] = [f"127.0.0.1:{metrics_port}"]
    return yaml.safe_dump(cfg)


def dashboard_queries():
    path = os.path.join(harness.SOURCE_DIR, "deploy", "grafana", "dashboards", "maskserve.json")
    with open(path) as f:
        dash = json.load(f)
    for p in dash["panels"]:
        for t in p["targets"]:
            # Grafana's variables, as Grafana would substitute them.
            expr = t["expr"].replace("$__rate_interval", "15s").replace("$instance", ".*")
            yield p["title"], expr


@unittest.skipUnless(prometheus_binary(), "prometheus not installed (Debian package prometheus)")
class PrometheusScrapeTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        try:
            import yaml  # noqa: F401
        except ImportError:
            raise unittest.SkipTest("python3-yaml not installed")
        harness.generate_stubs()

    def test_real_prometheus_scrapes_requests_and_latency(self):
        from maskserve.v1 import (common_pb2, embedding_pb2, embedding_pb2_grpc, generation_pb2,
                                  generation_pb2_grpc, models_pb2, models_pb2_grpc)
        deadline = time.time() + DEADLINE_S
        stop = threading.Event()
        sent = [0]
        args, data_dir = [], None
        stories = os.path.join(harness.SHARED_DIR, "models", "stories260K")
        if os.path.isdir(stories):
            # A small causal LM too, so generation metrics (KV cache, time to
            # first token, ...) and their dashboard panels get data.
            data_dir = tempfile.mkdtemp(prefix="maskserve-prom-data-")
            args = [f"--model=demo={data_dir}/demo-model", f"--model=stories={stories}"]
        srv_proc = harness.ServerProcess(args=args, data_dir=data_dir)
        srv_proc._own_data_dir = True
        with srv_proc as srv:
            srv.wait_serving("maskserve.v1.Embedding", timeout=60)
            with srv.channel() as ch:
                listed = models_pb2_grpc.ModelsStub(ch).ListModels(
                    models_pb2.ListModelsRequest(), timeout=30).models
            generator = next((m.name for m in listed if m.name == "stories"
                              and m.state == models_pb2.MODEL_STATE_READY), None)
            prom = Prometheus(scrape_config(srv.metrics_port))
            try:
                prom.wait_ready(deadline)

                def traffic():
                    # Steady Embed calls for as long as the test polls, so
                    # every rate() window holds increasing samples.
                    with srv.channel() as ch:
                        stub = embedding_pb2_grpc.EmbeddingStub(ch)
                        gen = generation_pb2_grpc.GenerationStub(ch)
                        i = 0
                        while not stop.is_set() and time.time() < deadline:
                            stub.Embed(embedding_pb2.EmbedRequest(
                                model="demo", texts=[f"sentence number {i}", "hello world"],
                                pooling=common_pb2.POOLING_MEAN), timeout=10)
                            if generator and i % 5 == 0:
                                gen.Generate(generation_pb2.GenerateRequest(
                                    model=generator, prompt="Once upon a time",
                                    max_new_tokens=8), timeout=30)
                            sent[0] += 1
                            i += 1
                            stop.wait(0.05)

                t = threading.Thread(target=traffic, daemon=True)
                t.start()

                instance = f"127.0.0.1:{srv.metrics_port}"
                counter = None
                quantile = None
                while time.time() < deadline:
                    r = prom.query('maskserve_requests_total{service="maskserve.v1.Embedding",'
                                   'method="Embed",code="OK"}')
                    self.assertEqual(r["status"], "success", r)
                    res = r["data"]["result"]
                    if res and float(res[0]["value"][1]) >= 10:
                        counter = res[0]
                        q = prom.query("histogram_quantile(0.9, sum by (le, service, method) "
                                       "(rate(maskserve_request_duration_seconds_bucket"
                                       '{method="Embed"}[15s])))')
                        self.assertEqual(q["status"], "success", q)
                        qres = q["data"]["result"]
                        if qres and math.isfinite(float(qres[0]["value"][1])):
                            quantile = qres[0]
                            break
                    time.sleep(0.5)
                self.assertIsNotNone(counter, "maskserve_requests_total never reached 10 in "
                                     f"Prometheus (sent {sent[0]}):\n" + prom.logs())
                self.assertIsNotNone(quantile, "no finite latency quantile:\n" + prom.logs())
                m = counter["metric"]
                self.assertEqual(m["__name__"], "maskserve_requests_total")
                self.assertEqual(m["job"], "maskserve")
                self.assertEqual(m["instance"], instance)
                self.assertEqual((m["service"], m["method"], m["code"]),
                                 ("maskserve.v1.Embedding", "Embed", "OK"))
                self.assertNotIn("exported_service", m, "a target label renamed the server's")
                self.assertEqual(quantile["metric"], {"service": "maskserve.v1.Embedding",
                                                      "method": "Embed"})
                p90 = float(quantile["value"][1])
                self.assertGreater(p90, 0)
                self.assertLess(p90, 30)

                # The target is healthy as Prometheus sees it.
                targets = prom.get_json("/api/v1/targets")["data"]["activeTargets"]
                self.assertEqual([(t["labels"]["instance"], t["health"]) for t in targets],
                                 [(instance, "up")])

                # Every dashboard query is valid PromQL over the real data;
                # those whose metrics the Embed traffic produced return data.
                _, scraped = srv.http_get("/metrics")
                present = set(re.findall(r"^(\w+?)(?:_bucket|_sum|_count)?[{ ]", scraped, re.M))
                problems = []
                with_data = []
                for title, expr in dashboard_queries():
                    r = prom.query(expr)
                    if r.get("status") != "success":
                        problems.append(f"{title}: {expr}: {r.get('error')}")
                        continue
                    names = set(re.findall(r"\b((?:maskserve|process)_\w+)", expr))
                    names = {re.sub(r"_(bucket|sum|count)$", "", n) for n in names}
                    if r["data"]["result"]:
                        with_data.append(title)
                    elif names <= present and 'code!="OK"' not in expr:
                        problems.append(f"{title}: {expr}: no data")
                print(f"dashboard queries with data: {len(set(with_data))} panels: "
                      + ", ".join(sorted(set(with_data))))
                self.assertEqual(problems, [], "\n".join(problems))
            finally:
                stop.set()
                prom.close()


if __name__ == "__main__":
    harness.run_tests()
