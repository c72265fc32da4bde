#!/usr/bin/env bash
# Installs every Debian package maskserve needs to build, test and serve.
# Non-interactive and idempotent: packages already present are skipped, so a
# second run is a no-op that needs no network. README, .ci/run and the
# Dockerfile all call this one script.
#
#   scripts/install-deps.sh            build + test dependencies (default)
#   scripts/install-deps.sh --runtime  only the shared libraries the server links
#   scripts/install-deps.sh --bench    build + test dependencies plus what the
#                                      speed peers of bench/encoder_bench need
#                                      (../shared/peers: PyTorch, ONNX export,
#                                      OpenBLAS-OpenMP, Node.js for onnxruntime-node);
#                                      never part of the default set
set -euo pipefail

BUILD_PKGS=(
  build-essential cmake ninja-build ccache pkg-config git ca-certificates curl
  # gRPC, protobuf and the code generators
  libgrpc++-dev libprotobuf-dev protobuf-compiler protobuf-compiler-grpc libssl-dev
  # engine
  libdnnl-dev libabsl-dev libutf8proc-dev libeigen3-dev nlohmann-json3-dev
  libsentencepiece-dev
  # /metrics HTTP endpoint
  libcpp-httplib-dev
  # tests and benchmarks
  libgtest-dev libgmock-dev googletest libbenchmark-dev
  # promtool (exposition check) and the real Prometheus for integration tests
  prometheus
  # Python client test: stubs generated from proto/ at test time with protoc
  # and grpc_python_plugin (Debian's python3-grpc-tools bundles protoc 3.5,
  # which predates proto3 `optional`)
  python3 python3-grpcio python3-protobuf
  # deploy/ tests parse YAML (manifests, Helm chart, compose); the C++ client
  # TLS test makes its certificates with the openssl command
  python3-yaml openssl
  # libFuzzer targets and sanitizer runtimes
  clang libclang-rt-14-dev
  # process helpers used by integration tests
  procps
)

# The Node.js client test (client/node) needs node and npm; the VMs carry
# NodeSource's node, which Debian's nodejs package would conflict with.
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then BUILD_PKGS+=(nodejs npm); fi

RUNTIME_PKGS=(
  libgrpc++1.51 libgrpc29 libprotobuf32 libdnnl2 libabsl20220623 libutf8proc2
  libsentencepiece0 libgomp1 libcpp-httplib0.11 ca-certificates
)

# The peer kit's Python and Node side (see bench/README.md). libopenblas0-openmp
# is not optional: without it torch's fp32 GEMMs fall back to single-threaded
# reference BLAS. nodejs/npm are only installed when no node is on PATH (the
# VMs carry NodeSource's node, which Debian's nodejs package would conflict with).
BENCH_PKGS=(python3-torch python3-numpy python3-onnx libopenblas0-openmp)
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then BENCH_PKGS+=(nodejs npm); fi

pkgs=("${BUILD_PKGS[@]}")
case "${1:-}" in
  "") ;;
  --runtime) pkgs=("${RUNTIME_PKGS[@]}") ;;
  --bench) pkgs=("${BUILD_PKGS[@]}" "${BENCH_PKGS[@]}") ;;
  *) echo "install-deps: unknown option $1 (none, --runtime or --bench)" >&2; exit 2 ;;
esac

missing=()
for p in "${pkgs[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [[ ${#missing[@]} -eq 0 ]]; then
  echo "install-deps: all ${#pkgs[@]} packages present"
  exit 0
fi

echo "install-deps: installing ${#missing[@]} missing packages: ${missing[*]}"
SUDO=""
if [[ $(id -u) -ne 0 ]]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "install-deps: done"
