#include "server/model_registry.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "absl/synchronization/notification.h"
#include "engine/model_config.h"
#include "engine/tokenizer/tokenizer.h"

namespace maskserve::server {
namespace {

using ::testing::HasSubstr;

std::shared_ptr<const engine::LoadedModel> FakeModel(const std::string& arch) {
  engine::ModelDescription d;
  d.architecture = arch;
  d.tasks = {engine::ModelTask::kEmbed};
  return std::make_shared<engine::LoadedModel>(d, std::make_unique<engine::ModelConfig>(), nullptr);
}

TEST(ModelRegistryTest, LoadsInOrderAndReportsStates) {
  absl::Notification release;
  ModelRegistry reg({{"good", "/g"}, {"bad", "/b"}}, [&](const ModelSpec& spec)
                        -> absl::StatusOr<std::shared_ptr<const engine::LoadedModel>> {
    release.WaitForNotification();
    if (spec.name == "bad") return absl::DataLossError("model.safetensors is truncated");
    return FakeModel("bert");
  });
  std::vector<std::string> events;
  absl::Mutex mu;
  reg.AddListener([&](const ModelSnapshot& s) {
    absl::MutexLock lock(&mu);
    events.push_back(s.spec.name + ":" + ModelStateName(s.state));
  });
  reg.Start();

  // While loading: LOADING, requests get UNAVAILABLE.
  EXPECT_FALSE(reg.AllSettled());
  EXPECT_EQ(reg.Get("good")->state, ModelState::kLoading);
  EXPECT_EQ(reg.GetReady("good").status().code(), absl::StatusCode::kUnavailable);

  release.Notify();
  reg.WaitUntilSettled();
  EXPECT_TRUE(reg.AllSettled());
  EXPECT_EQ(reg.Get("good")->state, ModelState::kReady);
  ASSERT_TRUE(reg.GetReady("good").ok());
  EXPECT_EQ((*reg.GetReady("good"))->description().architecture, "bert");

  absl::StatusOr<ModelSnapshot> bad = reg.Get("bad");
  EXPECT_EQ(bad->state, ModelState::kFailed);
  EXPECT_THAT(bad->error, HasSubstr("truncated"));
  absl::Status s = reg.GetReady("bad").status();
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(s.message()), HasSubstr("truncated"));

  absl::MutexLock lock(&mu);
  EXPECT_THAT(events, ::testing::ElementsAre("good:READY", "bad:FAILED"));
}

TEST(ModelRegistryTest, UnknownModelIsNotFoundAndListsKnownOnes) {
  ModelRegistry reg({{"a", "/a"}, {"b", "/b"}},
                    [](const ModelSpec&) { return FakeModel("bert"); });
  reg.Start();
  reg.WaitUntilSettled();
  absl::Status s = reg.GetReady("zzz").status();
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(s.message()), HasSubstr("'zzz'"));
  EXPECT_THAT(std::string(s.message()), HasSubstr("a, b"));
  ASSERT_EQ(reg.List().size(), 2u);
  EXPECT_EQ(reg.List()[1].spec.name, "b");
}

TEST(ModelRegistryTest, DrainingRefusesNewWork) {
  ModelRegistry reg({{"a", "/a"}}, [](const ModelSpec&) { return FakeModel("bert"); });
  reg.Start();
  reg.WaitUntilSettled();
  ASSERT_TRUE(reg.GetReady("a").ok());
  ASSERT_TRUE(reg.AcceptingWork().ok());
  reg.SetDraining();
  absl::Status s = reg.AcceptingWork();
  EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(std::string(s.message()), HasSubstr("shutting down"));
  // A call admitted before the drain still resolves its model from a worker.
  EXPECT_TRUE(reg.GetReady("a").ok());
  // Listing still works while draining.
  EXPECT_EQ(reg.Get("a")->state, ModelState::kReady);
}

}  // namespace
}  // namespace maskserve::server
