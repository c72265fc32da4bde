#include "engine/safetensors_writer.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "nlohmann/json.hpp"

namespace maskserve::engine {
namespace {

std::string JsonString(const std::string& s) { return nlohmann::json(s).dump(); }

absl::Status Errno(const std::string& what, const std::string& path) {
  return absl::InternalError(absl::StrCat(what, " ", path, ": ", std::strerror(errno)));
}

}  // namespace

absl::Status SafetensorsWriter::AddRaw(const std::string& name, SafetensorsDtype dtype,
                                       std::vector<int64_t> shape, absl::string_view bytes) {
  if (name.empty() || name == "__metadata__") {
    return absl::InvalidArgumentError(absl::StrCat("bad tensor name '", name, "'"));
  }
  if (tensors_.count(name)) {
    return absl::AlreadyExistsError(absl::StrCat("tensor '", name, "' added twice"));
  }
  uint64_t n = 1;
  for (int64_t d : shape) {
    if (d < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("tensor '", name, "' has negative dimension in ", FormatShape(shape)));
    }
    n *= static_cast<uint64_t>(d);
  }
  if (n * SafetensorsDtypeSize(dtype) != bytes.size()) {
    return absl::InvalidArgumentError(absl::StrCat("tensor '", name, "' of shape ", FormatShape(shape),
                                                   " needs ", n * SafetensorsDtypeSize(dtype),
                                                   " bytes, got ", bytes.size()));
  }
  tensors_[name] = Pending{dtype, std::move(shape), std::string(bytes)};
  return absl::OkStatus();
}

absl::Status SafetensorsWriter::Add(const std::string& name, SafetensorsDtype dtype,
                                    std::vector<int64_t> shape, const float* data) {
  if (!IsFloatLoadable(dtype)) {
    return absl::InvalidArgumentError(absl::StrCat("tensor '", name, "': cannot store floats as ",
                                                   SafetensorsDtypeName(dtype)));
  }
  size_t n = 1;
  for (int64_t d : shape) {
    if (d < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("tensor '", name, "' has negative dimension in ", FormatShape(shape)));
    }
    n *= static_cast<size_t>(d);
  }
  std::string bytes(n * SafetensorsDtypeSize(dtype), '\0');
  if (dtype == SafetensorsDtype::kF32) {
    if (n > 0) std::memcpy(bytes.data(), data, n * 4);
  } else {
    for (size_t i = 0; i < n; ++i) {
      uint16_t h = dtype == SafetensorsDtype::kF16 ? Float32ToF16(data[i]) : Float32ToBF16(data[i]);
      std::memcpy(bytes.data() + 2 * i, &h, 2);
    }
  }
  return AddRaw(name, dtype, std::move(shape), bytes);
}

void SafetensorsWriter::SetMetadata(const std::string& key, const std::string& value) {
  metadata_[key] = value;
}

std::string SafetensorsWriter::Serialize() const {
  // Largest elements first keeps every tensor aligned to its element size.
  std::vector<const std::pair<const std::string, Pending>*> order;
  for (const auto& kv : tensors_) order.push_back(&kv);
  std::stable_sort(order.begin(), order.end(), [](const auto* a, const auto* b) {
    return SafetensorsDtypeSize(a->second.dtype) > SafetensorsDtypeSize(b->second.dtype);
  });

  std::vector<std::string> entries;
  if (!metadata_.empty()) {
    std::vector<std::string> kv;
    for (const auto& [k, v] : metadata_) kv.push_back(absl::StrCat(JsonString(k), ":", JsonString(v)));
    entries.push_back(absl::StrCat("\"__metadata__\":{", absl::StrJoin(kv, ","), "}"));
  }
  uint64_t offset = 0;
  for (const auto* t : order) {
    const uint64_t end = offset + t->second.bytes.size();
    entries.push_back(absl::StrCat(JsonString(t->first), ":{\"dtype\":\"",
                                   SafetensorsDtypeName(t->second.dtype), "\",\"shape\":[",
                                   absl::StrJoin(t->second.shape, ","), "],\"data_offsets\":[",
                                   offset, ",", end, "]}"));
    offset = end;
  }
  std::string header = absl::StrCat("{", absl::StrJoin(entries, ","), "}");
  header.append((8 - header.size() % 8) % 8, ' ');

  std::string out;
  out.reserve(8 + header.size() + offset);
  uint64_t len = header.size();
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>((len >> (8 * i)) & 0xff));
  out += header;
  for (const auto* t : order) out += t->second.bytes;
  return out;
}

absl::Status SafetensorsWriter::Write(const std::string& path) const {
  return WriteFileAtomically(path, Serialize());
}

absl::Status WriteFileAtomically(const std::string& path, absl::string_view contents) {
  namespace fs = std::filesystem;
  fs::path target(path);
  fs::path dir = target.parent_path();
  if (dir.empty()) dir = ".";
  std::string tmpl = (dir / (target.filename().string() + ".tmp.XXXXXX")).string();
  int fd = mkstemp(tmpl.data());
  if (fd < 0) return Errno("cannot create temp file next to", path);
  // mkstemp creates 0600; model files are meant to be shared read-only.
  fchmod(fd, 0644);
  const char* p = contents.data();
  size_t left = contents.size();
  while (left > 0) {
    ssize_t w = ::write(fd, p, left);
    if (w < 0) {
      if (errno == EINTR) continue;
      absl::Status s = Errno("write failed for", tmpl);
      ::close(fd);
      ::unlink(tmpl.c_str());
      return s;
    }
    p += w;
    left -= static_cast<size_t>(w);
  }
  if (::fsync(fd) != 0) {
    absl::Status s = Errno("fsync failed for", tmpl);
    ::close(fd);
    ::unlink(tmpl.c_str());
    return s;
  }
  if (::close(fd) != 0) {
    absl::Status s = Errno("close failed for", tmpl);
    ::unlink(tmpl.c_str());
    return s;
  }
  if (::rename(tmpl.c_str(), path.c_str()) != 0) {
    absl::Status s = Errno("cannot rename temp file to", path);
    ::unlink(tmpl.c_str());
    return s;
  }
  // Make the rename itself durable.
  int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
  return absl::OkStatus();
}

}  // namespace maskserve::engine
