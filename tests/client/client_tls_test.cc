// The client's TLS options against a real TLS gRPC server in this process.
// Certificates (a test CA, a server certificate for "maskserve.test", a
// client certificate, and an unrelated CA) are made at test time with the
// openssl command. Checks: trust through tls_root_ca_file, the server name
// override (needed because the target is 127.0.0.1), rejection of an
// unknown CA, of a plaintext client, and of a client without a certificate
// when the server requires mutual TLS; and the same through maskserve-cli.
#include <grpcpp/grpcpp.h>
#include <grpcpp/security/server_credentials.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "client/lib/client.h"
#include "tests/client/fake_server.h"
#include "tests/client/subprocess.h"
#include "tests/util/test_env.h"

namespace maskserve::client {
namespace {

using ::maskserve::client::testing::BuiltBinary;
using ::maskserve::client::testing::FakeModels;
using ::maskserve::client::testing::ProcessResult;
using ::maskserve::client::testing::RunProcess;
using ::maskserve::client::testing::ShellQuote;
using ::testing::HasSubstr;

constexpr char kServerName[] = "maskserve.test";

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Runs a shell command in `dir`; true on exit status 0. Output goes to
// dir/openssl.log so a failure can be shown.
bool Sh(const std::string& dir, const std::string& cmd) {
  const std::string full =
      "cd " + ShellQuote(dir) + " && (" + cmd + ") >>openssl.log 2>&1";
  return std::system(full.c_str()) == 0;
}

// Makes ca.pem/ca.key, server.pem/server.key (SAN DNS:maskserve.test),
// client.pem/client.key (clientAuth) and other-ca.pem in `dir`. EC keys keep
// this fast.
bool MakeCertificates(const std::string& dir) {
  const std::string key = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
  return Sh(dir, "openssl req -x509 " + key +
                     " -keyout ca.key -out ca.pem -days 2 -subj /CN=maskserve-test-ca") &&
         Sh(dir, "openssl req -x509 " + key +
                     " -keyout other-ca.key -out other-ca.pem -days 2 -subj /CN=other-ca") &&
         Sh(dir, "openssl req " + key +
                     " -keyout server.key -out server.csr -subj /CN=maskserve.test") &&
         Sh(dir, "printf 'subjectAltName=DNS:maskserve.test\\nextendedKeyUsage=serverAuth\\n'"
                 " > server.ext") &&
         Sh(dir, "openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial"
                 " -out server.pem -days 2 -extfile server.ext") &&
         Sh(dir, "openssl req " + key +
                     " -keyout client.key -out client.csr -subj /CN=maskserve-client") &&
         Sh(dir, "printf 'extendedKeyUsage=clientAuth\\n' > client.ext") &&
         Sh(dir, "openssl x509 -req -in client.csr -CA ca.pem -CAkey ca.key -CAcreateserial"
                 " -out client.pem -days 2 -extfile client.ext");
}

// A Models service behind TLS on 127.0.0.1:<ephemeral>.
class TlsServer {
 public:
  TlsServer(const std::string& dir, bool require_client_cert) {
    grpc::SslServerCredentialsOptions ssl(
        require_client_cert ? GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY
                            : GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE);
    ssl.pem_root_certs = ReadFile(dir + "/ca.pem");
    ssl.pem_key_cert_pairs.push_back(
        {ReadFile(dir + "/server.key"), ReadFile(dir + "/server.pem")});
    grpc::EnableDefaultHealthCheckService(true);
    grpc::ServerBuilder builder;
    builder.AddListeningPort("127.0.0.1:0", grpc::SslServerCredentials(ssl), &port_);
    builder.RegisterService(&models_);
    server_ = builder.BuildAndStart();
  }
  ~TlsServer() {
    if (server_) server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(1));
  }
  bool ok() const { return server_ != nullptr && port_ > 0; }
  std::string target() const { return "127.0.0.1:" + std::to_string(port_); }
  FakeModels& models() { return models_; }

 private:
  FakeModels models_;
  int port_ = 0;
  std::unique_ptr<grpc::Server> server_;
};

class ClientTlsTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (std::system("command -v openssl >/dev/null 2>&1") != 0) return;
    dir_ = new std::string(maskserve::testing::MakeTempDir("client_tls_test"));
    if (!MakeCertificates(*dir_)) {
      ADD_FAILURE() << "openssl could not make the test certificates:\n"
                    << ReadFile(*dir_ + "/openssl.log");
    }
  }
  static void TearDownTestSuite() {
    if (dir_ != nullptr) {
      std::error_code ec;
      std::filesystem::remove_all(*dir_, ec);
      delete dir_;
      dir_ = nullptr;
    }
  }
  void SetUp() override {
    if (dir_ == nullptr) GTEST_SKIP() << "openssl command not found: TLS tests skipped";
  }

  // Options for `server` that fail fast (no retries, short deadline).
  ClientOptions Options(const TlsServer& server) const {
    ClientOptions o;
    o.target = server.target();
    o.max_retries = 0;
    o.default_deadline = absl::Seconds(5);
    return o;
  }
  std::string Path(const std::string& name) const { return *dir_ + "/" + name; }

  static std::string* dir_;
};

