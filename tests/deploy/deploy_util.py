"""Helpers shared by the offline deployment tests: paths, the server's and
CLI's flag names read from their sources, the metric families the server
registers, and a unittest main that exits 77 (ctest skip) when everything
was skipped."""

import os
import re
import sys
import unittest

SOURCE_DIR = os.environ.get("MASKSERVE_SOURCE_DIR",
                            os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))
BUILD_DIR = os.environ.get("MASKSERVE_BUILD_DIR", os.path.join(SOURCE_DIR, "build", "release"))


def src(*parts):
    return os.path.join(SOURCE_DIR, *parts)


def read(*parts):
    with open(src(*parts)) as f:
        return f.read()


def absl_flags(path):
    """{flag name: absl type} of every ABSL_FLAG in a source file."""
    text = read(path)
    return {m.group(2): m.group(1).strip()
            for m in re.finditer(r"ABSL_FLAG\(\s*([^,]+?)\s*,\s*(\w+)\s*,", text)}


def server_flags():
    return absl_flags("server/config.cc")


def config_file_keys():
    """Keys the server accepts in a --config JSON file (kFlagNames)."""
    text = read("server/config.cc")
    m = re.search(r"kFlagNames\[\]\s*=\s*\{(.*?)\};", text, re.S)
    assert m, "kFlagNames not found in server/config.cc"
    return set(re.findall(r'"(\w+)"', m.group(1)))


def cli_flags():
    return absl_flags("client/cli/main.cc")


def registered_metrics(with_labels=False):
    """{family name: 'counter'|'gauge'|'histogram'} registered anywhere in
    server/ (registry Add* calls with a literal or a named constant, and the
    process collector's SingleValueFamily). With with_labels, the values are
    (type, [label names]) instead."""
    out = {}
    add = re.compile(r'\bAdd(Counter|Gauge|Histogram)\(\s*("\w+"|k\w+)\s*,\s*'
                     r'((?:"(?:[^"\\]|\\.)*"\s*)+),\s*\{([^}]*)\}', re.S)
    for root, _, files in os.walk(src("server")):
        for name in files:
            if not name.endswith((".cc", ".h")):
                continue
            with open(os.path.join(root, name)) as f:
                text = f.read()
            consts = dict(re.findall(r'\b(k\w+)\s*=\s*"((?:maskserve|process)_\w+)"', text))
            for kind, arg, _, labels in add.findall(text):
                metric = arg.strip('"') if arg.startswith('"') else consts.get(arg)
                if metric:
                    out[metric] = (kind.lower(), re.findall(r'"(\w+)"', labels))
            # Registrations the pattern above cannot read (labels built at
            # run time): type known, labels unknown (None).
            for kind, arg in re.findall(r"\bAdd(Counter|Gauge|Histogram)\(\s*(\"\w+\"|k\w+)", text):
                metric = arg.strip('"') if arg.startswith('"') else consts.get(arg)
                if metric and metric not in out:
                    out[metric] = (kind.lower(), None)
            for kind, metric in re.findall(
                    r'SingleValueFamily\(\s*MetricType::k(Counter|Gauge|Histogram)\s*,\s*"(\w+)"', text):
                out[metric] = (kind.lower(), [])
    return out if with_labels else {k: v[0] for k, v in out.items()}


def run_tests():
    prog = unittest.main(exit=False, verbosity=2)
    r = prog.result
    if not r.wasSuccessful():
        sys.exit(1)
    if r.testsRun > 0 and len(r.skipped) == r.testsRun:
        sys.exit(77)
    sys.exit(0)
