"""Offline checks of deploy/k8s/ and the Helm chart deploy/helm/maskserve.

No cluster, kubectl, kubeconform or helm is installable on these machines
(none is a Debian package), so:
- every manifest is parsed and its structure checked against the subset of
  the Kubernetes API it uses (known apiVersion/kind, required fields, no
  unknown keys in the parts that are easy to misspell);
- the numbers that must agree do: server flags (--port, --metrics_port, the
  --config JSON keys, which must be flags the server knows), container
  ports, gRPC probe ports, Service target ports, the ServiceMonitor port,
  prometheus.io/port, and the shutdown timing (preStop + the server's
  shutdown_grace_s fit in terminationGracePeriodSeconds); CPU requests ==
  limits in whole cores, which the server's thread sizing honours;
- the chart is rendered by tests/deploy/helm_lite.py, a strict renderer of a
  documented Go-template subset (anything else is an error), and the result
  must equal deploy/k8s/ object for object, once with default values and once
  with the ServiceMonitor and queue-depth autoscaling turned on. Where a real
  `helm` is on PATH it is used as well: `helm lint` and `helm template` must
  agree with the subset renderer.
"""

import copy
import json
import os
import re
import shutil
import subprocess
import sys
import unittest

import deploy_util as du

try:
    import yaml
except ImportError:  # Debian python3-yaml, installed by scripts/install-deps.sh
    print("SKIP: python3-yaml is not installed")
    sys.exit(77)

import helm_lite

K8S = du.src("deploy", "k8s")
CHART = du.src("deploy", "helm", "maskserve")
# Metadata only Helm adds; dropped before comparing with deploy/k8s.
HELM_ONLY_LABELS = ("helm.sh/chart", "app.kubernetes.io/managed-by", "app.kubernetes.io/version")
# Files in deploy/k8s that are not in kustomization.yaml on purpose.
K8S_OPTIONAL = {"servicemonitor.yaml", "hpa-queue-depth.yaml", "prometheus-adapter-rules.yaml"}

# The parts of the Kubernetes API these manifests use: allowed keys (a typo
# such as `readinesProbe` must fail) and required ones.
KNOWN_KINDS = {
    ("v1", "ConfigMap"), ("v1", "Service"), ("v1", "PersistentVolumeClaim"),
    ("apps/v1", "Deployment"), ("autoscaling/v2", "HorizontalPodAutoscaler"),
    ("policy/v1", "PodDisruptionBudget"), ("monitoring.coreos.com/v1", "ServiceMonitor"),
}
SCHEMA = {
    "metadata": {"name", "namespace", "labels", "annotations"},
    "DeploymentSpec": {"replicas", "revisionHistoryLimit", "selector", "strategy", "template",
                       "minReadySeconds", "progressDeadlineSeconds"},
    "PodSpec": {"terminationGracePeriodSeconds", "securityContext", "topologySpreadConstraints",
                "containers", "volumes", "affinity", "nodeSelector", "tolerations",
                "serviceAccountName", "imagePullSecrets", "initContainers", "priorityClassName"},
    "Container": {"name", "image", "imagePullPolicy", "command", "args", "ports", "env", "envFrom",
                  "startupProbe", "readinessProbe", "livenessProbe", "lifecycle", "resources",
                  "securityContext", "volumeMounts", "workingDir"},
    "Probe": {"grpc", "httpGet", "tcpSocket", "exec", "initialDelaySeconds", "periodSeconds",
              "timeoutSeconds", "successThreshold", "failureThreshold",
              "terminationGracePeriodSeconds"},
    "GRPCAction": {"port", "service"},
    "ContainerPort": {"name", "containerPort", "protocol", "hostPort", "hostIP"},
    "ServiceSpec": {"type", "clusterIP", "selector", "ports", "publishNotReadyAddresses",
                    "sessionAffinity", "internalTrafficPolicy"},
    "ServicePort": {"name", "port", "targetPort", "protocol", "appProtocol", "nodePort"},
    "HPASpec": {"scaleTargetRef", "minReplicas", "maxReplicas", "metrics", "behavior"},
    "PDBSpec": {"minAvailable", "maxUnavailable", "selector", "unhealthyPodEvictionPolicy"},
    "PVCSpec": {"accessModes", "resources", "storageClassName", "volumeMode", "selector"},
    "ServiceMonitorSpec": {"selector", "endpoints", "namespaceSelector", "jobLabel"},
    "Endpoint": {"port", "path", "interval", "scrapeTimeout", "scheme", "relabelings"},
}


