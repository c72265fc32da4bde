// generate, paraphrase.
#include <algorithm>
#include <cstdio>
#include <map>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "client/cli/commands.h"
#include "client/lib/enum_names.h"

namespace maskserve::client::cli {
namespace {

// Generation on CPU can take a while; the default deadline is generous.
constexpr absl::Duration kGenerateDeadline = absl::Minutes(5);

// One line on stderr with token accounting and speed, so that stdout holds
// only the generated text.
void PrintUsage(const v1::Usage& usage, const v1::GenerationTiming& timing,
                const std::string& finish) {
  std::fprintf(stderr,
               "[%sprompt_tokens=%d completion_tokens=%d tokens/s=%s "
               "first_token_ms=%s total_ms=%s]\n",
               finish.empty() ? "" : absl::StrCat("finish=", finish, " ").c_str(),
               usage.prompt_tokens(), usage.completion_tokens(),
               FormatFloat(timing.tokens_per_second(), 1).c_str(),
               FormatFloat(timing.first_token_us() / 1000.0, 1).c_str(),
               FormatFloat(timing.total_us() / 1000.0, 1).c_str());
}

}  // namespace

int RunGenerate(CliContext& ctx, const Args& args) {
  ArgParser parser("generate --model M [options] PROMPT...");
  v1::GenerateRequest request;
  std::string model, strategy, mask, source, target_prefix;
  bool stream = false, logprobs = false, early_stopping = false,
       ignore_eos = false, keep_special = false;
  int max_new_tokens = 64, min_new_tokens = 0, top_k = 0, beam_width = 0,
      num_return = 0, no_repeat_ngram = 0;
  std::optional<float> temperature, top_p, repetition_penalty, length_penalty;
  std::optional<uint64_t> seed;
  std::vector<std::string> stop;
  std::vector<int> stop_token_ids;
  parser.AddString("model", &model, "model name (required)");
  parser.AddFlag("stream", &stream, "print text as it is generated");
  parser.AddInt("max_new_tokens", &max_new_tokens, "tokens to generate (default 64)");
  parser.AddInt("min_new_tokens", &min_new_tokens, "ignore stop conditions before this");
  parser.AddString("strategy", &strategy, "greedy|sample|beam");
  parser.AddOptionalFloat("temperature", &temperature, "sampling temperature");
  parser.AddInt("top_k", &top_k, "sample from the k most likely tokens");
  parser.AddOptionalFloat("top_p", &top_p, "nucleus sampling mass");
  parser.AddOptionalFloat("repetition_penalty", &repetition_penalty, ">1 penalises repeats");
  parser.AddInt("no_repeat_ngram_size", &no_repeat_ngram, "forbid repeated n-grams");
  parser.AddInt("beam_width", &beam_width, "beams for --strategy beam");
  parser.AddOptionalFloat("length_penalty", &length_penalty, "beam length penalty");
  parser.AddFlag("early_stopping", &early_stopping, "beam: stop at beam_width hypotheses");
  parser.AddInt("num_return_sequences", &num_return, "sequences to return");
  parser.AddOptionalUint64("seed", &seed, "RNG seed for sampling");
  parser.AddStringList("stop", &stop, "stop string (repeatable)");
  parser.AddIntList("stop_token_id", &stop_token_ids, "extra stop token id (repeatable)");
  parser.AddString("mask", &mask,
                   "bidirectional|causal|unilm[:P]|local:W|dilated:R|strided:W:R[+causal]");
  parser.AddString("source", &source, "seq2seq source text (UniLM / encoder input)");
  parser.AddString("target_prefix", &target_prefix, "forced start of the output");
  parser.AddFlag("logprobs", &logprobs, "return per-token log-probabilities");
  parser.AddFlag("ignore_eos", &ignore_eos, "do not stop at EOS");
  parser.AddFlag("keep_special_tokens", &keep_special, "leave special tokens in the text");
  int code = 0;
  if (!ParseOrExit(parser, args, &code)) return code;
  if (model.empty()) return Fail(Missing("--model"));
  const std::string prompt = absl::StrJoin(parser.positionals(), " ");
  if (prompt.empty() && source.empty()) return Fail(Missing("PROMPT or --source"));

  request.set_model(model);
  request.set_prompt(prompt);
  request.set_source(source);
  request.set_target_prefix(target_prefix);
  request.set_max_new_tokens(max_new_tokens);
  request.set_min_new_tokens(min_new_tokens);
  if (!strategy.empty()) {
    auto s = ParseStrategy(strategy);
    if (!s.ok()) return Fail(s.status());
    request.set_strategy(*s);
  }
  if (!mask.empty()) {
    auto m = ParseMaskSpec(mask);
    if (!m.ok()) return Fail(m.status());
    *request.mutable_mask() = *m;
  }
  if (temperature) request.set_temperature(*temperature);
  request.set_top_k(top_k);
  if (top_p) request.set_top_p(*top_p);
  if (repetition_penalty) request.set_repetition_penalty(*repetition_penalty);
  request.set_no_repeat_ngram_size(no_repeat_ngram);
  request.set_beam_width(beam_width);
  if (length_penalty) request.set_length_penalty(*length_penalty);
  request.set_early_stopping(early_stopping);
  request.set_num_return_sequences(num_return);
  if (seed) request.set_seed(*seed);
  for (const auto& s : stop) request.add_stop(s);
  for (int id : stop_token_ids) request.add_stop_token_ids(id);
  request.set_logprobs(logprobs);
  request.set_ignore_eos(ignore_eos);
  request.set_keep_special_tokens(keep_special);

  const CallOptions call = ctx.Call(kGenerateDeadline);
  if (!stream) {
    auto response = ctx.client->Generate(request, call);
    if (!response.ok()) return Fail(response.status());
    if (ctx.json) {
      PrintJson(*response);
      return 0;
    }
    const bool many = response->sequences_size() > 1;
    std::string finish;
    for (int i = 0; i < response->sequences_size(); ++i) {
      const auto& seq = response->sequences(i);
      if (many) {
        std::printf("[%d] (score %s, %s) %s\n", i, FormatFloat(seq.score()).c_str(),
                    FinishReasonName(seq.finish_reason()).c_str(), seq.text().c_str());
      } else {
        std::printf("%s\n", seq.text().c_str());
        finish = FinishReasonName(seq.finish_reason());
      }
    }
    PrintUsage(response->usage(), response->timing(), finish);
    return 0;
  }

  // Streaming: with one sequence its text is printed as it arrives; with
  // several, deltas are collected per sequence and printed at the end, since
  // interleaved fragments would be unreadable.
  const bool live = num_return <= 1;
  std::map<int, std::string> texts;
  std::map<int, std::string> finish;
  v1::Usage usage;
  v1::GenerationTiming timing;
  const absl::Status status = ctx.client->GenerateStream(
      request,
      [&](const v1::GenerateStreamResponse& m) {
        if (ctx.json) {
          std::printf("%s\n", ToJson(m, /*pretty=*/false).c_str());
          std::fflush(stdout);
          return true;
        }
        if (live) {
          std::fputs(m.text().c_str(), stdout);
          std::fflush(stdout);
        } else {
          texts[m.index()] += m.text();
        }
        if (m.finish_reason() != v1::FINISH_REASON_UNSPECIFIED) {
          finish[m.index()] = FinishReasonName(m.finish_reason());
        }
        if (m.has_usage()) usage = m.usage();
        if (m.has_timing()) timing = m.timing();
        return true;
      },
      call);
  if (!ctx.json && live) std::printf("\n");
  if (!status.ok()) return Fail(status);
  if (ctx.json) return 0;
  for (const auto& [index, text] : texts) {
    std::printf("[%d] (%s) %s\n", index, finish[index].c_str(), text.c_str());
  }
  PrintUsage(usage, timing, live ? finish[0] : "");
  return 0;
}

int RunParaphrase(CliContext& ctx, const Args& args) {
  ArgParser parser("paraphrase --model M [options] TEXT...");
  std::string model, pooling;
  // top_k -1 = not given: min(4, num_candidates), so that
  // `--num_candidates 2` alone is a valid request.
  int num_candidates = 8, top_k = -1, max_new_tokens = 32, sample_top_k = 0;
  std::optional<float> temperature, top_p;
  std::optional<uint64_t> seed;
  parser.AddString("model", &model, "UniLM-capable model name (required)");
  parser.AddInt("num_candidates", &num_candidates, "candidates to sample (default 8)");
  parser.AddInt("top_k", &top_k, "candidates to return (default min(4, num_candidates))");
  parser.AddInt("max_new_tokens", &max_new_tokens, "tokens per candidate (default 32)");
  parser.AddOptionalFloat("temperature", &temperature, "sampling temperature");
  parser.AddInt("sample_top_k", &sample_top_k, "sampling top-k (0 = off)");
  parser.AddOptionalFloat("top_p", &top_p, "nucleus sampling mass");
  parser.AddOptionalUint64("seed", &seed, "RNG seed");
  parser.AddString("pooling", &pooling, "pooling of the similarity embeddings");
  int code = 0;
  if (!ParseOrExit(parser, args, &code)) return code;
  if (model.empty()) return Fail(Missing("--model"));
  const std::string text = absl::StrJoin(parser.positionals(), " ");
  if (text.empty()) return Fail(Missing("TEXT"));

  v1::ParaphraseRequest request;
  request.set_model(model);
  request.set_text(text);
  request.set_num_candidates(num_candidates);
  request.set_top_k(top_k >= 0 ? top_k : std::min(4, num_candidates));
  request.set_max_new_tokens(max_new_tokens);
  if (temperature) request.set_temperature(*temperature);
  request.set_sample_top_k(sample_top_k);
  if (top_p) request.set_top_p(*top_p);
  if (seed) request.set_seed(*seed);
  if (!pooling.empty()) {
    auto p = ParsePooling(pooling);
    if (!p.ok()) return Fail(p.status());
    request.set_pooling(*p);
  }
  auto response = ctx.client->Paraphrase(request, ctx.Call(kGenerateDeadline));
  if (!response.ok()) return Fail(response.status());
  if (ctx.json) {
    PrintJson(*response);
    return 0;
  }
  for (const auto& p : response->paraphrases()) {
    std::printf("%s  %s\n", FormatFloat(p.similarity()).c_str(), p.text().c_str());
  }
  return 0;
}

}  // namespace maskserve::client::cli
