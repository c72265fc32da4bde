"""client/python/maskserve_example.py (grpcio, stubs generated from proto/)
against a live maskserve: embed, whitening fit/embed/delete, and generate +
streaming generate when a generative model is loaded (see
client_examples.py for what is checked)."""

import os
import sys
import unittest

import client_examples
import harness

EXAMPLE = os.path.join(harness.SOURCE_DIR, "client", "python", "maskserve_example.py")


class PythonClientTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        harness.generate_stubs()

    def test_example_against_live_server(self):
        with client_examples.server() as srv:
            srv.wait_serving("maskserve.v1.Embedding", timeout=90)
            summary = client_examples.run_example(self, [sys.executable, EXAMPLE], srv)
            client_examples.check_summary(self, summary, srv)


if __name__ == "__main__":
    harness.run_tests()
