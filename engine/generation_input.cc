#include "engine/generation_input.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"

namespace maskserve::engine {
namespace {

absl::Status AtField(const absl::Status& s, absl::string_view field) {
  return absl::Status(s.code(), absl::StrCat(field, ": ", s.message()));
}

absl::StatusOr<const Tokenizer*> NeedTokenizer(const Tokenizer* tokenizer, const char* field) {
  if (tokenizer == nullptr) {
    return absl::FailedPreconditionError(
        absl::StrCat(field, ": the model has no tokenizer files, so it only takes prompt_ids"));
  }
  return tokenizer;
}

// Tokens of the target prefix (no special tokens), appended after the prompt.
absl::Status AppendTargetPrefix(const Tokenizer* tokenizer, const GenerationInput& in,
                                std::vector<int32_t>* ids) {
  if (in.target_prefix.empty()) return absl::OkStatus();
  absl::StatusOr<const Tokenizer*> tok = NeedTokenizer(tokenizer, "target_prefix");
  if (!tok.ok()) return tok.status();
  absl::StatusOr<Encoding> enc = (*tok)->Encode(in.target_prefix, false, TruncationOptions{});
  if (!enc.ok()) return AtField(enc.status(), "target_prefix");
  ids->insert(ids->end(), enc->ids.begin(), enc->ids.end());
  return absl::OkStatus();
}

absl::Status RejectField(bool set, const char* field, const char* why) {
  if (!set) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat(field, " cannot be used here: ", why));
}

}  // namespace

absl::StatusOr<GenerationPrompt> BuildGenerationPrompt(const GenerativeModel& model,
                                                       const Tokenizer* tokenizer,
                                                       const GenerationInput& in,
                                                       const Tokenizer* target_tokenizer) {
  if (target_tokenizer == nullptr) target_tokenizer = tokenizer;
  GenerationPrompt p;
  // Length of the part that plays "segment 0" for a UNILM mask.
  int prefix_length = 0;
  switch (model.kind()) {
    case GenerationKind::kCausalLm: {
      const char* why = "the model is a decoder-only LM; send prompt or prompt_ids";
      if (absl::Status s = RejectField(!in.source.empty(), "source", why); !s.ok()) return s;
      if (!in.prompt.empty() && !in.prompt_ids.empty()) {
        return absl::InvalidArgumentError("set either prompt or prompt_ids, not both");
      }
      if (!in.prompt_ids.empty()) {
        for (size_t i = 0; i < in.prompt_ids.size(); ++i) {
          const int32_t id = in.prompt_ids[i];
          if (id < 0 || id >= model.vocab_size()) {
            return absl::InvalidArgumentError(absl::StrCat("prompt_ids[", i, "] = ", id,
                                                           " is outside the vocabulary [0, ",
                                                           model.vocab_size(), ")"));
          }
        }
        p.ids = in.prompt_ids;
      } else {
        if (in.prompt.empty()) {
          return absl::InvalidArgumentError("prompt (or prompt_ids) must not be empty");
        }
        absl::StatusOr<const Tokenizer*> tok = NeedTokenizer(tokenizer, "prompt");
        if (!tok.ok()) return tok.status();
        absl::StatusOr<Encoding> enc = (*tok)->Encode(in.prompt, true, TruncationOptions{});
        if (!enc.ok()) return AtField(enc.status(), "prompt");
        if (enc->ids.empty()) {
          return absl::InvalidArgumentError("prompt produces no tokens");
        }
        p.ids = std::move(enc->ids);
      }
      prefix_length = static_cast<int>(p.ids.size());
      if (absl::Status s = AppendTargetPrefix(tokenizer, in, &p.ids); !s.ok()) return s;
      break;
    }
    case GenerationKind::kUnilm:
    case GenerationKind::kEncoderDecoder: {
      const bool unilm = model.kind() == GenerationKind::kUnilm;
      const char* why = unilm ? "the model generates seq2seq with the UniLM mask; send source text"
                              : "the model is an encoder-decoder; send source text";
      if (absl::Status s = RejectField(!in.prompt_ids.empty(), "prompt_ids", why); !s.ok()) {
        return s;
      }
      // A plain prompt is the source of a seq2seq model, so clients that only
      // know `prompt` work with every model; naming both is ambiguous.
      if (!in.prompt.empty() && !in.source.empty()) {
        return absl::InvalidArgumentError(
            "set either source or prompt, not both (for a seq2seq model the prompt is the source)");
      }
      const bool from_prompt = in.source.empty();
      const std::string& source = from_prompt ? in.prompt : in.source;
      const char* field = from_prompt ? "prompt" : "source";
      if (source.empty()) {
        return absl::InvalidArgumentError("source (or prompt) must not be empty");
      }
      absl::StatusOr<const Tokenizer*> tok = NeedTokenizer(tokenizer, field);
      if (!tok.ok()) return tok.status();
      absl::StatusOr<Encoding> enc = (*tok)->Encode(source, true, TruncationOptions{});
      if (!enc.ok()) return AtField(enc.status(), field);
      if (enc->ids.empty()) {
        return absl::InvalidArgumentError(absl::StrCat(field, " produces no tokens"));
      }
      if (unilm) {
        p.ids = std::move(enc->ids);
        prefix_length = static_cast<int>(p.ids.size());
        if (absl::Status s = AppendTargetPrefix(tokenizer, in, &p.ids); !s.ok()) return s;
        p.type_ids.assign(p.ids.size(), 1);
        std::fill(p.type_ids.begin(), p.type_ids.begin() + prefix_length, 0);
        p.generated_type_id = 1;
      } else {
        if (model.max_source_length() > 0 &&
            static_cast<int>(enc->ids.size()) > model.max_source_length()) {
          return absl::InvalidArgumentError(absl::StrCat(field, " has ", enc->ids.size(),
                                                         " tokens; the model takes at most ",
                                                         model.max_source_length()));
        }
        p.source_ids = std::move(enc->ids);
        if (model.decoder_start_token_id() < 0) {
          return absl::FailedPreconditionError("the model has no decoder_start_token_id");
        }
        p.ids.push_back(model.decoder_start_token_id());
        prefix_length = 1;
        if (absl::Status s = AppendTargetPrefix(target_tokenizer, in, &p.ids); !s.ok()) return s;
      }
      break;
    }
  }

  if (!in.mask.has_value()) {
    p.mask = model.NaturalMask(prefix_length);
  } else {
    p.mask = *in.mask;
    if (p.mask.kind == MaskKind::kUnilm) {
      if (!p.mask.segment_ids.empty()) {
        return absl::InvalidArgumentError(
            "mask.segment_ids cannot be used for generation (the generated tokens have none); "
            "set mask.prefix_length or leave it 0 for the source length");
      }
      if (p.mask.prefix_length == 0) p.mask.prefix_length = prefix_length;
    }
  }
  if (absl::Status s = p.mask.Validate(static_cast<int>(p.ids.size())); !s.ok()) return s;
  if (absl::Status s = model.ValidateMask(p.mask); !s.ok()) return s;
  p.prompt_tokens = static_cast<int>(p.ids.size() + p.source_ids.size());
  p.text_context_ids.assign(p.ids.begin() + (model.kind() == GenerationKind::kUnilm
                                                 ? std::min<size_t>(prefix_length, p.ids.size())
                                                 : 0),
                            p.ids.end());
  return p;
}

}  // namespace maskserve::engine
