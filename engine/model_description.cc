#include "engine/model_description.h"

namespace maskserve::engine {

const char* ComputeDtypeName(ComputeDtype dtype) {
  switch (dtype) {
    case ComputeDtype::kFloat32:
      return "float32";
    case ComputeDtype::kBFloat16:
      return "bfloat16";
  }
  return "float32";
}

}  // namespace maskserve::engine
