"""deploy/compose.yaml, the Grafana provisioning and dashboard, and the
README's metric table, checked against the server's code:

- compose: the maskserve service builds the top-level Dockerfile and maps
  the ports it exposes; the models/data mounts are the image's paths; its
  environment sets only MASKSERVE_<FLAG> variables of real flags;
  deploy/prometheus/prometheus.yml scrapes maskserve:<metrics port>;
  Grafana's datasource points at the Prometheus service and the dashboard
  provider at the mounted dashboard folder;
- the dashboard: every metric a panel queries is one the server registers
  (server/**/*.cc), with the right type (rate() never on a gauge, _bucket
  only of histograms), every panel uses the provisioned datasource, and the
  panels the deployment needs exist (request rate, latency percentiles,
  queue depth, batch size, tokens/s, and KV-cache use once the server has a
  KV-cache metric);
- README.md's metric table lists every registered family with its type and
  labels, and nothing that is not registered.
(The dashboard's PromQL is also evaluated by a real Prometheus in
tests/integration/test_prometheus_scrape.py.)
"""

import json
import os
import re
import sys
import unittest

import deploy_util as du

try:
    import yaml
except ImportError:
    print("SKIP: python3-yaml is not installed")
    sys.exit(77)

DEPLOY = du.src("deploy")
DASHBOARD = du.src("deploy", "grafana", "dashboards", "maskserve.json")
PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "le", "bool",
                "offset", "and", "or", "unless"}


def load_yaml(*parts):
    with open(os.path.join(DEPLOY, *parts)) as f:
        return yaml.safe_load(f)


def volume(spec):
    """(source, target) of a compose short-syntax volume ("src:/dst[:ro]");
    the source may hold ${VAR:-default} with its own colon."""
    m = re.fullmatch(r"(.*?):(/[^:]*)(?::(?:ro|rw))?", spec)
    assert m, spec
    return m.group(1), m.group(2)


def entrypoint_flags():
    text = du.read("Dockerfile")
    entry = json.loads(re.search(r"^ENTRYPOINT\s+(\[.*\])\s*$", text, re.M).group(1))
    return dict(re.fullmatch(r"--(\w+)=(.*)", a).groups() for a in entry[1:])


def dashboard_exprs():
    with open(DASHBOARD) as f:
        dash = json.load(f)
    for p in dash["panels"]:
        for t in p.get("targets", []):
            yield p, t


