# The two commands of the README:
#   make serve   install what is missing, build Release, start maskserve on the demo model
#   make test    install what is missing, build, run every test, then again under ASan+UBSan
# Everything else here is a building block of those two.

JOBS        ?= $(shell nproc)
BUILD_DIR   ?= build/release
ASAN_DIR    ?= build/asan
TSAN_DIR    ?= build/tsan
FUZZ_DIR    ?= build/fuzz
GENERATOR   ?= Ninja
SERVE_ARGS  ?=
CTEST_ARGS  ?=

export OMP_WAIT_POLICY = PASSIVE

.PHONY: deps build serve test test-release test-asan test-tsan fuzz format clean

deps:
	@bash scripts/install-deps.sh

$(BUILD_DIR)/build.ninja: | deps
	cmake -S . -B $(BUILD_DIR) -G $(GENERATOR) -DCMAKE_BUILD_TYPE=Release

build: deps $(BUILD_DIR)/build.ninja
	cmake --build $(BUILD_DIR) -j$(JOBS)

serve: build
	$(BUILD_DIR)/server/maskserve --port=50051 --metrics_port=9090 $(SERVE_ARGS)

test-release: build
	ctest --test-dir $(BUILD_DIR) --output-on-failure -j$(JOBS) $(CTEST_ARGS)

test-asan: deps
	cmake -S . -B $(ASAN_DIR) -G $(GENERATOR) -DCMAKE_BUILD_TYPE=RelWithDebInfo -DMASKSERVE_SANITIZE=ON -DMASKSERVE_BUILD_BENCH=OFF
	cmake --build $(ASAN_DIR) -j$(JOBS)
	ctest --test-dir $(ASAN_DIR) --output-on-failure -j$(JOBS) $(CTEST_ARGS)

test: test-release test-asan

format:
	find engine server client bench tests -name '*.h' -o -name '*.cc' | xargs clang-format -i

clean:
	rm -rf build
