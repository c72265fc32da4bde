// models, model NAME, health [SERVICE].
#include <cstdio>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "client/cli/commands.h"
#include "client/lib/enum_names.h"

namespace maskserve::client::cli {
namespace {

std::string Tasks(const v1::ModelInfo& m) {
  std::vector<std::string> names;
  for (int t : m.tasks()) names.push_back(TaskName(static_cast<v1::Task>(t)));
  return names.empty() ? "-" : absl::StrJoin(names, ",");
}

std::string OrDash(const std::string& s) { return s.empty() ? "-" : s; }
std::string OrDash(int64_t v) { return v == 0 ? "-" : absl::StrCat(v); }

std::string ProfilesTable(
    const google::protobuf::RepeatedPtrField<v1::WhiteningProfileSummary>& ps) {
  Table table({"NAME", "POOLING", "K", "BETA", "GAMMA", "SAMPLES"});
  for (const auto& p : ps) {
    table.AddRow({p.name(), PoolingName(p.pooling()), absl::StrCat(p.k()),
                  FormatFloat(p.beta(), 3), FormatFloat(p.gamma(), 3),
                  absl::StrCat(p.num_samples())});
  }
  return table.Render();
}

}  // namespace

int RunModels(CliContext& ctx, const Args& args) {
  ArgParser parser("models");
  int code = 0;
  if (!ParseOrExit(parser, args, &code)) return code;
  if (!parser.positionals().empty()) {
    return Fail(absl::InvalidArgumentError("models takes no arguments"));
  }
  auto response = ctx.client->ListModels(ctx.Call(absl::Seconds(30)));
  if (!response.ok()) return Fail(response.status());
  if (ctx.json) {
    PrintJson(*response);
    return 0;
  }
  Table table({"NAME", "STATE", "ARCH", "TASKS", "DTYPE", "HIDDEN", "MAX_LEN"});
  for (const auto& m : response->models()) {
    table.AddRow({m.name(), ModelStateName(m.state()), OrDash(m.architecture()),
                  Tasks(m), OrDash(m.dtype()), OrDash(m.hidden_size()),
                  OrDash(m.max_sequence_length())});
  }
  std::fputs(table.Render().c_str(), stdout);
  for (const auto& m : response->models()) {
    if (!m.error().empty()) {
      std::printf("%s: error: %s\n", m.name().c_str(), m.error().c_str());
    }
  }
  return 0;
}

int RunModel(CliContext& ctx, const Args& args) {
  ArgParser parser("model NAME");
  int code = 0;
  if (!ParseOrExit(parser, args, &code)) return code;
  if (parser.positionals().size() != 1) {
    return Fail(absl::InvalidArgumentError("model takes exactly one NAME"));
  }
  auto m = ctx.client->GetModel(parser.positionals()[0], ctx.Call(absl::Seconds(30)));
  if (!m.ok()) return Fail(m.status());
  if (ctx.json) {
    PrintJson(*m);
    return 0;
  }
  std::vector<std::string> masks;
  for (int k : m->supported_masks()) {
    masks.push_back(MaskKindName(static_cast<v1::MaskKind>(k)));
  }
  Table table({"name:", m->name()});
  table.AddRow({"state:", ModelStateName(m->state())});
  if (!m->error().empty()) table.AddRow({"error:", m->error()});
  table.AddRow({"architecture:", OrDash(m->architecture())});
  table.AddRow({"tasks:", Tasks(*m)});
  table.AddRow({"dtype:", OrDash(m->dtype())});
  table.AddRow({"hidden_size:", absl::StrCat(m->hidden_size())});
  table.AddRow({"num_layers:", absl::StrCat(m->num_layers())});
  table.AddRow({"num_heads:", absl::StrCat(m->num_heads())});
  table.AddRow({"vocab_size:", absl::StrCat(m->vocab_size())});
  table.AddRow({"max_sequence_length:", absl::StrCat(m->max_sequence_length())});
  table.AddRow({"num_parameters:", absl::StrCat(m->num_parameters())});
  table.AddRow({"default_pooling:", PoolingName(m->default_pooling())});
  table.AddRow({"supported_masks:", masks.empty() ? "-" : absl::StrJoin(masks, ",")});
  table.AddRow({"path:", m->path().empty() ? "(built-in)" : m->path()});
  std::fputs(table.Render().c_str(), stdout);
  if (m->whitening_profiles_size() > 0) {
    std::printf("whitening profiles:\n%s",
                ProfilesTable(m->whitening_profiles()).c_str());
  } else {
    std::printf("whitening profiles: none\n");
  }
  return 0;
}

int RunHealth(CliContext& ctx, const Args& args) {
  ArgParser parser(
      "health [SERVICE]   (exit 0 when SERVING, 1 when not, 2 on error)");
  int code = 0;
  if (!ParseOrExit(parser, args, &code)) return code;
  if (parser.positionals().size() > 1) {
    return Fail(absl::InvalidArgumentError("health takes at most one SERVICE"));
  }
  const std::string service =
      parser.positionals().empty() ? "" : parser.positionals()[0];
  auto status = ctx.client->Health(service, ctx.Call(absl::Seconds(5)));
  if (!status.ok()) return Fail(status.status());
  if (ctx.json) {
    nlohmann::json j = {{"service", service}, {"status", HealthStatusName(*status)}};
    std::printf("%s\n", j.dump().c_str());
  } else {
    std::printf("%s\n", HealthStatusName(*status));
  }
  return *status == HealthStatus::kServing ? 0 : 1;
}

}  // namespace maskserve::client::cli
