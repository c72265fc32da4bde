# The two commands of the README:
#   make serve   install what is missing, build Release, start maskserve on the demo model
#   make test    install what is missing, build, run every test, then again under ASan+UBSan,
#                then the scheduler / KV cache / server tests under TSan, then each fuzzer briefly
# Everything else here is a building block of those two.

JOBS        ?= $(shell nproc)
BUILD_DIR   ?= build/release
ASAN_DIR    ?= build/asan
TSAN_DIR    ?= build/tsan
FUZZ_DIR    ?= build/fuzz
GENERATOR   ?= Ninja
SERVE_ARGS  ?=
CTEST_ARGS  ?=
# Seconds each libFuzzer target runs in `make fuzz` (and so in `make test`).
FUZZ_SECONDS ?= 10
# Unity batches: each target parses the gRPC / protobuf / gtest headers once
# per batch of sources, not once per file (see CMakeLists.txt).
UNITY       ?= ON
# Sanitizer builds: -O0 and line tables only (what the reports need), which
# compiles about twice as fast as -O2 -g; the engine keeps -O1 under ASan, whose
# test run computes real models (engine/CMakeLists.txt).
SAN_FLAGS   := -DCMAKE_BUILD_TYPE=RelWithDebInfo "-DCMAKE_CXX_FLAGS_RELWITHDEBINFO=-O0 -g1 -DNDEBUG" \
               "-DCMAKE_C_FLAGS_RELWITHDEBINFO=-O0 -g1 -DNDEBUG" -DMASKSERVE_BUILD_BENCH=OFF

export OMP_WAIT_POLICY = PASSIVE

.PHONY: deps build serve test test-release test-asan test-tsan fuzz format clean

deps:
	@bash scripts/install-deps.sh

$(BUILD_DIR)/build.ninja: | deps
	cmake -S . -B $(BUILD_DIR) -G $(GENERATOR) -DCMAKE_BUILD_TYPE=Release -DMASKSERVE_UNITY_BUILD=$(UNITY)

build: deps $(BUILD_DIR)/build.ninja
	cmake --build $(BUILD_DIR) -j$(JOBS)

serve: build
	$(BUILD_DIR)/server/maskserve --port=50051 --metrics_port=9090 $(SERVE_ARGS)

test-release: build
	ctest --test-dir $(BUILD_DIR) --output-on-failure --no-tests=error -j$(JOBS) $(CTEST_ARGS)

test-asan: deps
	cmake -S . -B $(ASAN_DIR) -G $(GENERATOR) $(SAN_FLAGS) -DMASKSERVE_UNITY_BUILD=$(UNITY) -DMASKSERVE_SANITIZE=ON
	cmake --build $(ASAN_DIR) -j$(JOBS)
	ctest --test-dir $(ASAN_DIR) --output-on-failure --no-tests=error -j$(JOBS) $(CTEST_ARGS)

# ThreadSanitizer: the tests of the schedulers, the KV cache and the server,
# the only tests that build tree defines (tests/CMakeLists.txt).
test-tsan: deps
	cmake -S . -B $(TSAN_DIR) -G $(GENERATOR) $(SAN_FLAGS) -DMASKSERVE_UNITY_BUILD=$(UNITY) -DMASKSERVE_TSAN=ON
	cmake --build $(TSAN_DIR) -j$(JOBS) --target server_tests kv_cache_tests
	ctest --test-dir $(TSAN_DIR) --output-on-failure --no-tests=error -j$(JOBS) $(CTEST_ARGS)

# libFuzzer (clang): builds the fuzz targets and runs each for FUZZ_SECONDS
# from its seed corpus and saved regressions.
fuzz: deps
	CC=clang CXX=clang++ cmake -S . -B $(FUZZ_DIR) -G $(GENERATOR) -DCMAKE_BUILD_TYPE=RelWithDebInfo \
	  -DMASKSERVE_UNITY_BUILD=$(UNITY) -DMASKSERVE_FUZZ=ON -DMASKSERVE_FUZZ_SECONDS=$(FUZZ_SECONDS)
	cmake --build $(FUZZ_DIR) -j$(JOBS) --target fuzz_targets
	ctest --test-dir $(FUZZ_DIR) --output-on-failure --no-tests=error -j$(JOBS) -L fuzz $(CTEST_ARGS)

test: test-release test-asan test-tsan fuzz

format:
	find engine server client bench tests -name '*.h' -o -name '*.cc' | xargs clang-format -i

clean:
	rm -rf build
