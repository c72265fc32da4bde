#include "server/metrics/http_exporter.h"

#include <httplib.h>
#include <sys/socket.h>

#include <cerrno>
#include <chrono>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "server/metrics/exposition.h"

namespace maskserve::server::metrics {
namespace {

// Scrapes are rare and cheap; two workers keep a slow client from blocking a
// probe without spending httplib's default of max(8, cores - 1) threads.
constexpr size_t kWorkerThreads = 2;

}  // namespace

absl::StatusOr<std::unique_ptr<HttpExporter>> HttpExporter::Create(
    const HttpExporterOptions& options) {
  if (options.registry == nullptr) {
    return absl::InvalidArgumentError("HttpExporterOptions.registry is required");
  }
  if (options.port < 0 || options.port > 65535) {
    return absl::InvalidArgumentError(absl::StrCat("invalid metrics port ", options.port));
  }
  if (options.tls_cert_file.empty() != options.tls_key_file.empty()) {
    return absl::InvalidArgumentError("HttpExporterOptions: tls_cert_file and tls_key_file go together");
  }
  std::unique_ptr<HttpExporter> e(new HttpExporter());
  e->options_ = options;
  if (options.tls_cert_file.empty()) {
    e->server_ = std::make_unique<httplib::Server>();
  } else {
    auto tls = std::make_unique<httplib::SSLServer>(options.tls_cert_file.c_str(),
                                                    options.tls_key_file.c_str());
    if (!tls->is_valid()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "metrics HTTPS: cannot use certificate '", options.tls_cert_file, "' with key '",
          options.tls_key_file, "'"));
    }
    e->server_ = std::move(tls);
  }
  httplib::Server& svr = *e->server_;
  svr.new_task_queue = [] { return new httplib::ThreadPool(kWorkerThreads); };
  // httplib's default sets SO_REUSEPORT, which would let a second process
  // bind the same port and steal half the scrapes; SO_REUSEADDR alone still
  // allows a quick restart over TIME_WAIT sockets.
  svr.set_socket_options([](socket_t sock) {
    int yes = 1;
    setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
  });
  svr.set_read_timeout(5, 0);
  svr.set_write_timeout(5, 0);

  const MetricsRegistry* registry = options.registry;
  svr.Get("/metrics", [registry](const httplib::Request&, httplib::Response& res) {
    res.set_content(RenderText(*registry), kTextExpositionContentType);
  });
  svr.Get("/healthz", [](const httplib::Request&, httplib::Response& res) {
    res.set_content("ok", "text/plain; charset=utf-8");
  });
  std::function<bool()> ready = options.ready;
  svr.Get("/readyz", [ready](const httplib::Request&, httplib::Response& res) {
    if (!ready || ready()) {
      res.set_content("ready", "text/plain; charset=utf-8");
    } else {
      res.status = 503;
      res.set_content("not ready", "text/plain; charset=utf-8");
    }
  });
  svr.set_error_handler([](const httplib::Request&, httplib::Response& res) {
    if (res.status == 404) res.set_content("not found", "text/plain; charset=utf-8");
  });

  errno = 0;
  int port = options.port;
  bool bound = false;
  if (port == 0) {
    port = svr.bind_to_any_port(options.bind_address);
    bound = port > 0;
  } else {
    bound = svr.bind_to_port(options.bind_address, port);
  }
  if (!bound) {
    const int err = errno;
    return absl::UnavailableError(
        absl::StrCat("metrics HTTP exporter cannot bind ", options.bind_address, ":",
                     options.port, err != 0 ? absl::StrCat(" (", std::strerror(err), ")") : ""));
  }
  e->port_ = port;

  HttpExporter* raw = e.get();
  e->thread_ = std::thread([raw] {
    raw->server_->listen_after_bind();
    raw->listen_returned_.store(true);
  });
  // httplib's stop() is a no-op until the accept loop has marked itself
  // running, so a Shutdown() right after Create() could otherwise leave the
  // thread blocked in accept() forever. Wait for the loop to start.
  while (!svr.is_running() && !raw->listen_returned_.load()) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return e;
}

void HttpExporter::Shutdown() {
  if (!thread_.joinable()) return;
  server_->stop();
  thread_.join();
}

HttpExporter::~HttpExporter() { Shutdown(); }

}  // namespace maskserve::server::metrics
