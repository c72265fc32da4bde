// whitening_eval: BERT-whitening quality on STS-B, measured through a running
// maskserve over gRPC, next to the numbers of Su et al. 2021 ("Whitening
// Sentence Representations for Better Semantics and Faster Retrieval",
// arXiv:2103.15316, Table 1; see ../shared/data/DATA.md section 4).
//
// Steps: embed every STS-B test sentence once with the raw pooling and score
// Spearman(cosine, gold) x 100 ("raw"); fit whitening on the --fit_on
// sentences (the paper's "target" setting = train+dev+test, labels unused)
// with k = hidden; for each (beta, gamma) of the grid and each k, embed the
// test sentences with that profile and `dimensions = k` (the first k columns
// of the transform are exactly the paper's whitening-k) and score again.
//
// mu and Sigma do not depend on (beta, gamma), so by default the corpus is
// embedded and fitted once and the other grid points are stored with
// ImportWhitening from that fit's parameters (same mu, U, Lambda; the server
// applies beta and gamma at Embed time). --refit fits every grid point over
// FitWhitening instead. The temporary profiles (named --profile_prefix-...)
// are deleted at the end unless --keep_profiles.
//
// Exit code: 0, 1 when an RPC or the data fails, 2 on bad flags.
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "bench/spearman.h"
#include "bench/sts_benchmark.h"
#include "client/lib/client.h"
#include "client/lib/enum_names.h"

ABSL_FLAG(std::string, target, "localhost:50051", "server address host:port");
ABSL_FLAG(std::string, model, "", "model name on the server (required)");
ABSL_FLAG(std::string, data_dir, "../shared/data",
          "directory holding stsbenchmark/sts-{train,dev,test}.csv");
ABSL_FLAG(std::string, pooling, "first_last_avg",
          "pooling for raw vectors and the fit (paper: first_last_avg)");
ABSL_FLAG(std::string, fit_on, "all",
          "sentences to fit whitening on: all (= train,dev,test: the paper's "
          "'target' setting), or a comma list of train, dev, test");
ABSL_FLAG(std::string, ks, "full,256,128,64",
          "output dimensions to score; 'full' = hidden size; k > hidden is skipped");
ABSL_FLAG(std::string, betas, "0,0.5,1", "mean-shift weights beta (1 = classic whitening)");
ABSL_FLAG(std::string, gammas, "0,0.5,1",
          "variance exponents gamma (1 = classic whitening)");
ABSL_FLAG(int, batch, 64, "texts per Embed request / FitWhitening message");
ABSL_FLAG(int, max_length, 0,
          "token budget per sentence, longer ones are truncated (0 = the model's "
          "maximum; FitWhitening always uses the model's maximum, the paper used 64)");
ABSL_FLAG(bool, refit, false,
          "fit every (beta, gamma) over FitWhitening instead of importing the "
          "first fit's mu/U/Lambda with other beta, gamma");
ABSL_FLAG(std::string, paper_row, "auto",
          "paper rows shown for reference: auto (hidden 1024 -> bert-large, else "
          "bert-base), bert-base, bert-large, sbert-base, sbert-large, none");
ABSL_FLAG(std::string, profile_prefix, "",
          "name prefix of the temporary profiles (default weval-<time>-<pid>)");
ABSL_FLAG(bool, keep_profiles, false, "do not delete the fitted profiles at the end");
ABSL_FLAG(double, wait_ready_s, 300, "wait this long for the model to become READY");
ABSL_FLAG(double, deadline_s, 3600, "deadline of each FitWhitening / Embed call, seconds");
ABSL_FLAG(bool, json, false, "print one JSON object on stdout instead of the table");

