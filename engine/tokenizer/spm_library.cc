#include "engine/tokenizer/spm_library.h"

#include <dlfcn.h>
#include <unistd.h>

#include <cstdlib>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace maskserve::engine {
namespace {

constexpr const char* kShimName = "libmaskserve_spm.so";

// Sanitizer runtimes intercept dlopen and abort on RTLD_DEEPBIND: a
// deep-bound library whose own dependencies include libc would call libc's
// malloc/free directly, bypassing the sanitizer's interposed ones. Checked at
// run time so that any sanitized binary (fuzzers too) takes the same path.
bool SanitizerRuntimePresent() {
  for (const char* sym : {"__asan_init", "__tsan_init", "__msan_init", "__hwasan_init"}) {
    if (dlsym(RTLD_DEFAULT, sym) != nullptr) return true;
  }
  return false;
}

using DlopenFn = void* (*)(const char*, int);

// glibc's own dlopen, found in libc (2.34+) or libdl, not the sanitizer's
// interceptor that the plain name resolves to.
DlopenFn LibcDlopen() {
  for (const char* lib : {"libc.so.6", "libdl.so.2"}) {
    void* handle = dlopen(lib, RTLD_NOW | RTLD_NOLOAD);
    if (handle == nullptr) continue;
    if (void* fn = dlsym(handle, "dlopen"); fn != nullptr) return reinterpret_cast<DlopenFn>(fn);
  }
  return nullptr;
}

std::string ExecutableDir() {
  char buf[4096];
  const ssize_t n = readlink("/proc/self/exe", buf, sizeof(buf) - 1);
  if (n <= 0) return "";
  std::string path(buf, static_cast<size_t>(n));
  const size_t slash = path.rfind('/');
  return slash == std::string::npos ? "" : path.substr(0, slash);
}

std::vector<std::string> Candidates() {
  std::vector<std::string> paths;
  if (const char* env = std::getenv("MASKSERVE_SPM_SHIM"); env != nullptr && *env != '\0') {
    paths.emplace_back(env);
  }
#ifdef MASKSERVE_SPM_SHIM_PATH
  paths.emplace_back(MASKSERVE_SPM_SHIM_PATH);
#endif
  if (const std::string dir = ExecutableDir(); !dir.empty()) {
    paths.push_back(absl::StrCat(dir, "/", kShimName));
    paths.push_back(absl::StrCat(dir, "/../lib/", kShimName));
  }
  paths.emplace_back(kShimName);
  return paths;
}

template <typename F>
bool Bind(void* handle, const char* name, F* slot, std::string* missing) {
  *slot = reinterpret_cast<F>(dlsym(handle, name));
  if (*slot == nullptr) absl::StrAppend(missing, missing->empty() ? "" : ", ", name);
  return *slot != nullptr;
}

absl::StatusOr<SpmLibrary> Open() {
  SpmLibrary lib;
  // RTLD_LOCAL alone is not enough when the process has loaded libprotobuf
  // (gRPC does): sentencepiece's calls into its bundled protobuf would bind to
  // the global libprotobuf 3.21 and fail its version check. RTLD_DEEPBIND puts
  // the shim's own dependency list first. Under a sanitizer, the shim is built
  // with the same sanitizer and lists its runtime first among its
  // dependencies, so deep binding still reaches the interposed malloc; the
  // check after loading confirms it. The sanitizer's dlopen refuses the flag
  // regardless, so glibc's dlopen is called directly.
  DlopenFn open_fn = &dlopen;
  const bool sanitized = SanitizerRuntimePresent();
  if (sanitized) {
    open_fn = LibcDlopen();
    if (open_fn == nullptr) {
      return absl::FailedPreconditionError("cannot find glibc's dlopen to load the shim");
    }
  }
  const int flags = RTLD_NOW | RTLD_LOCAL | RTLD_DEEPBIND;
  std::vector<std::string> errors;
  void* handle = nullptr;
  for (const std::string& path : Candidates()) {
    // A bare name goes through the loader's search path; a path must exist.
    if (path.find('/') != std::string::npos && access(path.c_str(), R_OK) != 0) {
      errors.push_back(absl::StrCat(path, ": not found"));
      continue;
    }
    handle = open_fn(path.c_str(), flags);
    if (handle != nullptr) {
      lib.path = path;
      break;
    }
    const char* err = dlerror();
    errors.push_back(err != nullptr ? std::string(err) : absl::StrCat(path, ": dlopen failed"));
  }
  if (handle == nullptr) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot load the sentencepiece shim ", kShimName,
                     " (set MASKSERVE_SPM_SHIM to its path): ", absl::StrJoin(errors, "; ")));
  }
  if (sanitized && dlsym(handle, "malloc") != dlsym(RTLD_DEFAULT, "malloc")) {
    return absl::FailedPreconditionError(absl::StrCat(
        lib.path, " binds malloc past the sanitizer runtime; build it with the same sanitizer"));
  }
  std::string missing;
  using AbiFn = int (*)();
  AbiFn abi = nullptr;
  Bind(handle, "maskserve_spm_abi_version", &abi, &missing);
  Bind(handle, "maskserve_spm_load", &lib.load, &missing);
  Bind(handle, "maskserve_spm_free", &lib.free, &missing);
  Bind(handle, "maskserve_spm_vocab_size", &lib.vocab_size, &missing);
  Bind(handle, "maskserve_spm_bos_id", &lib.bos_id, &missing);
  Bind(handle, "maskserve_spm_eos_id", &lib.eos_id, &missing);
  Bind(handle, "maskserve_spm_unk_id", &lib.unk_id, &missing);
  Bind(handle, "maskserve_spm_pad_id", &lib.pad_id, &missing);
  Bind(handle, "maskserve_spm_id_to_piece", &lib.id_to_piece, &missing);
  Bind(handle, "maskserve_spm_piece_to_id", &lib.piece_to_id, &missing);
  Bind(handle, "maskserve_spm_piece_type", &lib.piece_type, &missing);
  Bind(handle, "maskserve_spm_encode", &lib.encode, &missing);
  Bind(handle, "maskserve_spm_decode_ids", &lib.decode_ids, &missing);
  Bind(handle, "maskserve_spm_decode_pieces", &lib.decode_pieces, &missing);
  if (!missing.empty()) {
    return absl::FailedPreconditionError(
        absl::StrCat(lib.path, " lacks the functions ", missing));
  }
  if (abi() != MASKSERVE_SPM_ABI_VERSION) {
    return absl::FailedPreconditionError(absl::StrCat(lib.path, " has ABI version ", abi(),
                                                      ", this binary needs ",
                                                      MASKSERVE_SPM_ABI_VERSION));
  }
  // Never dlclose()d: sentencepiece's static state lives as long as the process.
  return lib;
}