def load_yaml_docs(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


def check_keys(test, obj, schema, where):
    test.assertIsInstance(obj, dict, where)
    unknown = set(obj) - SCHEMA[schema]
    test.assertFalse(unknown, f"{where}: unknown {schema} keys {sorted(unknown)}")


def normalize(obj):
    """Drops Helm-only metadata and parses JSON ConfigMap values."""
    obj = copy.deepcopy(obj)

    def strip(meta):
        if meta and "labels" in meta:
            for k in HELM_ONLY_LABELS:
                meta["labels"].pop(k, None)

    strip(obj.get("metadata"))
    tmpl = obj.get("spec", {}).get("template") if isinstance(obj.get("spec"), dict) else None
    if tmpl:
        strip(tmpl.get("metadata"))
    if obj.get("kind") == "ConfigMap":
        obj["data"] = {k: json.loads(v) if k.endswith(".json") else v
                       for k, v in obj.get("data", {}).items()}
    return obj


def by_key(objs):
    out = {}
    for o in objs:
        key = (o["kind"], o["metadata"]["name"])
        assert key not in out, f"duplicate object {key}"
        out[key] = o
    return out


def k8s_objects(files):
    objs = []
    for f in files:
        objs += load_yaml_docs(os.path.join(K8S, f))
    return objs


def kustomization_resources():
    with open(os.path.join(K8S, "kustomization.yaml")) as f:
        return yaml.safe_load(f)["resources"]


def cpu_cores(q):
    q = str(q)
    return int(q[:-1]) / 1000 if q.endswith("m") else float(q)


class ManifestChecks:
    """Semantic checks of one set of objects (deploy/k8s or a chart render)."""

    def check_set(self, objs, label):
        objs = by_key(objs)
        kinds = {k for k, _ in objs}
        for (kind, name), o in objs.items():
            where = f"{label}: {kind}/{name}"
            self.assertIn((o.get("apiVersion"), kind), KNOWN_KINDS, where)
            check_keys(self, o["metadata"], "metadata", where)
            self.assertRegex(name, r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", where)
        for need in ("Deployment", "Service", "ConfigMap", "PodDisruptionBudget"):
            self.assertIn(need, kinds, label)

        deps = [o for (k, _), o in objs.items() if k == "Deployment"]
        self.assertEqual(len(deps), 1)
        dep = deps[0]
        where = f"{label}: Deployment"
        spec = dep["spec"]
        check_keys(self, spec, "DeploymentSpec", where)
        # Either an HPA owns the replica count or the Deployment sets it;
        # both would fight (every apply resets what the HPA chose).
        has_hpa = "HorizontalPodAutoscaler" in kinds
        self.assertNotEqual(has_hpa, "replicas" in spec,
                            f"{where}: replicas must be set exactly when there is no HPA")
        pod_labels = spec["template"]["metadata"]["labels"]
        for k, v in spec["selector"]["matchLabels"].items():
            self.assertEqual(pod_labels.get(k), v, f"{where}: selector does not match the pod labels")
        pod = spec["template"]["spec"]
        check_keys(self, pod, "PodSpec", where)
        self.assertEqual(len(pod["containers"]), 1)
        c = pod["containers"][0]
        check_keys(self, c, "Container", where)

        # Server flags on the command line: known flags, and the ports.
        self.assertEqual(c["command"], ["maskserve"])
        flags = du.server_flags()
        args = {}
        for a in c["args"]:
            m = re.fullmatch(r"--(\w+)=(.*)", a)
            self.assertTrue(m, f"{where}: argument {a!r} is not --flag=value")
            self.assertIn(m.group(1), flags, f"{where}: unknown server flag {a}")
            args[m.group(1)] = m.group(2)
        grpc_port, metrics_port = int(args["port"]), int(args["metrics_port"])
        self.assertNotEqual(grpc_port, metrics_port)

        ports = {}
        for p in c["ports"]:
            check_keys(self, p, "ContainerPort", where)
            ports[p["name"]] = p["containerPort"]
        self.assertEqual(ports, {"grpc": grpc_port, "metrics": metrics_port}, where)

        # Native gRPC probes on the gRPC port; startup allows for loading.
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            pr = c[probe]
            check_keys(self, pr, "Probe", f"{where}.{probe}")
            self.assertIn("grpc", pr, f"{where}.{probe} must be a native gRPC probe")
            check_keys(self, pr["grpc"], "GRPCAction", f"{where}.{probe}")
            self.assertEqual(pr["grpc"]["port"], grpc_port, f"{where}.{probe} port")
        st = c["startupProbe"]
        self.assertGreaterEqual(st["periodSeconds"] * st["failureThreshold"], 300,
                                "startup probe must allow minutes of model loading")

        # The --config file comes from the ConfigMap; its keys are flags the
        # server accepts in a config file, with values of the flag's type.
        mounts = {m["name"]: m for m in c["volumeMounts"]}
        vols = {v["name"]: v for v in pod["volumes"]}
        for name in mounts:
            self.assertIn(name, vols, f"{where}: mount of undefined volume {name}")
        cfg_path = args["config"]
        cfg_mount = [m for m in c["volumeMounts"] if cfg_path.startswith(m["mountPath"] + "/")]
        self.assertEqual(len(cfg_mount), 1, f"{where}: --config is not on a mounted volume")
        cm_name = vols[cfg_mount[0]["name"]]["configMap"]["name"]
        cm = objs[("ConfigMap", cm_name)]
        config = json.loads(cm["data"][os.path.basename(cfg_path)])
        keys = du.config_file_keys()
        types = du.server_flags()
        for k, v in config.items():
            self.assertIn(k, keys, f"{label}: config.json key {k!r} is not a server flag")
            t = types[k]
            if t in ("int", "int64_t"):
                self.assertIsInstance(v, int, f"config.json {k}")
            elif t == "double":
                self.assertIsInstance(v, (int, float), f"config.json {k}")
            elif t == "bool":
                self.assertIsInstance(v, bool, f"config.json {k}")
            elif t.startswith("std::vector"):
                self.assertIsInstance(v, list, f"config.json {k}")
            else:
                self.assertIsInstance(v, str, f"config.json {k}")
        for k in ("port", "metrics_port", "bind"):
            self.assertNotIn(k, config, "ports stay on the command line, next to the probes")
        for m in config.get("model", []):
            path = m.split("=", 1)[-1]
            self.assertTrue(path.startswith(mounts["models"]["mountPath"] + "/"),
                            f"model {m} is not under the models mount")
        self.assertTrue(mounts["models"].get("readOnly"))
        self.assertEqual(args["data_dir"], mounts["data"]["mountPath"])

        # Shutdown: preStop sleep + drain + gRPC's 1 s close + margin.
        grace = float(config.get("shutdown_grace_s", 30))
        pre = c["lifecycle"]["preStop"]["exec"]["command"]
        self.assertEqual(pre[0], "sleep")
        sleep_s = int(pre[1])
        tgps = pod["terminationGracePeriodSeconds"]
        self.assertGreaterEqual(tgps, sleep_s + grace + 2,
                                f"{where}: terminationGracePeriodSeconds {tgps} < preStop {sleep_s}"
                                f" + shutdown_grace_s {grace} + 2")

        # CPU: requests == limits in whole cores (the server reads the quota).
        res = c["resources"]
        req, lim = cpu_cores(res["requests"]["cpu"]), cpu_cores(res["limits"]["cpu"])
        self.assertEqual(req, lim, f"{where}: cpu requests must equal limits")
        self.assertEqual(lim, int(lim), f"{where}: cpu limit must be whole cores")
        self.assertEqual(res["requests"]["memory"], res["limits"]["memory"])

        # Image user and paths agree with the Dockerfile.
        dockerfile = du.read("Dockerfile")
        uid = re.search(r"--uid (\d+)", dockerfile).group(1)
        self.assertEqual(str(pod["securityContext"]["runAsUser"]), uid)
        self.assertIn("/usr/local/bin/maskserve", dockerfile)
        self.assertIn("mkdir -p " + mounts["models"]["mountPath"], dockerfile)
        self.assertIn("MASKSERVE_DATA_DIR=" + mounts["data"]["mountPath"], dockerfile)
        self.assertTrue(c["securityContext"]["readOnlyRootFilesystem"])

        ann = spec["template"]["metadata"].get("annotations", {})
        if ann:
            self.assertEqual(ann["prometheus.io/scrape"], "true")
            self.assertEqual(ann["prometheus.io/port"], str(metrics_port))
            self.assertEqual(ann["prometheus.io/path"], "/metrics")

        claim = vols["models"].get("persistentVolumeClaim")
        if claim and ("PersistentVolumeClaim", claim["claimName"]) in objs:
            pvc = objs[("PersistentVolumeClaim", claim["claimName"])]
            check_keys(self, pvc["spec"], "PVCSpec", "PVC")
            self.assertIn("ReadOnlyMany", pvc["spec"]["accessModes"])

        # Services: select the pods, target named container ports.
        services = [o for (k, _), o in objs.items() if k == "Service"]
        headless = [s for s in services if s["spec"].get("clusterIP") == "None"]
        cluster = [s for s in services if s["spec"].get("clusterIP") != "None"]
        self.assertEqual(len(headless), 1, "one headless Service for client-side balancing")
        self.assertEqual(len(cluster), 1, "one ClusterIP Service")
        for s in services:
            w = f"{label}: Service/{s['metadata']['name']}"
            check_keys(self, s["spec"], "ServiceSpec", w)
            for k, v in s["spec"]["selector"].items():
                self.assertEqual(pod_labels.get(k), v, f"{w}: selector does not match the pods")
            for p in s["spec"]["ports"]:
                check_keys(self, p, "ServicePort", w)
                self.assertIn(p["targetPort"], ports, f"{w}: unknown targetPort")
                self.assertEqual(p["name"], p["targetPort"])
                self.assertEqual(p["port"], ports[p["targetPort"]])
        self.assertEqual([p["name"] for p in headless[0]["spec"]["ports"]], ["grpc"])

        # ServiceMonitor: its port is on exactly one selected Service (no
        # double scrape through the headless Service).
        for (k, name), sm in objs.items():
            if k != "ServiceMonitor":
                continue
            check_keys(self, sm["spec"], "ServiceMonitorSpec", "ServiceMonitor")
            sel = sm["spec"]["selector"]["matchLabels"]
            matched = [s for s in services
                       if all(s["metadata"]["labels"].get(a) == b for a, b in sel.items())]
            for ep in sm["spec"]["endpoints"]:
                check_keys(self, ep, "Endpoint", "ServiceMonitor endpoint")
                with_port = [s for s in matched
                             if any(p["name"] == ep["port"] for p in s["spec"]["ports"])]
                self.assertEqual(len(with_port), 1, "ServiceMonitor port must be on one Service")
                self.assertEqual(ep["path"], "/metrics")
                if any("service" in (labels or []) for _, labels in
                       du.registered_metrics(with_labels=True).values()):
                    self.assertIn({"action": "labeldrop", "regex": "service"},
                                  ep.get("relabelings", []),
                                  "the Operator's `service` target label would rename the "
                                  "server's own `service` label")
                sport = [p for p in with_port[0]["spec"]["ports"] if p["name"] == ep["port"]][0]
                self.assertEqual(ports[sport["targetPort"]], metrics_port,
                                 "ServiceMonitor must scrape the metrics port")

        # Autoscaling and disruption budget target this Deployment.
        depname = dep["metadata"]["name"]
        for (k, name), o in objs.items():
            if k == "HorizontalPodAutoscaler":
                check_keys(self, o["spec"], "HPASpec", "HPA")
                ref = o["spec"]["scaleTargetRef"]
                self.assertEqual((ref["kind"], ref["name"]), ("Deployment", depname))
                self.assertLessEqual(o["spec"]["minReplicas"], o["spec"]["maxReplicas"])
                metrics = du.registered_metrics()
                for m in o["spec"]["metrics"]:
                    if m["type"] == "Pods":
                        mname = m["pods"]["metric"]["name"]
                        self.assertEqual(metrics.get(mname), "gauge",
                                         f"HPA metric {mname} is not a gauge the server exports")
            if k == "PodDisruptionBudget":
                check_keys(self, o["spec"], "PDBSpec", "PDB")
                for a, b in o["spec"]["selector"]["matchLabels"].items():
                    self.assertEqual(pod_labels.get(a), b)
        return objs


class K8sManifestsTest(unittest.TestCase, ManifestChecks):
    def test_every_yaml_file_parses(self):
        n = 0
        for root, _, files in os.walk(du.src("deploy")):
            for f in files:
                if f.endswith((".yaml", ".yml")) and "/templates" not in root:
                    load_yaml_docs(os.path.join(root, f))
                    n += 1
        self.assertGreater(n, 10)

    def test_kustomization_lists_every_core_file(self):
        res = kustomization_resources()
        files = {f for f in os.listdir(K8S) if f.endswith(".yaml")} - {"kustomization.yaml"}
        self.assertEqual(set(res), files - K8S_OPTIONAL)
        for f in K8S_OPTIONAL:
            self.assertIn(f, files)

    def test_core_set(self):
        self.check_set(k8s_objects(kustomization_resources()), "deploy/k8s")

    def test_with_monitoring_and_queue_depth_hpa(self):
        files = [f for f in kustomization_resources() if f != "hpa.yaml"]
        objs = k8s_objects(files + ["hpa-queue-depth.yaml", "servicemonitor.yaml"])
        got = self.check_set(objs, "deploy/k8s + optional")
        hpa = got[("HorizontalPodAutoscaler", "maskserve")]
        self.assertIn("Pods", [m["type"] for m in hpa["spec"]["metrics"]])

    def test_real_server_accepts_the_deployment_flags_and_configmap(self):
        """The Deployment's command line and the ConfigMap's JSON, given to
        the built server (ports 0, loopback, temporary paths): it must parse
        them and listen, then drain on SIGTERM and exit 0."""
        import signal
        import tempfile
        import time
        binary = os.path.join(du.BUILD_DIR, "server", "maskserve")
        if not os.path.exists(binary):
            self.skipTest(f"{binary} not built")
        objs = by_key(k8s_objects(kustomization_resources()))
        c = objs[("Deployment", "maskserve")]["spec"]["template"]["spec"]["containers"][0]
        config = objs[("ConfigMap", "maskserve-config")]["data"]["config.json"]
        tmp = tempfile.mkdtemp(prefix="maskserve-k8s-")
        try:
            with open(os.path.join(tmp, "config.json"), "w") as f:
                f.write(config)
            override = {"bind": "127.0.0.1", "port": "0", "metrics_port": "0",
                        "config": os.path.join(tmp, "config.json"),
                        "data_dir": os.path.join(tmp, "data")}
            args = []
            for a in c["args"]:
                name = a[2:].split("=", 1)[0]
                args.append(f"--{name}={override[name]}" if name in override else a)
            proc = subprocess.Popen([binary] + args, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, text=True)
            try:
                deadline = time.time() + 30
                lines = []
                while time.time() < deadline:
                    line = proc.stdout.readline()
                    if not line:
                        break
                    lines.append(line)
                    if "event=listening" in line:
                        break
                self.assertTrue(any("event=listening" in l for l in lines),
                                "server rejected the manifests' flags:\n" + "".join(lines))
                proc.send_signal(signal.SIGTERM)
                rest, _ = proc.communicate(timeout=60)
                self.assertEqual(proc.returncode, 0, "".join(lines) + rest)
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.communicate(timeout=10)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def test_prometheus_adapter_rule_names_the_hpa_metric(self):
        with open(os.path.join(K8S, "prometheus-adapter-rules.yaml")) as f:
            rules = yaml.safe_load(f)["rules"]["custom"]
        hpa = load_yaml_docs(os.path.join(K8S, "hpa-queue-depth.yaml"))[0]
        name = [m for m in hpa["spec"]["metrics"] if m["type"] == "Pods"][0]["pods"]["metric"]["name"]
        self.assertTrue(any(name in r["seriesQuery"] and r["name"]["as"] == name for r in rules))


class HelmChartTest(unittest.TestCase, ManifestChecks):
    maxDiff = None

    @classmethod
    def setUpClass(cls):
        cls.chart = helm_lite.Chart(CHART)

    def render(self, values=None):
        return [o for _, o in helm_lite.Renderer(self.chart, values=values).objects()]

    def assert_same_objects(self, rendered, expected):
        got = {k: normalize(v) for k, v in by_key(rendered).items()}
        want = {k: normalize(v) for k, v in by_key(expected).items()}
        self.assertEqual(sorted(got), sorted(want), "chart and deploy/k8s define different objects")
        for k in want:
            self.assertEqual(got[k], want[k], f"{k}: chart render differs from deploy/k8s")

    def test_chart_metadata(self):
        self.assertEqual(self.chart.meta["apiVersion"], "v2")
        self.assertEqual(self.chart.meta["name"], "maskserve")
        self.assertIn("1.24", self.chart.meta["kubeVersion"])  # native gRPC probes

    def test_defaults_equal_deploy_k8s(self):
        rendered = self.render()
        self.check_set(rendered, "helm defaults")
        self.assert_same_objects(rendered, k8s_objects(kustomization_resources()))

    def test_monitoring_and_queue_depth_equal_deploy_k8s_optional_files(self):
        values = {"metrics": {"serviceMonitor": {"enabled": True}},
                  "autoscaling": {"queueDepth": {"enabled": True}}}
        rendered = self.render(values)
        self.check_set(rendered, "helm with monitoring")
        files = [f for f in kustomization_resources() if f != "hpa.yaml"]
        self.assert_same_objects(rendered, k8s_objects(
            files + ["hpa-queue-depth.yaml", "servicemonitor.yaml"]))

    def test_custom_values_keep_everything_consistent(self):
        values = {"server": {"grpcPort": 6000, "metricsPort": 6001,
                             "config": {"shutdown_grace_s": 50}},
                  "terminationGracePeriodSeconds": 60, "replicaCount": 3,
                  "autoscaling": {"enabled": False},
                  "image": {"repository": "registry.example/maskserve", "tag": "1.2.3"},
                  "models": {"persistentVolumeClaim": {"create": False,
                                                       "existingClaim": "my-models"}},
                  "resources": {"requests": {"cpu": "8", "memory": "16Gi"},
                                "limits": {"cpu": "8", "memory": "16Gi"}}}
        rendered = self.render(values)
        objs = self.check_set(rendered, "helm custom")
        dep = objs[("Deployment", "maskserve")]
        c = dep["spec"]["template"]["spec"]["containers"][0]
        self.assertEqual(c["image"], "registry.example/maskserve:1.2.3")
        self.assertIn("--port=6000", c["args"])
        self.assertEqual(dep["spec"]["replicas"], 3)
        self.assertNotIn("PersistentVolumeClaim", {k for k, _ in objs})
        self.assertNotIn("HorizontalPodAutoscaler", {k for k, _ in objs})
        vols = {v["name"]: v for v in dep["spec"]["template"]["spec"]["volumes"]}
        self.assertEqual(vols["models"]["persistentVolumeClaim"]["claimName"], "my-models")

    def test_inconsistent_values_are_caught(self):
        # A drain longer than the grace period must fail the checks.
        bad = {"server": {"config": {"shutdown_grace_s": 60}}}
        with self.assertRaises(AssertionError):
            self.check_set(self.render(bad), "helm bad grace")
        with self.assertRaises(helm_lite.TemplateError):
            self.render({"models": {"persistentVolumeClaim": {"create": False}}})

    def test_with_real_helm_when_installed(self):
        helm = shutil.which("helm")
        if helm is None:
            self.skipTest("helm is not installed (not a Debian package): the chart is rendered "
                          "by tests/deploy/helm_lite.py, a strict Go-template subset renderer")
        subprocess.run([helm, "lint", "--strict", CHART], check=True)
        out = subprocess.run([helm, "template", "maskserve", CHART], check=True,
                             capture_output=True, text=True).stdout
        real = [d for d in yaml.safe_load_all(out) if d is not None]
        self.assertEqual(by_key(real), by_key(self.render()))


class HelmLiteTest(unittest.TestCase):
    """The subset renderer follows Go-template semantics where the chart relies on them."""

    def run_tpl(self, text, values=None):
        class C:
            meta = {"name": "c", "version": "1.0.0", "appVersion": "2.0"}
            templates = {"t.yaml": text}

        C.values = values or {}
        return helm_lite.Renderer(C).render()["t.yaml"]

    def test_trim_markers_and_pipelines(self):
        self.assertEqual(self.run_tpl("a  {{- \"b\" -}}  \n c"), "abc")
        self.assertEqual(self.run_tpl("x: {{ .Values.v | default 5 }}"), "x: 5")
        self.assertEqual(self.run_tpl("x: {{ .Values.v | quote }}", {"v": "a\"b"}), 'x: "a\\"b"')
        self.assertEqual(self.run_tpl("k:{{ .Values.m | toYaml | nindent 2 }}", {"m": {"b": 1, "a": 2}}),
                         "k:\n  a: 2\n  b: 1")
        self.assertEqual(self.run_tpl('{{ printf "%s-%s" .Chart.Name .Chart.Version }}'), "c-1.0.0")
        self.assertEqual(self.run_tpl("{{ if .Values.e }}y{{ else if .Values.f }}f{{ else }}n{{ end }}",
                                      {"e": 0, "f": []}), "n")

    def test_outside_the_subset_is_an_error(self):
        for bad in ("{{ range .Values.x }}{{ end }}", "{{ $x := 1 }}", "{{ upper \"a\" }}",
                    "{{ .Values.missing }}", "{{ (include \"a\" .) }}", "{{ .Values.big }}",
                    "{{- if .Values.x }}"):
            with self.assertRaises(helm_lite.TemplateError, msg=bad):
                self.run_tpl(bad, {"big": 10**9})


if __name__ == "__main__":
    du.run_tests()
