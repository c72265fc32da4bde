// Run-time binding to libmaskserve_spm.so, the sentencepiece shim (see
// engine/spm_shim/spm_shim.h for why sentencepiece is never linked directly).
//
// The shim is dlopen()ed once per process with RTLD_NOW | RTLD_LOCAL |
// RTLD_DEEPBIND. RTLD_LOCAL keeps sentencepiece's bundled protobuf symbols out
// of the global scope, so gRPC's libprotobuf is unaffected. RTLD_DEEPBIND is
// needed as well: without it sentencepiece's own (interposable) calls into its
// protobuf bind to the process's libprotobuf 3.21 when gRPC has loaded it, and
// sentencepiece's 3.14 version check fails on the first model load.
// Sanitizer runtimes refuse RTLD_DEEPBIND in their dlopen interceptor; under
// a sanitizer the shim is opened through glibc's dlopen instead, which is safe
// because the sanitized shim lists the sanitizer runtime first among its
// dependencies (so deep binding still finds the interposed malloc) -- checked
// after loading.
//
// Where the shim is looked for, first hit wins:
//   1. $MASKSERVE_SPM_SHIM (a path to the .so);
//   2. the build tree's shim (compiled-in MASKSERVE_SPM_SHIM_PATH);
//   3. <dir of /proc/self/exe>/libmaskserve_spm.so and <dir>/../lib/libmaskserve_spm.so;
//   4. plain "libmaskserve_spm.so" through the dynamic loader's search path.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "engine/spm_shim/spm_shim.h"

namespace maskserve::engine {

// The resolved C functions of the shim. Process-wide and never unloaded.
struct SpmLibrary {
  std::string path;       // the file that was loaded
  decltype(&maskserve_spm_load) load = nullptr;
  decltype(&maskserve_spm_free) free = nullptr;
  decltype(&maskserve_spm_vocab_size) vocab_size = nullptr;
  decltype(&maskserve_spm_bos_id) bos_id = nullptr;
  decltype(&maskserve_spm_eos_id) eos_id = nullptr;
  decltype(&maskserve_spm_unk_id) unk_id = nullptr;
  decltype(&maskserve_spm_pad_id) pad_id = nullptr;
  decltype(&maskserve_spm_id_to_piece) id_to_piece = nullptr;
  decltype(&maskserve_spm_piece_to_id) piece_to_id = nullptr;
  decltype(&maskserve_spm_piece_type) piece_type = nullptr;
  decltype(&maskserve_spm_encode) encode = nullptr;
  decltype(&maskserve_spm_decode_ids) decode_ids = nullptr;
  decltype(&maskserve_spm_decode_pieces) decode_pieces = nullptr;

  // Loads the shim on first call (thread-safe); later calls return the same
  // result. FailedPrecondition listing every path tried when none loads.
  static absl::StatusOr<const SpmLibrary*> Get();
};

// One piece of an encoding: id and [begin, end) bytes of the input.
struct SpmPiece {
  int32_t id;
  uint32_t begin;
  uint32_t end;
};

// A loaded sentencepiece model. Immutable; every method is thread-safe.
class SpmModel {
 public:
  // Loads a .model file through the shim.
  static absl::StatusOr<std::unique_ptr<SpmModel>> Load(const std::string& model_path);
  ~SpmModel();
  SpmModel(const SpmModel&) = delete;
  SpmModel& operator=(const SpmModel&) = delete;

  int32_t vocab_size() const { return vocab_size_; }
  int32_t bos_id() const;  // -1 when undefined
  int32_t eos_id() const;
  int32_t unk_id() const;
  int32_t pad_id() const;
  // Piece string; empty outside [0, vocab_size).
  std::string IdToPiece(int32_t id) const;
  // Exact piece lookup; -1 when absent.
  int32_t PieceToId(absl::string_view piece) const;
  // MASKSERVE_SPM_* type of `id`; 0 outside the vocabulary.
  int PieceType(int32_t id) const;

  // sentencepiece Encode (normalisation included); appends to `out`.
  absl::Status Encode(absl::string_view text, std::vector<SpmPiece>* out) const;
  absl::StatusOr<std::string> DecodeIds(absl::Span<const int32_t> ids) const;
  absl::StatusOr<std::string> DecodePieces(const std::vector<std::string>& pieces) const;

 private:
  SpmModel(const SpmLibrary* lib, maskserve_spm_model* model);

  const SpmLibrary* lib_;
  maskserve_spm_model* model_;
  int32_t vocab_size_ = 0;
};

}  // namespace maskserve::engine
