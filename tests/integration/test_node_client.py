"""client/node/maskserve_example.js (@grpc/grpc-js + @grpc/proto-loader from
npm, proto/ loaded at run time) against a live maskserve: embed, whitening
fit/embed/delete, and generate + streaming generate when a generative model
is loaded (see client_examples.py). The packages are installed with
`npm ci` from client/node/package-lock.json into client/node/node_modules
(git-ignored); the test skips, saying so, only when node is missing or the
npm registry cannot be reached."""

import os
import shutil
import subprocess
import unittest

import client_examples
import harness

NODE_DIR = os.path.join(harness.SOURCE_DIR, "client", "node")
NETWORK_ERRORS = ("ENOTFOUND", "EAI_AGAIN", "ECONNREFUSED", "ECONNRESET", "ETIMEDOUT",
                  "ENETUNREACH", "network", "socket hang up")


def npm_install(test):
    """npm ci unless node_modules already matches the lock file."""
    marker = os.path.join(NODE_DIR, "node_modules", ".package-lock.json")
    lock = os.path.join(NODE_DIR, "package-lock.json")
    if os.path.exists(marker) and os.path.getmtime(marker) >= os.path.getmtime(lock) and \
            os.path.isdir(os.path.join(NODE_DIR, "node_modules", "@grpc", "grpc-js")):
        return
    try:
        r = subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=NODE_DIR,
                           capture_output=True, text=True, timeout=180)
    except subprocess.TimeoutExpired:
        test.skipTest("npm ci timed out (npm registry unreachable?)")
    if r.returncode != 0:
        out = r.stdout + r.stderr
        if any(e in out for e in NETWORK_ERRORS):
            test.skipTest("npm registry unreachable:\n" + out[-2000:])
        test.fail("npm ci failed:\n" + out[-4000:])


class NodeClientTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        harness.generate_stubs()

    def test_example_against_live_server(self):
        node, npm = shutil.which("node"), shutil.which("npm")
        if not node or not npm:
            self.skipTest("node/npm not installed (scripts/install-deps.sh installs them)")
        npm_install(self)
        with client_examples.server() as srv:
            srv.wait_serving("maskserve.v1.Embedding", timeout=90)
            summary = client_examples.run_example(
                self, [node, os.path.join(NODE_DIR, "maskserve_example.js")], srv, cwd=NODE_DIR)
            client_examples.check_summary(self, summary, srv)


if __name__ == "__main__":
    harness.run_tests()