constexpr size_t kErrSize = 512;

void AppendBytes(void* ctx, const char* data, size_t size) {
  static_cast<std::string*>(ctx)->append(data, size);
}

}  // namespace

absl::StatusOr<const SpmLibrary*> SpmLibrary::Get() {
  static const absl::StatusOr<SpmLibrary>* lib = new absl::StatusOr<SpmLibrary>(Open());
  if (!lib->ok()) return lib->status();
  return &**lib;
}

SpmModel::SpmModel(const SpmLibrary* lib, maskserve_spm_model* model)
    : lib_(lib), model_(model), vocab_size_(lib->vocab_size(model)) {}

SpmModel::~SpmModel() { lib_->free(model_); }

absl::StatusOr<std::unique_ptr<SpmModel>> SpmModel::Load(const std::string& model_path) {
  absl::StatusOr<const SpmLibrary*> lib = SpmLibrary::Get();
  if (!lib.ok()) return lib.status();
  char err[kErrSize] = {0};
  maskserve_spm_model* model = (*lib)->load(model_path.c_str(), err, sizeof(err));
  if (model == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat(model_path, ": not a sentencepiece model: ", err));
  }
  return std::unique_ptr<SpmModel>(new SpmModel(*lib, model));
}

int32_t SpmModel::bos_id() const { return lib_->bos_id(model_); }
int32_t SpmModel::eos_id() const { return lib_->eos_id(model_); }
int32_t SpmModel::unk_id() const { return lib_->unk_id(model_); }
int32_t SpmModel::pad_id() const { return lib_->pad_id(model_); }

std::string SpmModel::IdToPiece(int32_t id) const {
  size_t size = 0;
  const char* p = lib_->id_to_piece(model_, id, &size);
  return p == nullptr ? std::string() : std::string(p, size);
}

int32_t SpmModel::PieceToId(absl::string_view piece) const {
  return lib_->piece_to_id(model_, piece.data(), piece.size());
}

int SpmModel::PieceType(int32_t id) const { return lib_->piece_type(model_, id); }

absl::Status SpmModel::Encode(absl::string_view text, std::vector<SpmPiece>* out) const {
  char err[kErrSize] = {0};
  auto emit = [](void* ctx, int32_t id, uint32_t begin, uint32_t end) {
    static_cast<std::vector<SpmPiece>*>(ctx)->push_back({id, begin, end});
  };
  if (lib_->encode(model_, text.data(), text.size(), emit, out, err, sizeof(err)) != 0) {
    return absl::InternalError(absl::StrCat("sentencepiece encode failed: ", err));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> SpmModel::DecodeIds(absl::Span<const int32_t> ids) const {
  char err[kErrSize] = {0};
  std::string out;
  if (lib_->decode_ids(model_, ids.data(), ids.size(), AppendBytes, &out, err, sizeof(err)) !=
      0) {
    return absl::InternalError(absl::StrCat("sentencepiece decode failed: ", err));
  }
  return out;
}

absl::StatusOr<std::string> SpmModel::DecodePieces(const std::vector<std::string>& pieces) const {
  std::vector<const char*> ptrs;
  std::vector<size_t> sizes;
  ptrs.reserve(pieces.size());
  sizes.reserve(pieces.size());
  for (const std::string& p : pieces) {
    ptrs.push_back(p.data());
    sizes.push_back(p.size());
  }
  char err[kErrSize] = {0};
  std::string out;
  if (lib_->decode_pieces(model_, ptrs.data(), sizes.data(), pieces.size(), AppendBytes, &out,
                          err, sizeof(err)) != 0) {
    return absl::InternalError(absl::StrCat("sentencepiece decode failed: ", err));
  }
  return out;
}

}  // namespace maskserve::engine
