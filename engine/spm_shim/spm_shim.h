// C ABI of libmaskserve_spm.so, the only place that links libsentencepiece.
//
// Why a separate shared library: Debian's libsentencepiece exports its own
// bundled copy of protobuf-lite (1,600+ symbols) which collides with the
// libprotobuf that gRPC uses; a binary linked to both crashes at start-up in
// protobuf's descriptor registration. The engine therefore never links
// sentencepiece: it dlopen()s this shim with RTLD_LOCAL (+ RTLD_DEEPBIND where
// the sanitizers allow it) and reaches it only through these plain C
// functions. The shim is built with hidden visibility and a version script,
// so it exports nothing else.
//
// Memory never crosses the boundary: results come back through callbacks
// (valid only during the call) or as pointers owned by the model.
#pragma once

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

// Bumped whenever a signature below changes; the loader refuses a mismatch.
#define MASKSERVE_SPM_ABI_VERSION 1

typedef struct maskserve_spm_model maskserve_spm_model;

// One piece of an encoding: vocabulary id and [begin, end) byte span of the
// input text it came from (sentencepiece's SentencePieceText offsets).
typedef void (*maskserve_spm_piece_fn)(void* ctx, int32_t id, uint32_t begin, uint32_t end);
// Receives output bytes (decoded text); called once per successful decode.
typedef void (*maskserve_spm_bytes_fn)(void* ctx, const char* data, size_t size);

// Piece types, as sentencepiece's ModelProto.SentencePiece.Type.
enum {
  MASKSERVE_SPM_NORMAL = 1,
  MASKSERVE_SPM_UNKNOWN = 2,
  MASKSERVE_SPM_CONTROL = 3,
  MASKSERVE_SPM_USER_DEFINED = 4,
  MASKSERVE_SPM_UNUSED = 5,
  MASKSERVE_SPM_BYTE = 6,
};

int maskserve_spm_abi_version(void);

// Loads a .model file. NULL on failure, with a NUL-terminated message in
// `err` (truncated to err_size).
maskserve_spm_model* maskserve_spm_load(const char* path, char* err, size_t err_size);
void maskserve_spm_free(maskserve_spm_model* model);

int32_t maskserve_spm_vocab_size(const maskserve_spm_model* model);
// -1 when the model has no such token.
int32_t maskserve_spm_bos_id(const maskserve_spm_model* model);
int32_t maskserve_spm_eos_id(const maskserve_spm_model* model);
int32_t maskserve_spm_unk_id(const maskserve_spm_model* model);
int32_t maskserve_spm_pad_id(const maskserve_spm_model* model);

// Piece text of `id` (owned by the model; NULL outside the vocabulary).
const char* maskserve_spm_id_to_piece(const maskserve_spm_model* model, int32_t id,
                                      size_t* size);
// Id of an exact piece, or -1 when the vocabulary lacks it (sentencepiece
// itself would answer unk_id).
int32_t maskserve_spm_piece_to_id(const maskserve_spm_model* model, const char* piece,
                                  size_t size);
// One of the MASKSERVE_SPM_* piece types; 0 outside the vocabulary.
int maskserve_spm_piece_type(const maskserve_spm_model* model, int32_t id);

// Encodes UTF-8 text (normalisation included). 0 on success; -1 with `err`.
int maskserve_spm_encode(const maskserve_spm_model* model, const char* text, size_t size,
                         maskserve_spm_piece_fn fn, void* ctx, char* err, size_t err_size);
// Decodes ids to UTF-8 text (sentencepiece's DecodeIds). 0 / -1 as above.
int maskserve_spm_decode_ids(const maskserve_spm_model* model, const int32_t* ids, size_t n,
                             maskserve_spm_bytes_fn fn, void* ctx, char* err, size_t err_size);
// Decodes piece strings (sentencepiece's DecodePieces: unknown pieces decode
// as the unk surface). `pieces[i]` has `sizes[i]` bytes. 0 / -1 as above.
int maskserve_spm_decode_pieces(const maskserve_spm_model* model, const char* const* pieces,
                                const size_t* sizes, size_t n, maskserve_spm_bytes_fn fn,
                                void* ctx, char* err, size_t err_size);

#ifdef __cplusplus
}  // extern "C"
#endif
