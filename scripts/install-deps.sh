#!/usr/bin/env bash
# Installs every Debian package maskserve needs to build, test and serve.
# Non-interactive and idempotent: packages already present are skipped, so a
# second run is a no-op that needs no network. README, .ci/run and the
# Dockerfile all call this one script.
#
#   scripts/install-deps.sh            build + test dependencies (default)
#   scripts/install-deps.sh --runtime  only the shared libraries the server links
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
  # libFuzzer targets and sanitizer runtimes
  clang libclang-rt-14-dev
  # process helpers used by integration tests
  procps
)

RUNTIME_PKGS=(
  libgrpc++1.51 libgrpc29 libprotobuf32 libdnnl2 libabsl20220623 libutf8proc2
  libsentencepiece0 libgomp1 libcpp-httplib0.11 ca-certificates
)

pkgs=("${BUILD_PKGS[@]}")
if [[ "${1:-}" == "--runtime" ]]; then pkgs=("${RUNTIME_PKGS[@]}"); fi

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
