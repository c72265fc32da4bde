#include "server/request_interceptor.h"

#include <gtest/gtest.h>

namespace maskserve::server {
namespace {

TEST(SplitMethodTest, SplitsServiceAndMethod) {
  std::string service, method;
  SplitMethod("/maskserve.v1.Models/ListModels", &service, &method);
  EXPECT_EQ(service, "maskserve.v1.Models");
  EXPECT_EQ(method, "ListModels");
  SplitMethod("odd", &service, &method);
  EXPECT_EQ(service, "odd");
  EXPECT_EQ(method, "");
}

}  // namespace
}  // namespace maskserve::server
