// Default sanitizer options for every test binary (the runtime calls these
// hooks at start-up; they are inert in builds without sanitizers).
extern "C" {

const char* __asan_default_options() { return "detect_leaks=1:abort_on_error=1"; }

const char* __ubsan_default_options() { return "print_stacktrace=1:halt_on_error=1"; }

const char* __lsan_default_options() {
  return "print_suppressions=0:suppressions=" MASKSERVE_LSAN_SUPPRESSIONS;
}

// Suppressions name frames inside gRPC / protobuf / Abseil only (Debian's
// builds are not TSan-instrumented); see tests/tsan.supp.
const char* __tsan_default_options() {
  return "halt_on_error=1:second_deadlock_stack=1:suppressions=" MASKSERVE_TSAN_SUPPRESSIONS;
}

}  // extern "C"
