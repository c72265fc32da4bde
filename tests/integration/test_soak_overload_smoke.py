"""Short smokes of bench/soak.py and bench/overload.py (the full runs are
benchmarks, their numbers in bench/README.md and SECURITY.md): mixed
Embed/Generate/stream/cancel traffic at saturation answers correctly with no
error but RESOURCE_EXHAUSTED and leaves no KV block or call behind; at 4x
capacity the server sheds with fast RESOURCE_EXHAUSTED and what it accepts
finishes within its deadline."""

import io
import json
import os
import sys
import unittest

import harness

sys.path.insert(0, os.path.join(harness.SOURCE_DIR, "bench"))
import overload  # noqa: E402
import soak  # noqa: E402

BUILD = harness.BUILD_DIR
HAVE_BENCH = os.path.exists(os.path.join(BUILD, "client", "maskserve-bench"))
SANITIZED = os.environ.get("MASKSERVE_SANITIZED") == "1"


@unittest.skipUnless(HAVE_BENCH, f"{BUILD}/client/maskserve-bench not built")
class SoakOverloadSmokeTest(unittest.TestCase):
    def test_soak_smoke(self):
        out = io.StringIO()
        # Memory limits are for the full run; here only the mechanics count.
        r = soak.run(BUILD, duration=12, warmup=4, concurrency=16, max_new_tokens=16,
                     max_slope=1e9, max_growth=1e9, out=out)
        print(out.getvalue())
        self.assertEqual(r["problems"], [], json.dumps(r))
        self.assertGreater(r["ok"], 50)
        for kind in ("embed", "generate", "stream", "cancel"):
            self.assertGreater(r["by_kind"].get(kind, 0), 0, kind)
        self.assertGreater(r["cancelled_by_client"], 0)
        self.assertEqual(r["wrong"], 0)
        self.assertEqual(r["kv_blocks_used_after"], 0)
        self.assertGreater(r["rss_samples"], 3)

    def test_overload_smoke(self):
        out = io.StringIO()
        r = overload.run(BUILD, factor=4, duration=6, capacity_s=4, deadline_ms=500,
                         concurrency=16, workers=384, max_shed_ms=500, out=out)
        print(out.getvalue())
        main = r["shed_on_deadline"]
        self.assertGreater(main["shed"], 0, json.dumps(r))
        # A refused request has been parsed and tokenised (16 sentences) on
        # the saturated cores first: tens of milliseconds in a Release build,
        # hundreds under ASan, where only the mechanics are checked.
        self.assertLess(main["shed_latency_ms"]["p50"], 500 if SANITIZED else 50, json.dumps(r))
        self.assertLessEqual(main["accepted_latency_ms"]["p99"], 500, json.dumps(r))
        self.assertGreater(main["ok"], 0)


if __name__ == "__main__":
    harness.run_tests()
