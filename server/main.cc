// maskserve: gRPC inference server for Transformer models on CPU.
// Parses flags, starts the server, and turns SIGTERM/SIGINT into a graceful
// drain (finish in-flight work within --shutdown_grace_s, then exit 0).
#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>

#include "absl/debugging/failure_signal_handler.h"
#include "absl/debugging/symbolize.h"
#include "absl/strings/str_cat.h"
#include "server/config.h"
#include "server/logging.h"
#include "server/server.h"

int main(int argc, char** argv) {
  using maskserve::server::LogEvent;
  using maskserve::server::LogLevel;

  // libgomp reads OMP_WAIT_POLICY once, when it loads: without PASSIVE its
  // idle workers spin and take the cores from the gRPC and batching threads
  // (and from the next batch). So set it and re-execute, unless the operator
  // chose a policy.
  if (std::getenv("OMP_WAIT_POLICY") == nullptr) {
    setenv("OMP_WAIT_POLICY", "PASSIVE", 1);
    execv("/proc/self/exe", argv);
    std::perror("maskserve: re-exec with OMP_WAIT_POLICY=PASSIVE failed; continuing");
  }

#if !defined(__SANITIZE_ADDRESS__) && !defined(__SANITIZE_THREAD__)
  // A crash prints the signal and a symbolised stack trace to stderr (the
  // log) before the default action; sanitizer builds keep their own reports.
  absl::InitializeSymbolizer(argv[0]);
  absl::InstallFailureSignalHandler(absl::FailureSignalHandlerOptions());
#endif

  // Block the shutdown signals in every thread (threads inherit the mask);
  // main waits for them synchronously below.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  // A client that disconnects must not kill the process.
  signal(SIGPIPE, SIG_IGN);

  absl::StatusOr<maskserve::server::ServerOptions> options =
      maskserve::server::ParseServerOptions(argc, argv);
  if (!options.ok()) {
    std::fprintf(stderr, "maskserve: %s\n", std::string(options.status().message()).c_str());
    return 2;
  }
  maskserve::server::LogLevel level;
  if (absl::Status s = maskserve::server::ParseLogLevel(options->log_level, &level); !s.ok()) {
    std::fprintf(stderr, "maskserve: --%s\n", std::string(s.message()).c_str());
    return 2;
  }
  maskserve::server::SetMinLogLevel(level);

  absl::StatusOr<std::unique_ptr<maskserve::server::Server>> server =
      maskserve::server::Server::Create(*options);
  if (!server.ok()) {
    LogEvent(LogLevel::kError, "startup_failed",
             {{"error", std::string(server.status().message())}});
    return 1;
  }

  for (;;) {
    int sig = 0;
    if (sigwait(&signals, &sig) != 0) continue;
    if (sig == SIGHUP) {
      // Re-reads the tokens file; errors are logged and the old tokens kept.
      (void)(*server)->ReloadAuth();
      continue;
    }
    LogEvent(LogLevel::kInfo, "signal", {{"signal", sig == SIGTERM ? "SIGTERM" : "SIGINT"}});
    break;
  }
  (*server)->Shutdown(options->shutdown_grace_s);
  server->reset();
  return 0;
}