def metric_names(expr):
    """Metric names in a PromQL expression (label matchers and strings removed)."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    expr = re.sub(r"\{[^}]*\}", "", expr)
    expr = re.sub(r"\[[^\]]*\]", "", expr)
    expr = re.sub(r"\b(?:by|without|on|ignoring)\s*\([^)]*\)", "", expr)
    names = set()
    for m in re.finditer(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\b(\s*\()?", expr):
        word, call = m.group(1), m.group(2)
        if call or word in PROMQL_WORDS or re.fullmatch(r"\d.*", word):
            continue
        names.add(word)
    return names


class ComposeTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.compose = load_yaml("compose.yaml")
        cls.services = cls.compose["services"]
        cls.flags = entrypoint_flags()

    def test_maskserve_service(self):
        ms = self.services["maskserve"]
        ctx = os.path.normpath(os.path.join(DEPLOY, ms["build"]["context"]))
        self.assertTrue(os.path.exists(os.path.join(ctx, ms["build"]["dockerfile"])))
        self.assertEqual(ctx, os.path.normpath(du.SOURCE_DIR))
        container_ports = {p.split(":")[-1] for p in ms["ports"]}
        self.assertEqual(container_ports, {self.flags["port"], self.flags["metrics_port"]})
        targets = {volume(v)[1] for v in ms["volumes"]}
        self.assertIn("/models", targets)
        self.assertTrue(any(v.endswith(":/models:ro") for v in ms["volumes"]))
        data_dir = re.search(r"MASKSERVE_DATA_DIR=(\S+)", du.read("Dockerfile")).group(1)
        self.assertIn(data_dir, targets)
        flags = du.server_flags()
        for key in ms.get("environment", {}):
            self.assertTrue(key.startswith("MASKSERVE_"), key)
            self.assertIn(key[len("MASKSERVE_"):].lower(), flags, f"{key} is not a server flag")
        grace = float(ms["environment"].get("MASKSERVE_SHUTDOWN_GRACE_S", 30))
        stop = int(ms["stop_grace_period"].rstrip("s"))
        self.assertGreaterEqual(stop, grace + 2, "docker must wait for the drain")

    def test_prometheus_scrapes_maskserve(self):
        prom = self.services["prometheus"]
        src, dst = volume([v for v in prom["volumes"] if "prometheus.yml" in v][0])
        self.assertTrue(os.path.exists(os.path.join(DEPLOY, src)))
        self.assertIn(f"--config.file={dst}", prom["command"])
        cfg = load_yaml(*os.path.normpath(src).split(os.sep))
        job = [j for j in cfg["scrape_configs"] if j["job_name"] == "maskserve"][0]
        self.assertEqual(job.get("metrics_path", "/metrics"), "/metrics")
        targets = [t for sc in job["static_configs"] for t in sc["targets"]]
        self.assertIn(f"maskserve:{self.flags['metrics_port']}", targets)

    def test_grafana_provisioning(self):
        graf = self.services["grafana"]
        mounts = dict(volume(v) for v in graf["volumes"])
        prov = [s for s, d in mounts.items() if d == "/etc/grafana/provisioning"][0]
        ds = load_yaml(prov, "datasources", "prometheus.yaml")["datasources"][0]
        prom = self.services["prometheus"]
        listen = [a for a in prom["command"] if a.startswith("--web.listen-address=")][0]
        self.assertEqual(ds["url"], "http://prometheus:" + listen.rsplit(":", 1)[1])
        self.assertEqual(ds["type"], "prometheus")
        provider = load_yaml(prov, "dashboards", "maskserve.yaml")["providers"][0]
        dash_dir = [s for s, d in mounts.items() if d == provider["options"]["path"]][0]
        self.assertEqual(os.path.normpath(os.path.join(DEPLOY, dash_dir)),
                         os.path.dirname(DASHBOARD))
        for _, t in dashboard_exprs():
            self.assertEqual(t["datasource"]["uid"], ds["uid"])


class DashboardTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.metrics = du.registered_metrics()
        with open(DASHBOARD) as f:
            cls.dash = json.load(f)

    def test_every_queried_metric_is_exported_with_its_type(self):
        problems = []
        n = 0
        for p, t in dashboard_exprs():
            expr = t["expr"]
            for name in metric_names(expr):
                n += 1
                base = re.sub(r"_(bucket|sum|count)$", "", name)
                if name in self.metrics:
                    kind = self.metrics[name]
                    if kind == "histogram":
                        problems.append(f"{p['title']}: query {name}_bucket/_sum/_count, not {name}")
                    if kind == "gauge" and re.search(r"\b(rate|irate|increase)\(\s*" + name + r"\b", expr):
                        problems.append(f"{p['title']}: rate() of gauge {name}")
                    if kind == "counter" and not re.search(r"\b(rate|irate|increase)\(\s*" + name + r"\b", expr):
                        problems.append(f"{p['title']}: counter {name} without rate()")
                elif base != name and self.metrics.get(base) == "histogram":
                    pass
                else:
                    problems.append(f"{p['title']}: {name} is not a metric the server registers")
        self.assertGreater(n, 10)
        self.assertEqual(problems, [], "\n".join(problems))

    def test_required_panels(self):
        queried = set()
        for _, t in dashboard_exprs():
            queried |= {re.sub(r"_(bucket|sum|count)$", "", m) for m in metric_names(t["expr"])}
        for need in ("maskserve_requests_total", "maskserve_request_duration_seconds",
                     "maskserve_queue_depth", "maskserve_batch_size", "maskserve_tokens_total"):
            self.assertIn(need, queried)
        quantiles = [t["expr"] for _, t in dashboard_exprs()
                     if "histogram_quantile" in t["expr"] and "request_duration" in t["expr"]]
        self.assertGreaterEqual(len(quantiles), 3, "latency percentiles p50/p90/p99")
        kv = [m for m in self.metrics if "kv_cache" in m]
        if kv:
            self.assertTrue(queried & set(kv), f"the server exports {kv}: add a KV-cache panel")
        else:
            print("note: the server registers no KV-cache metric yet; no KV-cache panel")

    def test_dashboard_structure(self):
        ids = [p["id"] for p in self.dash["panels"]]
        self.assertEqual(len(ids), len(set(ids)))
        self.assertEqual(self.dash["uid"], "maskserve")
        var = self.dash["templating"]["list"][0]
        self.assertEqual(var["name"], "instance")
        self.assertTrue(metric_names(var["query"]["query"].replace("label_values", "f"))
                        <= set(self.metrics) | {"instance"})


class ReadmeMetricsTest(unittest.TestCase):
    def test_readme_lists_every_metric(self):
        text = du.read("README.md")
        section = text.split("## Metrics", 1)[1].split("\n## ", 1)[0]
        rows = {}
        for line in section.split("\n"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if len(cells) >= 4 and cells[0].startswith("`"):
                for name in re.findall(r"`(\w+)`", cells[0]):
                    labels = re.findall(r"`(\w+)`", cells[2])
                    rows[name] = (cells[1], labels)
        metrics = du.registered_metrics(with_labels=True)
        problems = []
        for name, (kind, labels) in sorted(metrics.items()):
            if name not in rows:
                problems.append(f"README lacks {name} ({kind})")
                continue
            if rows[name][0] != kind:
                problems.append(f"README says {name} is a {rows[name][0]}, the code a {kind}")
            if labels is not None and rows[name][1] != labels:
                problems.append(f"README labels of {name}: {rows[name][1]}, code: {labels}")
        for name in rows:
            if name not in metrics:
                problems.append(f"README lists {name}, which the server does not register")
        self.assertEqual(problems, [], "\n".join(problems))


if __name__ == "__main__":
    du.run_tests()