namespace maskserve::bench {
namespace {

namespace v1 = ::maskserve::v1;
using client::Client;

int Fail(const absl::Status& status) {
  std::fprintf(stderr, "error: %s: %s\n",
               absl::StatusCodeToString(status.code()).c_str(),
               std::string(status.message()).c_str());
  return 1;
}

int BadFlag(const std::string& message) {
  std::fprintf(stderr, "error: %s\n", message.c_str());
  return 2;
}

// Progress and notes go to stderr so --json output stays clean.
template <typename... Args>
void Note(const absl::FormatSpec<Args...>& format, const Args&... args) {
  std::fprintf(stderr, "%s\n", absl::StrFormat(format, args...).c_str());
}

// ---------------------------------------------------------------- paper rows

// The "(target)" rows of DATA.md section 4a/4b, STS-B column (Spearman x 100).
struct PaperRows {
  std::string label;         // e.g. "BERT-base"
  double raw;                // first-last-avg, no whitening
  double whitening;          // whitening, all dimensions
  int reduced_k;             // the paper's whitening-k
  double whitening_reduced;  // whitening-k
};

std::optional<PaperRows> PaperRowsFor(const std::string& name) {
  static const std::map<std::string, PaperRows> kRows = {
      {"bert-base", {"BERT-base", 59.04, 71.34, 256, 71.43}},
      {"bert-large", {"BERT-large", 59.59, 72.14, 384, 72.48}},
      {"sbert-base", {"SBERT-base-NLI", 77.63, 80.50, 256, 80.80}},
      {"sbert-large", {"SBERT-large-NLI", 79.16, 81.10, 384, 82.22}},
  };
  auto it = kRows.find(name);
  if (it == kRows.end()) return std::nullopt;
  return it->second;
}

// --------------------------------------------------------------- flag lists

absl::StatusOr<std::vector<float>> ParseFloats(const std::string& flag,
                                               const std::string& text) {
  std::vector<float> out;
  for (absl::string_view part : absl::StrSplit(text, ',', absl::SkipWhitespace())) {
    float v = 0;
    if (!absl::SimpleAtof(absl::StripAsciiWhitespace(part), &v) || !(v >= 0 && v <= 1)) {
      return absl::InvalidArgumentError(
          absl::StrCat("--", flag, ": '", part, "' is not a number in [0, 1]"));
    }
    out.push_back(v);
  }
  if (out.empty()) return absl::InvalidArgumentError(absl::StrCat("--", flag, " is empty"));
  return out;
}

// k values in flag order; 0 stands for "full".
absl::StatusOr<std::vector<int>> ParseKs(const std::string& text) {
  std::vector<int> out;
  for (absl::string_view part : absl::StrSplit(text, ',', absl::SkipWhitespace())) {
    part = absl::StripAsciiWhitespace(part);
    int k = 0;
    if (part == "full") {
      k = 0;
    } else if (!absl::SimpleAtoi(part, &k) || k <= 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("--ks: '", part, "' is neither 'full' nor a positive integer"));
    }
    out.push_back(k);
  }
  if (out.empty()) return absl::InvalidArgumentError("--ks is empty");
  return out;
}

absl::StatusOr<std::vector<std::string>> ParseSplits(const std::string& text) {
  if (text == "all") return std::vector<std::string>{"train", "dev", "test"};
  std::vector<std::string> out;
  for (absl::string_view part : absl::StrSplit(text, ',', absl::SkipWhitespace())) {
    std::string split(absl::StripAsciiWhitespace(part));
    if (split != "train" && split != "dev" && split != "test") {
      return absl::InvalidArgumentError(absl::StrCat(
          "--fit_on: '", split, "' is not all, train, dev or test"));
    }
    out.push_back(split);
  }
  if (out.empty()) return absl::InvalidArgumentError("--fit_on is empty");
  return out;
}

std::string FormatFloat(double v) { return absl::StrFormat("%g", v); }

// ---------------------------------------------------------------- embedding

// The test set as distinct sentences plus, per pair, the indices of its two
// sentences, so each sentence is embedded once per setting.
struct TestSet {
  std::vector<std::string> sentences;
  std::vector<std::pair<int, int>> pairs;
  std::vector<double> gold;
};

TestSet BuildTestSet(const std::vector<StsPair>& pairs) {
  TestSet set;
  std::map<std::string, int> index;
  auto id = [&](const std::string& s) {
    auto [it, inserted] = index.emplace(s, static_cast<int>(set.sentences.size()));
    if (inserted) set.sentences.push_back(s);
    return it->second;
  };
  for (const StsPair& p : pairs) {
    const int a = id(p.sentence1);
    const int b = id(p.sentence2);
    set.pairs.emplace_back(a, b);
    set.gold.push_back(p.score);
  }
  return set;
}

// Row-major [n][dim] vectors.
struct Vectors {
  int dim = 0;
  std::vector<float> values;
  int truncated = 0;
  const float* row(int i) const { return values.data() + static_cast<size_t>(i) * dim; }
};

struct EmbedSettings {
  v1::Pooling pooling = v1::POOLING_UNSPECIFIED;
  std::string profile;  // empty = no whitening
  int dimensions = 0;   // 0 = all
};

absl::StatusOr<Vectors> EmbedAll(Client& client, const std::string& model,
                                 const std::vector<std::string>& texts,
                                 const EmbedSettings& settings, int batch,
                                 int max_length, const client::CallOptions& call) {
  Vectors out;
  for (size_t begin = 0; begin < texts.size(); begin += batch) {
    const size_t end = std::min(texts.size(), begin + static_cast<size_t>(batch));
    v1::EmbedRequest request;
    request.set_model(model);
    for (size_t i = begin; i < end; ++i) request.add_texts(texts[i]);
    request.set_pooling(settings.pooling);
    request.set_whitening_profile(settings.profile);
    request.set_dimensions(settings.dimensions);
    request.set_truncate(true);
    request.set_max_length(max_length);
    auto response = client.Embed(request, call);
    if (!response.ok()) {
      return absl::Status(response.status().code(),
                          absl::StrCat("Embed (texts ", begin, "..", end - 1,
                                       "): ", response.status().message()));
    }
    if (response->embeddings_size() != static_cast<int>(end - begin)) {
      return absl::InternalError(absl::StrCat("Embed returned ", response->embeddings_size(),
                                              " vectors for ", end - begin, " texts"));
    }
    for (const auto& e : response->embeddings()) {
      if (out.dim == 0) out.dim = e.values_size();
      if (e.values_size() != out.dim || out.dim == 0) {
        return absl::InternalError(absl::StrCat("Embed returned a vector of length ",
                                                e.values_size(), ", expected ", out.dim));
      }
      out.values.insert(out.values.end(), e.values().begin(), e.values().end());
      if (e.truncated()) ++out.truncated;
    }
  }
  return out;
}

// Spearman(cosine, gold) x 100 over the test pairs.
absl::StatusOr<double> Score(const TestSet& set, const Vectors& vectors) {
  std::vector<double> cosines;
  cosines.reserve(set.pairs.size());
  for (const auto& [a, b] : set.pairs) {
    cosines.push_back(Cosine(vectors.row(a), vectors.row(b), vectors.dim));
  }
  std::optional<double> rho = Spearman(cosines, set.gold);
  if (!rho) return absl::InternalError("Spearman undefined: the cosines are all equal");
  return 100.0 * *rho;
}

// ------------------------------------------------------------------ results

struct Row {
  std::string setting;  // raw | whitening | whitening-k
  int k = 0;
  std::optional<float> beta, gamma;
  double spearman = 0;
  std::string paper_label;  // empty = no paper row applies
  std::optional<double> paper_value;
  std::string profile;
};

// Deletes the temporary profiles however main() exits.
class ProfileCleanup {
 public:
  ProfileCleanup(Client& client, std::string model, bool keep)
      : client_(client), model_(std::move(model)), keep_(keep) {}
  ~ProfileCleanup() {
    for (const std::string& name : names_) {
      if (keep_) {
        Note("kept profile %s", name);
        continue;
      }
      client::CallOptions call;
      call.deadline = absl::Seconds(30);
      auto deleted = client_.DeleteWhitening(model_, name, call);
      if (!deleted.ok()) {
        Note("warning: could not delete profile %s: %s", name,
             std::string(deleted.status().message()));
      }
    }
  }
  void Add(const std::string& name) { names_.push_back(name); }

