// The sentencepiece side of libmaskserve_spm.so (see spm_shim.h). Compiled
// with -fvisibility=hidden; only the extern "C" functions are exported, and
// exceptions never leave them.
#include "engine/spm_shim/spm_shim.h"

#include <sentencepiece_processor.h>

#include <cstring>
#include <exception>
#include <memory>
#include <string>
#include <vector>

#define SHIM_EXPORT __attribute__((visibility("default")))

struct maskserve_spm_model {
  sentencepiece::SentencePieceProcessor sp;
};

namespace {

void SetError(char* err, size_t err_size, const std::string& message) {
  if (err == nullptr || err_size == 0) return;
  const size_t n = message.size() < err_size - 1 ? message.size() : err_size - 1;
  std::memcpy(err, message.data(), n);
  err[n] = '\0';
}

}  // namespace

extern "C" {

SHIM_EXPORT int maskserve_spm_abi_version(void) { return MASKSERVE_SPM_ABI_VERSION; }

SHIM_EXPORT maskserve_spm_model* maskserve_spm_load(const char* path, char* err,
                                                    size_t err_size) {
  try {
    auto model = std::make_unique<maskserve_spm_model>();
    const auto status = model->sp.Load(path);
    if (!status.ok()) {
      SetError(err, err_size, status.ToString());
      return nullptr;
    }
    return model.release();
  } catch (const std::exception& e) {
    SetError(err, err_size, e.what());
  } catch (...) {
    SetError(err, err_size, "unknown exception in sentencepiece");
  }
  return nullptr;
}

SHIM_EXPORT void maskserve_spm_free(maskserve_spm_model* model) { delete model; }

SHIM_EXPORT int32_t maskserve_spm_vocab_size(const maskserve_spm_model* model) {
  return model->sp.GetPieceSize();
}
SHIM_EXPORT int32_t maskserve_spm_bos_id(const maskserve_spm_model* model) {
  return model->sp.bos_id();
}
SHIM_EXPORT int32_t maskserve_spm_eos_id(const maskserve_spm_model* model) {
  return model->sp.eos_id();
}
SHIM_EXPORT int32_t maskserve_spm_unk_id(const maskserve_spm_model* model) {
  return model->sp.unk_id();
}
SHIM_EXPORT int32_t maskserve_spm_pad_id(const maskserve_spm_model* model) {
  return model->sp.pad_id();
}

SHIM_EXPORT const char* maskserve_spm_id_to_piece(const maskserve_spm_model* model, int32_t id,
                                                  size_t* size) {
  if (id < 0 || id >= model->sp.GetPieceSize()) return nullptr;
  const std::string& piece = model->sp.IdToPiece(id);
  if (size != nullptr) *size = piece.size();
  return piece.c_str();
}

SHIM_EXPORT int32_t maskserve_spm_piece_to_id(const maskserve_spm_model* model, const char* piece,
                                              size_t size) {
  try {
    const std::string p(piece, size);
    const int id = model->sp.PieceToId(p);
    // PieceToId answers unk_id for strings it does not know.
    if (id < 0 || id >= model->sp.GetPieceSize() || model->sp.IdToPiece(id) != p) return -1;
    return id;
  } catch (...) {
    return -1;
  }
}

SHIM_EXPORT int maskserve_spm_piece_type(const maskserve_spm_model* model, int32_t id) {
  if (id < 0 || id >= model->sp.GetPieceSize()) return 0;
  if (model->sp.IsUnknown(id)) return MASKSERVE_SPM_UNKNOWN;
  if (model->sp.IsControl(id)) return MASKSERVE_SPM_CONTROL;
  if (model->sp.IsUnused(id)) return MASKSERVE_SPM_UNUSED;
  if (model->sp.IsByte(id)) return MASKSERVE_SPM_BYTE;
  return MASKSERVE_SPM_NORMAL;
}

SHIM_EXPORT int maskserve_spm_encode(const maskserve_spm_model* model, const char* text,
                                     size_t size, maskserve_spm_piece_fn fn, void* ctx, char* err,
                                     size_t err_size) {
  try {
    sentencepiece::ImmutableSentencePieceText spt;
    const auto status = model->sp.Encode(std::string_view(text, size), spt.mutable_proto());
    if (!status.ok()) {
      SetError(err, err_size, status.ToString());
      return -1;
    }
    const size_t n = spt.pieces_size();
    for (size_t i = 0; i < n; ++i) {
      const auto piece = spt.pieces(static_cast<int>(i));
      fn(ctx, static_cast<int32_t>(piece.id()), piece.begin(), piece.end());
    }
    return 0;
  } catch (const std::exception& e) {
    SetError(err, err_size, e.what());
  } catch (...) {
    SetError(err, err_size, "unknown exception in sentencepiece");
  }
  return -1;
}

SHIM_EXPORT int maskserve_spm_decode_ids(const maskserve_spm_model* model, const int32_t* ids,
                                         size_t n, maskserve_spm_bytes_fn fn, void* ctx,
                                         char* err, size_t err_size) {
  try {
    const std::vector<int> v(ids, ids + n);
    std::string out;
    const auto status = model->sp.Decode(v, &out);
    if (!status.ok()) {
      SetError(err, err_size, status.ToString());
      return -1;
    }
    fn(ctx, out.data(), out.size());
    return 0;
  } catch (const std::exception& e) {
    SetError(err, err_size, e.what());
  } catch (...) {
    SetError(err, err_size, "unknown exception in sentencepiece");
  }
  return -1;
}

SHIM_EXPORT int maskserve_spm_decode_pieces(const maskserve_spm_model* model,
                                            const char* const* pieces, const size_t* sizes,
                                            size_t n, maskserve_spm_bytes_fn fn, void* ctx,
                                            char* err, size_t err_size) {
  try {
    std::vector<std::string> v;
    v.reserve(n);
    for (size_t i = 0; i < n; ++i) v.emplace_back(pieces[i], sizes[i]);
    std::string out;
    const auto status = model->sp.Decode(v, &out);
    if (!status.ok()) {
      SetError(err, err_size, status.ToString());
      return -1;
    }
    fn(ctx, out.data(), out.size());
    return 0;
  } catch (const std::exception& e) {
    SetError(err, err_size, e.what());
  } catch (...) {
    SetError(err, err_size, "unknown exception in sentencepiece");
  }
  return -1;
}

}  // extern "C"
