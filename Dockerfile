# maskserve container image.
#   docker build -t maskserve .
#   docker run -p 50051:50051 -p 9090:9090 -v /path/to/models:/models:ro maskserve \
#       --model bert=/models/bert-base-uncased
# Configuration: flags after the image name, MASKSERVE_<FLAG> environment
# variables (-e MASKSERVE_MAX_BATCH_SIZE=64) or --config=/path/to/config.json.
# The builder runs the same install script and Release build as `make serve`
# and CI; the runtime stage carries only the shared libraries the binaries use.
# tests/deploy/test_dockerfile.py keeps both in step with the Makefile, CMake
# and scripts/install-deps.sh (no Docker engine runs in CI); deploy/README.md.

FROM debian:12 AS builder
WORKDIR /src
COPY scripts/install-deps.sh scripts/install-deps.sh
RUN bash scripts/install-deps.sh && rm -rf /var/lib/apt/lists/*
COPY . .
RUN cmake -S . -B build/release -G Ninja -DCMAKE_BUILD_TYPE=Release -DMASKSERVE_UNITY_BUILD=ON -DBUILD_TESTING=OFF \
 && cmake --build build/release -j"$(nproc)" --target maskserve maskserve-cli maskserve-bench

FROM debian:12-slim AS runtime
COPY scripts/install-deps.sh /tmp/install-deps.sh
RUN bash /tmp/install-deps.sh --runtime && rm -rf /var/lib/apt/lists/* /tmp/install-deps.sh \
 && useradd --system --uid 10001 --home-dir /var/lib/maskserve --create-home maskserve \
 && mkdir -p /models && chown maskserve /models
COPY --from=builder /src/build/release/server/maskserve /usr/local/bin/maskserve
COPY --from=builder /src/build/release/client/maskserve-cli /usr/local/bin/maskserve-cli
COPY --from=builder /src/build/release/client/maskserve-bench /usr/local/bin/maskserve-bench
USER maskserve
WORKDIR /var/lib/maskserve
# Models are mounted read-only at /models; profiles and the demo model live in /var/lib/maskserve.
VOLUME ["/var/lib/maskserve"]
ENV OMP_WAIT_POLICY=PASSIVE \
    MASKSERVE_DATA_DIR=/var/lib/maskserve
EXPOSE 50051 9090
HEALTHCHECK --interval=10s --timeout=3s --start-period=120s --retries=3 \
  CMD ["maskserve-cli", "--target=127.0.0.1:50051", "--timeout_s=2", "health"]
ENTRYPOINT ["maskserve", "--bind=0.0.0.0", "--port=50051", "--metrics_port=9090"]
