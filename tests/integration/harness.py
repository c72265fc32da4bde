"""Shared helpers for the integration tests: build paths, Python stubs
generated from proto/ at test time, free ports, and a running maskserve
process that is always cleaned up."""

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import urllib.error
import urllib.request

SOURCE_DIR = os.environ.get("MASKSERVE_SOURCE_DIR",
                            os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))
BUILD_DIR = os.environ.get("MASKSERVE_BUILD_DIR", os.path.join(SOURCE_DIR, "build", "release"))
SHARED_DIR = os.environ.get("MASKSERVE_SHARED", os.path.join(SOURCE_DIR, "..", "shared"))
SERVER_BIN = os.path.join(BUILD_DIR, "server", "maskserve")
CLI_BIN = os.path.join(BUILD_DIR, "client", "maskserve-cli")

_STUB_DIR = None


def generate_stubs():
    """Generates Python messages + gRPC stubs from proto/ (and the test-only
    health/reflection protos) into a temp dir and puts it on sys.path."""
    global _STUB_DIR
    if _STUB_DIR:
        return _STUB_DIR
    out = tempfile.mkdtemp(prefix="maskserve-pystubs-")
    plugin = shutil.which("grpc_python_plugin") or "/usr/bin/grpc_python_plugin"
    protos = [os.path.join("maskserve", "v1", f)
              for f in sorted(os.listdir(os.path.join(SOURCE_DIR, "proto", "maskserve", "v1")))
              if f.endswith(".proto")]
    subprocess.run(["protoc", "-I", os.path.join(SOURCE_DIR, "proto"),
                    "--python_out=" + out, "--grpc_python_out=" + out,
                    "--plugin=protoc-gen-grpc_python=" + plugin] + protos, check=True)
    test_protos = os.path.join(os.path.dirname(os.path.abspath(__file__)), "protos")
    subprocess.run(["protoc", "-I", test_protos, "--python_out=" + out,
                    "--grpc_python_out=" + out, "--plugin=protoc-gen-grpc_python=" + plugin,
                    "health_client.proto", "reflection_client.proto"], check=True)
    sys.path.insert(0, out)
    _STUB_DIR = out
    return out


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """A maskserve child process on free loopback ports. Use as a context
    manager; it is killed on exit if still running."""

    def __init__(self, args=(), data_dir=None, env=None):
        self.port = free_port()
        self.metrics_port = free_port()
        while self.metrics_port == self.port:
            self.metrics_port = free_port()
        self._own_data_dir = data_dir is None
        self.data_dir = data_dir or tempfile.mkdtemp(prefix="maskserve-data-")
        self.args = [SERVER_BIN, "--bind=127.0.0.1", f"--port={self.port}",
                     f"--metrics_port={self.metrics_port}", f"--data_dir={self.data_dir}"] + list(args)
        self.env = dict(os.environ, **(env or {}))
        self.proc = None
        self.log_lines = []
        self._log_cv = threading.Condition()

    @property
    def target(self):
        return f"127.0.0.1:{self.port}"

    def start(self):
        self.proc = subprocess.Popen(self.args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     env=self.env, text=True, errors="replace")
        threading.Thread(target=self._pump, daemon=True).start()
        return self

    def _pump(self):
        for line in self.proc.stdout:
            with self._log_cv:
                self.log_lines.append(line.rstrip("\n"))
                self._log_cv.notify_all()

    def wait_for_log(self, needle, timeout=30, after=0):
        """Returns the first log line (index >= after) containing `needle`."""
        deadline = time.time() + timeout
        with self._log_cv:
            while True:
                for line in self.log_lines[after:]:
                    if needle in line:
                        return line
                left = deadline - time.time()
                if left <= 0 or self.proc.poll() is not None:
                    raise AssertionError(f"log line containing {needle!r} not seen; log:\n"
                                         + "\n".join(self.log_lines[-50:]))
                self._log_cv.wait(min(left, 0.2))

    def await_listening(self, timeout=60):
        """Waits for the server's `event=listening` log line (quietly gives up
        when the process exits or after `timeout`). A channel that connects
        before the port is bound is refused, and gRPC then backs off for
        seconds before it tries again, whatever the backoff options say."""
        if self.proc is None:
            return
        deadline = time.time() + timeout
        with self._log_cv:
            while not any("event=listening" in line for line in self.log_lines):
                left = deadline - time.time()
                if left <= 0 or self.proc.poll() is not None:
                    return
                self._log_cv.wait(min(left, 0.2))

    def channel(self):
        """A channel that reconnects quickly (the server may still be starting)
        and accepts messages up to the server's default 64 MiB limit.
        grpc.min_reconnect_backoff_ms is left alone: gRPC core also uses it as
        the connect timeout (default 20 s), and a short one fails the
        handshake of a slow (sanitized, loaded) server with UNAVAILABLE."""
        import grpc
        self.await_listening()
        return grpc.insecure_channel(self.target, options=[
            ("grpc.initial_reconnect_backoff_ms", 100),
            ("grpc.max_reconnect_backoff_ms", 500),
            ("grpc.max_receive_message_length", 64 << 20),
            ("grpc.max_send_message_length", 64 << 20),
        ])

    def wait_serving(self, service="", timeout=120):
        """Polls grpc.health.v1 until `service` is SERVING."""
        import grpc
        generate_stubs()
        import health_client_pb2 as hpb
        import health_client_pb2_grpc as hgrpc
        deadline = time.time() + timeout
        with self.channel() as ch:
            stub = hgrpc.HealthStub(ch)
            last = None
            while time.time() < deadline:
                if self.proc.poll() is not None:
                    raise AssertionError("maskserve exited early:\n" + "\n".join(self.log_lines))
                try:
                    r = stub.Check(hpb.HealthCheckRequest(service=service), timeout=2)
                    last = r.status
                    if r.status == hpb.HealthCheckResponse.SERVING:
                        return
                except grpc.RpcError as e:
                    last = e.code()
                time.sleep(0.1)
        raise AssertionError(f"service {service!r} not SERVING after {timeout}s (last: {last})")

    def http_get(self, path, timeout=5):
        url = f"http://127.0.0.1:{self.metrics_port}{path}"
        try:
            with urllib.request.urlopen(url, timeout=timeout) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()

    def terminate(self, sig=signal.SIGTERM):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)

    def wait_exit(self, timeout=60):
        return self.proc.wait(timeout=timeout)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        if self.proc and self.proc.stdout:
            self.proc.stdout.close()
        if self._own_data_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)
        return False


def run_tests():
    """unittest main that exits 77 (ctest SKIP_RETURN_CODE) when every test
    was skipped, so a missing prerequisite shows up as skipped, not passed."""
    if not os.path.exists(SERVER_BIN):
        print(f"SKIP: {SERVER_BIN} not built")
        sys.exit(77)
    prog = unittest.main(exit=False, verbosity=2)
    r = prog.result
    if not r.wasSuccessful():
        sys.exit(1)
    if r.testsRun > 0 and len(r.skipped) == r.testsRun:
        sys.exit(77)
    sys.exit(0)