std::string* ClientTlsTest::dir_ = nullptr;

absl::StatusCode ListModelsCode(const ClientOptions& options) {
  auto client = Client::Create(options);
  if (!client.ok()) return client.status().code();
  return (*client)->ListModels().status().code();
}

TEST_F(ClientTlsTest, TrustsTheGivenRootCaWithServerNameOverride) {
  TlsServer server(*dir_, /*require_client_cert=*/false);
  ASSERT_TRUE(server.ok());
  ClientOptions o = Options(server);
  o.tls_root_ca_file = Path("ca.pem");
  o.tls_server_name_override = kServerName;
  auto client = Client::Create(o);
  ASSERT_TRUE(client.ok()) << client.status();
  auto models = (*client)->ListModels();
  ASSERT_TRUE(models.ok()) << models.status();
  EXPECT_EQ(models->models(0).name(), "fake-bert");
}

TEST_F(ClientTlsTest, HostnameMustMatchWithoutOverride) {
  TlsServer server(*dir_, false);
  ASSERT_TRUE(server.ok());
  ClientOptions o = Options(server);
  o.tls_root_ca_file = Path("ca.pem");
  // The certificate names maskserve.test, the target is 127.0.0.1.
  EXPECT_EQ(ListModelsCode(o), absl::StatusCode::kUnavailable);
}

TEST_F(ClientTlsTest, RejectsServerSignedByAnotherCa) {
  TlsServer server(*dir_, false);
  ASSERT_TRUE(server.ok());
  ClientOptions o = Options(server);
  o.tls_root_ca_file = Path("other-ca.pem");
  o.tls_server_name_override = kServerName;
  EXPECT_EQ(ListModelsCode(o), absl::StatusCode::kUnavailable);
}

TEST_F(ClientTlsTest, PlaintextClientCannotTalkToTlsServer) {
  TlsServer server(*dir_, false);
  ASSERT_TRUE(server.ok());
  EXPECT_EQ(ListModelsCode(Options(server)), absl::StatusCode::kUnavailable);
  EXPECT_EQ(server.models().list_calls, 0);
}

TEST_F(ClientTlsTest, MutualTlsNeedsTheClientCertificate) {
  TlsServer server(*dir_, /*require_client_cert=*/true);
  ASSERT_TRUE(server.ok());
  ClientOptions o = Options(server);
  o.tls_root_ca_file = Path("ca.pem");
  o.tls_server_name_override = kServerName;
  EXPECT_EQ(ListModelsCode(o), absl::StatusCode::kUnavailable);
  EXPECT_EQ(server.models().list_calls, 0);

  o.tls_cert_file = Path("client.pem");
  o.tls_key_file = Path("client.key");
  auto client = Client::Create(o);
  ASSERT_TRUE(client.ok()) << client.status();
  auto models = (*client)->ListModels();
  ASSERT_TRUE(models.ok()) << models.status();
  auto health = (*client)->Health();
  ASSERT_TRUE(health.ok()) << health.status();
  EXPECT_EQ(*health, HealthStatus::kServing);
}

TEST_F(ClientTlsTest, CliTlsFlags) {
  auto cli = BuiltBinary("client/maskserve-cli");
  if (!cli) GTEST_SKIP() << "maskserve-cli not built";
  TlsServer server(*dir_, /*require_client_cert=*/true);
  ASSERT_TRUE(server.ok());
  const std::string scratch = maskserve::testing::MakeTempDir("client_tls_cli");
  const std::vector<std::string> base = {
      "--target=" + server.target(), "--tls_ca=" + Path("ca.pem"),
      std::string("--tls_server_name=") + kServerName, "--max_retries=0", "--timeout_s=5"};
  std::vector<std::string> args = base;
  args.push_back("--tls_cert=" + Path("client.pem"));
  args.push_back("--tls_key=" + Path("client.key"));
  args.push_back("models");
  ProcessResult ok = RunProcess(*cli, args, scratch);
  EXPECT_EQ(ok.exit_code, 0) << ok.err;
  EXPECT_THAT(ok.out, HasSubstr("fake-bert"));

  args = base;
  args.push_back("models");
  ProcessResult no_cert = RunProcess(*cli, args, scratch);
  EXPECT_EQ(no_cert.exit_code, 2);
  EXPECT_THAT(no_cert.err, HasSubstr("error: UNAVAILABLE"));
  std::error_code ec;
  std::filesystem::remove_all(scratch, ec);
}

}  // namespace
}  // namespace maskserve::client
