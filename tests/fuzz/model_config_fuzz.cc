// Fuzzes ParseModelConfig on arbitrary config.json text. An accepted config
// must describe a buildable shape: positive dimensions and consistent heads.
#include <cstddef>
#include <cstdint>
#include <cstdlib>

#include "engine/model_config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  absl::string_view text(reinterpret_cast<const char*>(data), size);
  auto c = maskserve::engine::ParseModelConfig(text, "fuzz/config.json");
  if (!c.ok()) return 0;
  if (c->hidden_size <= 0 || c->num_hidden_layers <= 0 || c->num_attention_heads <= 0 ||
      c->num_key_value_heads <= 0 || c->head_dim <= 0 || c->intermediate_size <= 0 ||
      c->vocab_size <= 0 || c->max_position_embeddings < 0) {
    abort();
  }
  if (c->num_attention_heads % c->num_key_value_heads != 0) abort();
  if (c->is_encoder_decoder && c->num_decoder_layers <= 0) abort();
  return 0;
}