 private:
  Client& client_;
  std::string model_;
  bool keep_;
  std::vector<std::string> names_;
};

absl::StatusOr<v1::ModelInfo> WaitReady(Client& client, const std::string& model,
                                        absl::Duration wait) {
  const absl::Time until = absl::Now() + wait;
  while (true) {
    client::CallOptions call;
    call.deadline = absl::Seconds(30);
    auto info = client.GetModel(model, call);
    if (!info.ok()) return info.status();
    if (info->state() == v1::MODEL_STATE_READY) return info;
    if (info->state() == v1::MODEL_STATE_FAILED) {
      return absl::FailedPreconditionError(
          absl::StrCat("model '", model, "' failed to load: ", info->error()));
    }
    if (absl::Now() > until) {
      return absl::DeadlineExceededError(
          absl::StrCat("model '", model, "' is not READY after ", absl::FormatDuration(wait)));
    }
    absl::SleepFor(absl::Milliseconds(500));
  }
}

void PrintTable(const std::vector<Row>& rows) {
  std::printf("| setting | k | beta | gamma | Spearman x100 | paper row (STS-B, target) | paper |\n");
  std::printf("|---|---:|---:|---:|---:|---|---:|\n");
  for (const Row& r : rows) {
    std::printf("| %s | %d | %s | %s | %.2f | %s | %s |\n", r.setting.c_str(), r.k,
                r.beta ? FormatFloat(*r.beta).c_str() : "-",
                r.gamma ? FormatFloat(*r.gamma).c_str() : "-", r.spearman,
                r.paper_label.empty() ? "" : r.paper_label.c_str(),
                r.paper_value ? absl::StrFormat("%.2f", *r.paper_value).c_str() : "");
  }
}

int Run() {
  const std::string model = absl::GetFlag(FLAGS_model);
  if (model.empty()) return BadFlag("--model is required");
  auto pooling = client::ParsePooling(absl::GetFlag(FLAGS_pooling));
  if (!pooling.ok()) return BadFlag(std::string(pooling.status().message()));
  auto splits = ParseSplits(absl::GetFlag(FLAGS_fit_on));
  if (!splits.ok()) return BadFlag(std::string(splits.status().message()));
  auto ks = ParseKs(absl::GetFlag(FLAGS_ks));
  if (!ks.ok()) return BadFlag(std::string(ks.status().message()));
  auto betas = ParseFloats("betas", absl::GetFlag(FLAGS_betas));
  if (!betas.ok()) return BadFlag(std::string(betas.status().message()));
  auto gammas = ParseFloats("gammas", absl::GetFlag(FLAGS_gammas));
  if (!gammas.ok()) return BadFlag(std::string(gammas.status().message()));
  const int batch = absl::GetFlag(FLAGS_batch);
  if (batch <= 0) return BadFlag("--batch must be positive");
  const int max_length = absl::GetFlag(FLAGS_max_length);
  if (max_length < 0) return BadFlag("--max_length must be >= 0");
  const std::string paper_flag = absl::GetFlag(FLAGS_paper_row);
  if (paper_flag != "auto" && paper_flag != "none" && !PaperRowsFor(paper_flag)) {
    return BadFlag(absl::StrCat("--paper_row: unknown row '", paper_flag, "'"));
  }
  std::string prefix = absl::GetFlag(FLAGS_profile_prefix);
  if (prefix.empty()) {
    prefix = absl::StrCat("weval-", absl::ToUnixSeconds(absl::Now()), "-", getpid());
  }

  // Data first: a wrong --data_dir should fail before any RPC.
  const std::string dir = absl::GetFlag(FLAGS_data_dir) + "/stsbenchmark";
  auto test_pairs = ReadStsBenchmark(dir + "/sts-test.csv");
  if (!test_pairs.ok()) return Fail(test_pairs.status());
  std::vector<std::string> fit_texts;
  for (const std::string& split : *splits) {
    auto pairs = ReadStsBenchmark(absl::StrCat(dir, "/sts-", split, ".csv"));
    if (!pairs.ok()) return Fail(pairs.status());
    // Both sentences of every pair, duplicates kept, as the paper's fit.
    for (const StsPair& p : *pairs) {
      fit_texts.push_back(p.sentence1);
      fit_texts.push_back(p.sentence2);
    }
  }
  const TestSet test = BuildTestSet(*test_pairs);
  Note("STS-B test: %d pairs, %d distinct sentences; fit on %s: %d sentences",
       static_cast<int>(test.pairs.size()), static_cast<int>(test.sentences.size()),
       absl::StrJoin(*splits, "+"), static_cast<int>(fit_texts.size()));

  client::ClientOptions options;
  options.target = absl::GetFlag(FLAGS_target);
  auto client = Client::Create(options);
  if (!client.ok()) return Fail(client.status());
  auto info = WaitReady(**client, model, absl::Seconds(absl::GetFlag(FLAGS_wait_ready_s)));
  if (!info.ok()) return Fail(info.status());
  const int hidden = info->hidden_size();
  Note("model %s: %s, hidden %d, %d layers, dtype %s", model, info->architecture(), hidden,
       info->num_layers(), info->dtype());

  std::optional<PaperRows> paper;
  if (paper_flag == "auto") {
    paper = PaperRowsFor(hidden == 1024 ? "bert-large" : "bert-base");
  } else if (paper_flag != "none") {
    paper = PaperRowsFor(paper_flag);
  }
  std::vector<std::string> notes;
  auto add_note = [&](const std::string& n) {
    notes.push_back(n);
    Note("note: %s", n);
  };
  if (paper) {
    if (*pooling != v1::POOLING_FIRST_LAST_AVG) {
      add_note("the paper rows use first_last_avg pooling; this run uses " +
               client::PoolingName(*pooling));
    }
    if (absl::GetFlag(FLAGS_fit_on) != "all") {
      add_note("the paper's (target) rows fit on train+dev+test; this run fits on " +
               absl::StrJoin(*splits, "+"));
    }
    if (hidden != 768 && hidden != 1024) {
      add_note(absl::StrCat("hidden size ", hidden, " is not BERT-base/large: the paper "
                            "column is for reference only"));
    }
  }

  // Distinct k values <= hidden, in flag order; "full" = hidden.
  std::vector<int> k_values;
  for (int k : *ks) {
    const int eff = k == 0 ? hidden : k;
    if (eff > hidden) {
      add_note(absl::StrCat("k=", k, " skipped: larger than the hidden size ", hidden));
      continue;
    }
    if (std::find(k_values.begin(), k_values.end(), eff) != k_values.end()) {
      add_note(absl::StrCat("k=", eff, " listed twice (full = ", hidden, "): scored once"));
      continue;
    }
    k_values.push_back(eff);
  }

  client::CallOptions call;
  call.deadline = absl::Seconds(absl::GetFlag(FLAGS_deadline_s));
  std::vector<Row> rows;
  int truncated = 0;

  // Raw vectors.
  absl::Time t0 = absl::Now();
  EmbedSettings raw_settings;
  raw_settings.pooling = *pooling;
  auto raw = EmbedAll(**client, model, test.sentences, raw_settings, batch, max_length, call);
  if (!raw.ok()) return Fail(raw.status());
  auto raw_score = Score(test, *raw);
  if (!raw_score.ok()) return Fail(raw_score.status());
  truncated = raw->truncated;
  Note("raw: %.2f (%d sentences embedded in %s)", *raw_score,
       static_cast<int>(test.sentences.size()), absl::FormatDuration(absl::Now() - t0));
  {
    Row r;
    r.setting = "raw";
    r.k = raw->dim;
    r.spearman = *raw_score;
    if (paper) {
      r.paper_label = paper->label + " first-last-avg";
      r.paper_value = paper->raw;
    }
    rows.push_back(r);
  }

  ProfileCleanup cleanup(**client, model, absl::GetFlag(FLAGS_keep_profiles));
  const bool refit = absl::GetFlag(FLAGS_refit);
  std::optional<v1::WhiteningProfile> fitted;  // parameters of the first fit
  std::optional<double> rotation_check;
  for (float beta : *betas) {
    for (float gamma : *gammas) {
      const std::string name = absl::StrCat(prefix, "-b", FormatFloat(beta), "-g",
                                            FormatFloat(gamma));
      t0 = absl::Now();
      if (refit || !fitted) {
        client::FitWhiteningParams params;
        params.k = 0;  // hidden: every k below is a truncation of this transform
        params.beta = beta;
        params.gamma = gamma;
        params.pooling = *pooling;
        params.truncate = true;
        auto profile = (*client)->FitWhitening(
            model, name, params, client::VectorTextSource(fit_texts, batch), nullptr, call);
        if (!profile.ok()) return Fail(profile.status());
        cleanup.Add(name);
        Note("fitted %s on %d sentences in %s", name, static_cast<int>(profile->num_samples()),
             absl::FormatDuration(absl::Now() - t0));
        if (!fitted) {
          v1::GetWhiteningRequest get;
          get.set_model(model);
          get.set_profile(name);
          get.set_include_parameters(true);
          auto full = (*client)->GetWhitening(get, call);
          if (!full.ok()) return Fail(full.status());
          fitted = *std::move(full);
        }
      } else {
        v1::ImportWhiteningRequest import;
        *import.mutable_profile() = *fitted;
        import.mutable_profile()->set_name(name);
        import.mutable_profile()->set_k(hidden);
        import.mutable_profile()->set_beta(beta);
        import.mutable_profile()->set_gamma(gamma);
        import.set_overwrite(true);
        auto stored = (*client)->ImportWhitening(import, call);
        if (!stored.ok()) return Fail(stored.status());
        cleanup.Add(name);
      }

      for (int k : k_values) {
        t0 = absl::Now();
        EmbedSettings settings;
        settings.pooling = *pooling;
        settings.profile = name;
        settings.dimensions = k == hidden ? 0 : k;
        auto vectors =
            EmbedAll(**client, model, test.sentences, settings, batch, max_length, call);
        if (!vectors.ok()) return Fail(vectors.status());
        if (vectors->dim != k) {
          return Fail(absl::InternalError(absl::StrCat("asked for ", k, " dimensions, got ",
                                                       vectors->dim)));
        }
        auto score = Score(test, *vectors);
        if (!score.ok()) return Fail(score.status());
        Row r;
        r.setting = k == hidden ? "whitening" : absl::StrCat("whitening-", k);
        r.k = k;
        r.beta = beta;
        r.gamma = gamma;
        r.spearman = *score;
        r.profile = name;
        if (paper && beta == 1.0f && gamma == 1.0f) {
          if (k == hidden) {
            r.paper_label = paper->label + "-whitening";
            r.paper_value = paper->whitening;
          } else if (k == paper->reduced_k) {
            r.paper_label = absl::StrCat(paper->label, "-whitening-", k);
            r.paper_value = paper->whitening_reduced;
          }
        }
        // beta = gamma = 0 is x*U, a rotation: cosines, hence the score,
        // must equal raw's. A cheap end-to-end check of the transform.
        if (beta == 0.0f && gamma == 0.0f && k == hidden) {
          rotation_check = std::abs(*score - *raw_score);
        }
        Note("%s beta=%g gamma=%g: %.2f (%s)", r.setting, beta, gamma, *score,
             absl::FormatDuration(absl::Now() - t0));
        rows.push_back(r);
      }
    }
  }
  if (truncated > 0) {
    add_note(absl::StrCat(truncated, " test sentences were truncated to ",
                          max_length > 0 ? absl::StrCat(max_length) : "the model maximum",
                          " tokens"));
  }
  if (rotation_check) {
    add_note(absl::StrFormat("rotation check (beta=gamma=0, full k vs raw): |diff| = %.4f",
                             *rotation_check));
  }

  if (absl::GetFlag(FLAGS_json)) {
    nlohmann::json out;
    out["model"] = model;
    out["architecture"] = info->architecture();
    out["hidden_size"] = hidden;
    out["pooling"] = client::PoolingName(*pooling);
    out["fit_on"] = *splits;
    out["fit_sentences"] = fit_texts.size();
    out["test_pairs"] = test.pairs.size();
    out["max_length"] = max_length;
    out["refit"] = refit;
    out["notes"] = notes;
    nlohmann::json jrows = nlohmann::json::array();
    for (const Row& r : rows) {
      nlohmann::json j;
      j["setting"] = r.setting;
      j["k"] = r.k;
      j["beta"] = r.beta ? nlohmann::json(*r.beta) : nlohmann::json(nullptr);
      j["gamma"] = r.gamma ? nlohmann::json(*r.gamma) : nlohmann::json(nullptr);
      j["spearman"] = r.spearman;
      j["paper_row"] = r.paper_label.empty() ? nlohmann::json(nullptr)
                                             : nlohmann::json(r.paper_label);
      j["paper"] = r.paper_value ? nlohmann::json(*r.paper_value) : nlohmann::json(nullptr);
      jrows.push_back(j);
    }
    out["rows"] = jrows;
    std::printf("%s\n", out.dump(2).c_str());
  } else {
    std::printf("model %s (%s, hidden %d), pooling %s, fit on %s (%zu sentences), "
                "STS-B test %zu pairs\n\n",
                model.c_str(), info->architecture().c_str(), hidden,
                client::PoolingName(*pooling).c_str(), absl::StrJoin(*splits, "+").c_str(),
                fit_texts.size(), test.pairs.size());
    PrintTable(rows);
    for (const std::string& n : notes) std::printf("\nnote: %s", n.c_str());
    if (!notes.empty()) std::printf("\n");
  }
  return 0;
}

}  // namespace
}  // namespace maskserve::bench

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "BERT-whitening on STS-B through a running maskserve:\n"
      "  whitening_eval --target localhost:50051 --model bert --data_dir ../shared/data");
  absl::ParseCommandLine(argc, argv);
  return maskserve::bench::Run();
}
