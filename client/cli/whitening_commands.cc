// whiten fit | list | get | delete | export | import.
//
// export / import use the JSON file format documented in
// client/lib/whitening_json.h:
//   {model, name, pooling, k, beta, gamma, dim, num_samples,
//    mean[dim], eigenvalues[dim], eigenvectors[dim*dim] (row-major)}
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <iostream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "client/cli/commands.h"
#include "client/lib/enum_names.h"
#include "client/lib/whitening_json.h"

namespace maskserve::client::cli {
namespace {

// Fitting streams a whole corpus through the model: no deadline unless
// --timeout_s says otherwise.
constexpr absl::Duration kFitDeadline = absl::InfiniteDuration();

// Non-empty lines of `path` (what FileTextSource will send), for the
// progress bar's total.
int64_t CountTexts(const std::string& path) {
  std::ifstream in(path);
  int64_t n = 0;
  std::string line;
  while (std::getline(in, line)) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (!line.empty()) ++n;
  }
  return n;
}

void DrawProgress(int64_t done, int64_t total) {
  constexpr int kWidth = 40;
  const double frac = total > 0 ? static_cast<double>(done) / total : 0.0;
  const int filled = static_cast<int>(frac * kWidth);
  std::string bar(filled, '#');
  bar.resize(kWidth, '.');
  std::fprintf(stderr, "\r[%s] %lld/%lld texts (%3.0f%%)", bar.c_str(),
               static_cast<long long>(done), static_cast<long long>(total),
               frac * 100.0);
  std::fflush(stderr);
}

void PrintProfile(const v1::WhiteningProfile& p) {
  Table table({"model:", p.model()});
  table.AddRow({"name:", p.name()});
  table.AddRow({"pooling:", PoolingName(p.pooling())});
  table.AddRow({"k:", absl::StrCat(p.k())});
  table.AddRow({"beta:", FormatFloat(p.beta(), 3)});
  table.AddRow({"gamma:", FormatFloat(p.gamma(), 3)});
  table.AddRow({"dim:", absl::StrCat(p.dim())});
  table.AddRow({"num_samples:", absl::StrCat(p.num_samples())});
  table.AddRow({"created_unix_s:", absl::StrCat(p.created_unix_s())});
  if (p.mean_size() > 0) {
    table.AddRow({"parameters:",
                  absl::StrCat("mean[", p.mean_size(), "] eigenvalues[",
                               p.eigenvalues_size(), "] eigenvectors[",
                               p.eigenvectors_size(), "]")});
  }
  std::fputs(table.Render().c_str(), stdout);
}

int Fit(CliContext& ctx, const Args& args) {
  ArgParser parser("whiten fit --model M --profile P --file F [options]");
  std::string model, profile, file, pooling;
  int k = 0, batch = 64;
  std::optional<float> beta, gamma;
  bool truncate = false;
  parser.AddString("model", &model, "model name (required)");
  parser.AddString("profile", &profile, "profile name to store (required)");
  parser.AddString("file", &file, "sentences, one per line (required)");
  parser.AddInt("k", &k, "output dimensions (0 = hidden size)");
  parser.AddOptionalFloat("beta", &beta, "mean-shift weight in [0,1] (default 1)");
  parser.AddOptionalFloat("gamma", &gamma, "variance exponent in [0,1] (default 1)");
  parser.AddString("pooling", &pooling, "pooling to fit with (default first_last_avg)");
  parser.AddFlag("truncate", &truncate, "truncate over-long sentences");
  parser.AddInt("batch", &batch, "sentences per stream message (default 64)");
  int code = 0;
  if (!ParseOrExit(parser, args, &code)) return code;
  if (model.empty()) return Fail(Missing("--model"));
  if (profile.empty()) return Fail(Missing("--profile"));
  if (file.empty()) return Fail(Missing("--file"));

  FitWhiteningParams params;
  params.k = k;
  params.beta = beta;
  params.gamma = gamma;
  params.truncate = truncate;
  if (!pooling.empty()) {
    auto p = ParsePooling(pooling);
    if (!p.ok()) return Fail(p.status());
    params.pooling = *p;
  }
  auto source = FileTextSource(file, batch);
  if (!source.ok()) return Fail(source.status());
  // A progress bar only makes sense on a terminal; in logs it is noise.
  const bool show_progress = isatty(STDERR_FILENO) == 1;
  const int64_t total = show_progress ? CountTexts(file) : 0;
  FitProgressCallback progress;
  if (show_progress) {
    progress = [total](int64_t texts, int64_t) { DrawProgress(texts, total); };
  }
  auto result = ctx.client->FitWhitening(model, profile, params, *source, progress,
                                         ctx.Call(kFitDeadline));
  if (show_progress) std::fputs("\n", stderr);
  if (!result.ok()) return Fail(result.status());
  if (ctx.json) {
    PrintJson(*result);
  } else {
    PrintProfile(*result);
  }
  return 0;
}

int List(CliContext& ctx, const Args& args) {
  ArgParser parser("whiten list --model M");
  std::string model;
  parser.AddString("model", &model, "model name (required)");
  int code = 0;
  if (!ParseOrExit(parser, args, &code)) return code;
  if (model.empty()) return Fail(Missing("--model"));
  auto response = ctx.client->ListWhitening(model, ctx.Call(absl::Seconds(30)));
  if (!response.ok()) return Fail(response.status());
  if (ctx.json) {
    PrintJson(*response);
    return 0;
  }
  Table table({"NAME", "POOLING", "K", "BETA", "GAMMA", "SAMPLES"});
  for (const auto& p : response->profiles()) {
    table.AddRow({p.name(), PoolingName(p.pooling()), absl::StrCat(p.k()),
                  FormatFloat(p.beta(), 3), FormatFloat(p.gamma(), 3),
                  absl::StrCat(p.num_samples())});
  }
  std::fputs(table.Render().c_str(), stdout);
  return 0;
}

int Get(CliContext& ctx, const Args& args) {
  ArgParser parser("whiten get --model M --profile P [--parameters]");
  v1::GetWhiteningRequest request;
  std::string model, profile;
  bool parameters = false;
  parser.AddString("model", &model, "model name (required)");
  parser.AddString("profile", &profile, "profile name (required)");
  parser.AddFlag("parameters", &parameters, "also fetch mean/eigenvalues/eigenvectors");
  int code = 0;
  if (!ParseOrExit(parser, args, &code)) return code;
  if (model.empty()) return Fail(Missing("--model"));
  if (profile.empty()) return Fail(Missing("--profile"));
  request.set_model(model);
  request.set_profile(profile);
  request.set_include_parameters(parameters);
  auto response = ctx.client->GetWhitening(request, ctx.Call(absl::Seconds(30)));
  if (!response.ok()) return Fail(response.status());
  if (ctx.json) {
    PrintJson(*response);
  } else {
    PrintProfile(*response);
  }
  return 0;
}

int Delete(CliContext& ctx, const Args& args) {
  ArgParser parser("whiten delete --model M --profile P");
  std::string model, profile;
  parser.AddString("model", &model, "model name (required)");
  parser.AddString("profile", &profile, "profile name (required)");
  int code = 0;
  if (!ParseOrExit(parser, args, &code)) return code;
  if (model.empty()) return Fail(Missing("--model"));
  if (profile.empty()) return Fail(Missing("--profile"));
  auto response =
      ctx.client->DeleteWhitening(model, profile, ctx.Call(absl::Seconds(30)));
  if (!response.ok()) return Fail(response.status());
  if (ctx.json) {
    PrintJson(*response);
  } else {
    std::printf("deleted %s/%s\n", model.c_str(), profile.c_str());
  }
  return 0;
}

int Export(CliContext& ctx, const Args& args) {
  ArgParser parser("whiten export --model M --profile P --out FILE.json (- = stdout)");
  std::string model, profile, out;
  parser.AddString("model", &model, "model name (required)");
  parser.AddString("profile", &profile, "profile name (required)");
  parser.AddString("out", &out, "output file, '-' for stdout (required)");
  int code = 0;
  if (!ParseOrExit(parser, args, &code)) return code;
  if (model.empty()) return Fail(Missing("--model"));
  if (profile.empty()) return Fail(Missing("--profile"));
  if (out.empty()) return Fail(Missing("--out"));
  v1::GetWhiteningRequest request;
  request.set_model(model);
  request.set_profile(profile);
  request.set_include_parameters(true);
  auto response = ctx.client->GetWhitening(request, ctx.Call(absl::Seconds(60)));
  if (!response.ok()) return Fail(response.status());
  const std::string json = WhiteningProfileToJson(*response, /*pretty=*/false) + "\n";
  if (out == "-") {
    std::fputs(json.c_str(), stdout);
    return 0;
  }
  // Write to a temporary name first so that an interrupted export never
  // leaves a truncated file under the requested name.
  const std::string tmp = out + ".tmp";
  {
    std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
    f << json;
    f.close();
    if (!f) {
      std::remove(tmp.c_str());
      return Fail(absl::PermissionDeniedError(absl::StrCat("cannot write '", out, "'")));
    }
  }
  if (std::rename(tmp.c_str(), out.c_str()) != 0) {
    std::remove(tmp.c_str());
    return Fail(absl::PermissionDeniedError(absl::StrCat("cannot write '", out, "'")));
  }
  if (!ctx.json) {
    std::printf("exported %s/%s (dim %d, k %d) to %s\n", model.c_str(),
                profile.c_str(), response->dim(), response->k(), out.c_str());
  }
  return 0;
}

int Import(CliContext& ctx, const Args& args) {
  ArgParser parser("whiten import --in FILE.json [--model M] [--profile P] [--overwrite]");
  std::string in, model, profile;
  bool overwrite = false;
  parser.AddString("in", &in, "profile JSON file, '-' for stdin (required)");
  parser.AddString("model", &model, "store under this model instead of the file's");
  parser.AddString("profile", &profile, "store under this name instead of the file's");
  parser.AddFlag("overwrite", &overwrite, "replace an existing profile");
  int code = 0;
  if (!ParseOrExit(parser, args, &code)) return code;
  if (in.empty()) return Fail(Missing("--in"));
  std::stringstream text;
  if (in == "-") {
    text << std::cin.rdbuf();
  } else {
    std::ifstream f(in, std::ios::binary);
    if (!f) return Fail(absl::NotFoundError(absl::StrCat("cannot read '", in, "'")));
    text << f.rdbuf();
  }
  auto parsed = WhiteningProfileFromJson(text.str());
  if (!parsed.ok()) return Fail(parsed.status());
  v1::ImportWhiteningRequest request;
  *request.mutable_profile() = *std::move(parsed);
  if (!model.empty()) request.mutable_profile()->set_model(model);
  if (!profile.empty()) request.mutable_profile()->set_name(profile);
  request.set_overwrite(overwrite);
  auto response = ctx.client->ImportWhitening(request, ctx.Call(absl::Seconds(60)));
  if (!response.ok()) return Fail(response.status());
  if (ctx.json) {
    PrintJson(*response);
  } else {
    std::printf("imported %s/%s (dim %d, k %d)\n", response->model().c_str(),
                response->name().c_str(), response->dim(), response->k());
  }
  return 0;
}

}  // namespace

int RunWhiten(CliContext& ctx, const Args& args) {
  static constexpr char kUsage[] =
      "usage: maskserve-cli [global flags] whiten fit|list|get|delete|export|import "
      "[options]\n  (run 'maskserve-cli whiten SUBCOMMAND --help' for its options)\n";
  if (args.empty()) {
    std::fputs(kUsage, stderr);
    return Fail(absl::InvalidArgumentError("whiten needs a subcommand"));
  }
  if (args[0] == "--help" || args[0] == "-h") {
    std::fputs(kUsage, stdout);
    return 0;
  }
  const Args rest(args.begin() + 1, args.end());
  const std::string& sub = args[0];
  if (sub == "fit") return Fit(ctx, rest);
  if (sub == "list") return List(ctx, rest);
  if (sub == "get") return Get(ctx, rest);
  if (sub == "delete") return Delete(ctx, rest);
  if (sub == "export") return Export(ctx, rest);
  if (sub == "import") return Import(ctx, rest);
  std::fputs(kUsage, stderr);
  return Fail(absl::InvalidArgumentError(absl::StrCat("unknown whiten subcommand '", sub, "'")));
}

}  // namespace maskserve::client::cli
