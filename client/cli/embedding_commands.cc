// embed, tokenize, detokenize.
#include <algorithm>
#include <cstdio>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "client/cli/commands.h"
#include "client/lib/enum_names.h"

namespace maskserve::client::cli {
namespace {

// Values shown per vector in human output.
constexpr int kPreviewValues = 8;

void PrintEmbedding(int index, const v1::EmbedResponse::Embedding& e) {
  std::string line = absl::StrCat("[", index, "] dims=", e.values_size(),
                                  " tokens=", e.token_count(),
                                  e.truncated() ? " (truncated)" : "", ":");
  const int n = std::min(kPreviewValues, e.values_size());
  for (int i = 0; i < n; ++i) absl::StrAppend(&line, " ", FormatFloat(e.values(i)));
  if (e.values_size() > n) absl::StrAppend(&line, " ...");
  std::printf("%s\n", line.c_str());
}

}  // namespace

int RunEmbed(CliContext& ctx, const Args& args) {
  ArgParser parser("embed --model M [options] TEXT... | --file F");
  std::string model, pooling, whitening, file, mask;
  bool normalize = false, truncate = false;
  int dimensions = 0, max_length = 0, batch = 64;
  parser.AddString("model", &model, "model name (required)");
  parser.AddString("pooling", &pooling, "cls|mean|first_last_avg|max|last_token");
  parser.AddFlag("normalize", &normalize, "L2-normalise the vectors");
  parser.AddString("whitening", &whitening, "apply this stored whitening profile");
  parser.AddInt("dimensions", &dimensions, "keep only the first N dimensions");
  parser.AddFlag("truncate", &truncate, "cut over-long inputs instead of failing");
  parser.AddInt("max_length", &max_length, "token budget per input (0 = model max)");
  parser.AddString("mask", &mask, "attention mask, e.g. local:64 (see generate --help)");
  std::vector<std::string> pairs;
  parser.AddStringList("pair", &pairs, "second segment of input i (repeat once per TEXT)");
  parser.AddString("file", &file, "embed every line of this file");
  parser.AddInt("batch", &batch, "texts per request with --file (default 64)");
  int code = 0;
  if (!ParseOrExit(parser, args, &code)) return code;
  if (model.empty()) return Fail(Missing("--model"));
  if (batch <= 0) return Fail(absl::InvalidArgumentError("--batch must be > 0"));

  v1::EmbedRequest base;
  base.set_model(model);
  if (!pooling.empty()) {
    auto p = ParsePooling(pooling);
    if (!p.ok()) return Fail(p.status());
    base.set_pooling(*p);
  }
  if (!mask.empty()) {
    auto m = ParseMaskSpec(mask);
    if (!m.ok()) return Fail(m.status());
    *base.mutable_mask() = *m;
  }
  base.set_normalize(normalize);
  base.set_whitening_profile(whitening);
  base.set_dimensions(dimensions);
  base.set_truncate(truncate);
  base.set_max_length(max_length);

  std::vector<std::string> texts = parser.positionals();
  if (!file.empty()) {
    if (!texts.empty()) {
      return Fail(absl::InvalidArgumentError("give either TEXT... or --file, not both"));
    }
    auto lines = ReadLines(file);
    if (!lines.ok()) return Fail(lines.status());
    texts = *std::move(lines);
  } else {
    // Positional texts go in one request.
    batch = std::max<int>(1, static_cast<int>(texts.size()));
  }
  if (texts.empty()) return Fail(Missing("TEXT or --file"));
  if (!pairs.empty() && (!file.empty() || pairs.size() != texts.size())) {
    return Fail(absl::InvalidArgumentError("give one --pair per TEXT (not with --file)"));
  }

  v1::EmbedResponse merged;
  google::protobuf::RepeatedPtrField<v1::EmbedResponse::Embedding> all_embeddings;
  for (size_t start = 0; start < texts.size(); start += batch) {
    v1::EmbedRequest request = base;
    const size_t end = std::min(texts.size(), start + static_cast<size_t>(batch));
    for (size_t i = start; i < end; ++i) {
      request.add_texts(texts[i]);
      if (!pairs.empty()) request.add_text_pairs(pairs[i]);
    }
    auto response = ctx.client->Embed(request, ctx.Call(absl::Seconds(60)));
    if (!response.ok()) return Fail(response.status());
    if (ctx.json) {
      // One JSON document for the whole file: embeddings concatenated, the
      // rest (model, dimensions, timing) from the last request.
      all_embeddings.MergeFrom(response->embeddings());
      merged = *std::move(response);
      continue;
    }
    if (start == 0) {
      std::printf("model=%s dimensions=%d pooling=%s\n", response->model().c_str(),
                  response->dimensions(), PoolingName(response->pooling()).c_str());
    }
    for (int i = 0; i < response->embeddings_size(); ++i) {
      PrintEmbedding(static_cast<int>(start) + i, response->embeddings(i));
    }
  }
  if (ctx.json) {
    merged.mutable_embeddings()->Swap(&all_embeddings);
    PrintJson(merged);
  }
  return 0;
}

int RunTokenize(CliContext& ctx, const Args& args) {
  ArgParser parser("tokenize --model M [options] TEXT...");
  std::string model;
  bool no_special = false, truncate = false;
  int max_length = 0;
  parser.AddString("model", &model, "model name (required)");
  parser.AddFlag("no_special_tokens", &no_special, "do not add [CLS]/[SEP]/BOS...");
  parser.AddFlag("truncate", &truncate, "truncate to --max_length");
  parser.AddInt("max_length", &max_length, "token budget (0 = model max)");
  std::vector<std::string> pairs;
  parser.AddStringList("pair", &pairs, "second segment of input i (repeat once per TEXT)");
  int code = 0;
  if (!ParseOrExit(parser, args, &code)) return code;
  if (model.empty()) return Fail(Missing("--model"));
  if (parser.positionals().empty()) return Fail(Missing("TEXT"));

  v1::TokenizeRequest request;
  request.set_model(model);
  for (const auto& t : parser.positionals()) request.add_texts(t);
  if (!pairs.empty()) {
    if (pairs.size() != parser.positionals().size()) {
      return Fail(absl::InvalidArgumentError("give one --pair per TEXT"));
    }
    for (const auto& p : pairs) request.add_text_pairs(p);
  }
  if (no_special) request.set_add_special_tokens(false);
  request.set_truncate(truncate);
  request.set_max_length(max_length);
  auto response = ctx.client->Tokenize(request, ctx.Call(absl::Seconds(30)));
  if (!response.ok()) return Fail(response.status());
  if (ctx.json) {
    PrintJson(*response);
    return 0;
  }
  for (int r = 0; r < response->results_size(); ++r) {
    const auto& res = response->results(r);
    std::printf("[%d] %d tokens%s\n", r, res.ids_size(),
                res.truncated() ? " (truncated)" : "");
    Table table({"  ID", "TOKEN", "SPAN"});
    for (int i = 0; i < res.ids_size(); ++i) {
      const std::string token = i < res.tokens_size() ? res.tokens(i) : "";
      std::string span = "-";
      if (i < res.offsets_size()) {
        span = absl::StrCat(res.offsets(i).start(), ":", res.offsets(i).end());
      }
      table.AddRow({absl::StrCat("  ", res.ids(i)), token, span});
    }
    std::fputs(table.Render().c_str(), stdout);
  }
  return 0;
}

int RunDetokenize(CliContext& ctx, const Args& args) {
  ArgParser parser("detokenize --model M [--skip_special_tokens] ID... (or \"1,2,3\")");
  std::string model;
  bool skip_special = false;
  parser.AddString("model", &model, "model name (required)");
  parser.AddFlag("skip_special_tokens", &skip_special, "drop [CLS]/[PAD]/BOS...");
  int code = 0;
  if (!ParseOrExit(parser, args, &code)) return code;
  if (model.empty()) return Fail(Missing("--model"));

  v1::DetokenizeRequest request;
  request.set_model(model);
  request.set_skip_special_tokens(skip_special);
  auto* ids = request.add_token_ids();
  for (const auto& word : parser.positionals()) {
    for (absl::string_view piece :
         absl::StrSplit(word, absl::ByAnyChar(", "), absl::SkipEmpty())) {
      int id = 0;
      if (!absl::SimpleAtoi(piece, &id)) {
        return Fail(absl::InvalidArgumentError(
            absl::StrCat("'", std::string(piece), "' is not a token id")));
      }
      ids->add_ids(id);
    }
  }
  if (ids->ids_size() == 0) return Fail(Missing("ID"));
  auto response = ctx.client->Detokenize(request, ctx.Call(absl::Seconds(30)));
  if (!response.ok()) return Fail(response.status());
  if (ctx.json) {
    PrintJson(*response);
    return 0;
  }
  for (const auto& text : response->texts()) std::printf("%s\n", text.c_str());
  return 0;
}

}  // namespace maskserve::client::cli
