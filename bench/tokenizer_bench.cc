// WordPiece throughput on the golden long text (1465 BERT tokens), single
// thread. Needs ../shared (or $MASKSERVE_SHARED); reports an error otherwise.
#include <benchmark/benchmark.h>

#include <cstdlib>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>

#include "engine/tokenizer/tokenizer_factory.h"
#include "nlohmann/json.hpp"

namespace {

using maskserve::engine::Tokenizer;

struct Fixture {
  std::unique_ptr<Tokenizer> tok;
  std::string long_text;
  std::string short_text;
  std::string error;
};

const Fixture& Get() {
  static const Fixture* f = [] {
    auto* fx = new Fixture();
    const char* env = std::getenv("MASKSERVE_SHARED");
    const std::string shared = env != nullptr ? env : "../shared";
    auto tok = maskserve::engine::LoadTokenizer(shared + "/golden/models/bert-mini");
    if (!tok.ok()) {
      fx->error = tok.status().ToString();
      return fx;
    }
    fx->tok = *std::move(tok);
    std::ifstream in(shared + "/golden/inputs.json");
    std::stringstream ss;
    ss << in.rdbuf();
    const auto j = nlohmann::json::parse(ss.str(), nullptr, false);
    if (j.is_discarded()) {
      fx->error = "cannot read golden/inputs.json";
      return fx;
    }
    for (const auto& s : j["sentences"]) {
      if (s["id"] == "v39") fx->long_text = s["text"].get<std::string>();
      if (s["id"] == "v00") fx->short_text = s["text"].get<std::string>();
    }
    return fx;
  }();
  return *f;
}

void Run(benchmark::State& state, const std::string& text) {
  const Fixture& f = Get();
  if (!f.error.empty() || text.empty()) {
    state.SkipWithError(f.error.empty() ? "text not found" : f.error.c_str());
    return;
  }
  int64_t tokens = 0;
  for (auto _ : state) {
    auto e = f.tok->Encode(text, true, {});
    benchmark::DoNotOptimize(e);
    tokens += static_cast<int64_t>(e->ids.size());
  }
  state.counters["tokens/s"] =
      benchmark::Counter(static_cast<double>(tokens), benchmark::Counter::kIsRate);
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) *
                          static_cast<int64_t>(text.size()));
}

void BM_WordPieceEncodeLong(benchmark::State& state) { Run(state, Get().long_text); }
void BM_WordPieceEncodeShort(benchmark::State& state) { Run(state, Get().short_text); }

BENCHMARK(BM_WordPieceEncodeLong);
BENCHMARK(BM_WordPieceEncodeShort);

}  // namespace

BENCHMARK_MAIN();
