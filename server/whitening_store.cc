#include "server/whitening_store.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "engine/safetensors_writer.h"
#include "server/whitening_profile_file.h"

namespace maskserve::server {
namespace {

namespace fs = std::filesystem;

absl::Status ErrnoError(const std::string& what, const std::string& path) {
  return absl::InternalError(absl::StrCat(what, " ", path, ": ", std::strerror(errno)));
}

void FsyncDir(const fs::path& dir) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return;
  ::fsync(fd);
  ::close(fd);
}

// mkdir -p that also fsyncs the parent of every directory it creates, so a
// profile written right after survives a crash together with its directory.
absl::Status MakeDirsDurably(const fs::path& dir) {
  struct stat st;
  if (::stat(dir.c_str(), &st) == 0) {
    if (S_ISDIR(st.st_mode)) return absl::OkStatus();
    return absl::FailedPreconditionError(absl::StrCat(dir.string(), " is not a directory"));
  }
  const fs::path parent = dir.parent_path();
  if (!parent.empty() && parent != dir) {
    if (auto s = MakeDirsDurably(parent); !s.ok()) return s;
  }
  if (::mkdir(dir.c_str(), 0755) != 0 && errno != EEXIST) {
    return ErrnoError("cannot create directory", dir.string());
  }
  FsyncDir(parent.empty() ? fs::path(".") : parent);
  return absl::OkStatus();
}

absl::StatusOr<std::string> ReadWholeFile(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return ErrnoError("cannot open", path);
  std::string out;
  char buf[1 << 16];
  while (true) {
    const ssize_t n = ::read(fd, buf, sizeof(buf));
    if (n < 0) {
      if (errno == EINTR) continue;
      absl::Status s = ErrnoError("cannot read", path);
      ::close(fd);
      return s;
    }
    if (n == 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  return out;
}

std::vector<fs::directory_entry> SortedEntries(const fs::path& dir, std::error_code& ec) {
  std::vector<fs::directory_entry> entries;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    entries.push_back(*it);
  }
  std::sort(entries.begin(), entries.end(),
            [](const auto& a, const auto& b) { return a.path() < b.path(); });
  return entries;
}

absl::Status NotFound(const std::string& model, const std::string& name) {
  return absl::NotFoundError(
      absl::StrCat("whitening profile '", name, "' not found for model '", model, "'"));
}

}  // namespace

absl::StatusOr<std::unique_ptr<WhiteningStore>> WhiteningStore::Open(const std::string& data_dir) {
  const fs::path root = fs::path(data_dir) / "whitening";
  if (auto s = MakeDirsDurably(root); !s.ok()) return s;
  std::unique_ptr<WhiteningStore> store(new WhiteningStore(root.string()));
  std::error_code ec;
  fs::directory_iterator probe(root, ec);
  if (ec) {
    return absl::InternalError(absl::StrCat("cannot read ", root.string(), ": ", ec.message()));
  }
  store->LoadAll();
  return store;
}

void WhiteningStore::LoadAll() {
  const std::string tmp_marker = absl::StrCat(kWhiteningFileExtension, ".tmp.");
  std::error_code ec;
  std::map<Key, std::shared_ptr<const StoredProfile>> loaded;
  for (const fs::directory_entry& model_dir : SortedEntries(root_, ec)) {
    const std::string model = model_dir.path().filename().string();
    std::error_code type_ec;
    if (!model_dir.is_directory(type_ec)) {
      open_warnings_.push_back(
          absl::StrCat("ignoring ", model_dir.path().string(), ": not a model directory"));
      continue;
    }
    if (!IsValidWhiteningName(model)) {
      open_warnings_.push_back(
          absl::StrCat("ignoring ", model_dir.path().string(), ": not a valid model name"));
      continue;
    }
    std::error_code list_ec;
    const auto files = SortedEntries(model_dir.path(), list_ec);
    if (list_ec) {
      open_warnings_.push_back(
          absl::StrCat("skipping ", model_dir.path().string(), ": ", list_ec.message()));
      continue;
    }
    for (const fs::directory_entry& file : files) {
      const std::string path = file.path().string();
      const std::string fname = file.path().filename().string();
      if (absl::StrContains(fname, tmp_marker)) {
        // A write that never reached its rename (kill -9, power loss): the
        // profile it was meant to replace (if any) is intact and loaded on
        // its own. The file is ours and never committed, so it goes, or
        // repeated crashes would pile them up.
        std::error_code rm_ec;
        fs::remove(file.path(), rm_ec);
        open_warnings_.push_back(absl::StrCat(rm_ec ? "ignoring " : "removed ", path,
                                              ": leftover temporary file of an interrupted write"));
        continue;
      }
      std::error_code file_ec;
      if (!absl::EndsWith(fname, kWhiteningFileExtension) || !file.is_regular_file(file_ec)) {
        open_warnings_.push_back(absl::StrCat("ignoring ", path, ": not a ",
                                              kWhiteningFileExtension, " profile file"));
        continue;
      }
      const std::string name =
          fname.substr(0, fname.size() - std::strlen(kWhiteningFileExtension));
      if (!IsValidWhiteningName(name)) {
        open_warnings_.push_back(absl::StrCat("ignoring ", path, ": not a valid profile name"));
        continue;
      }
      auto bytes = ReadWholeFile(path);
      if (!bytes.ok()) {
        open_warnings_.push_back(absl::StrCat("skipping ", path, ": ", bytes.status().message()));
        continue;
      }
      auto profile = DecodeWhiteningProfile(*bytes);
      if (!profile.ok()) {
        open_warnings_.push_back(
            absl::StrCat("skipping ", path, ": ", profile.status().message()));
        continue;
      }
      if ((*profile)->model() != model || (*profile)->name() != name) {
        open_warnings_.push_back(absl::StrCat("skipping ", path, ": it holds profile '",
                                              (*profile)->name(), "' of model '",
                                              (*profile)->model(), "'"));
        continue;
      }
      loaded[{model, name}] = *std::move(profile);
    }
  }
  if (ec) {
    open_warnings_.push_back(absl::StrCat("listing ", root_, " stopped early: ", ec.message()));
  }
  std::unique_lock<std::shared_mutex> lock(mu_);
  profiles_ = std::move(loaded);
}

std::string WhiteningStore::ProfilePath(const std::string& model, const std::string& name) const {
  return (fs::path(root_) / model / absl::StrCat(name, kWhiteningFileExtension)).string();
}

absl::Status WhiteningStore::Put(std::shared_ptr<const StoredProfile> profile, bool overwrite) {
  if (profile == nullptr) return absl::InvalidArgumentError("profile is null");
  const std::string& model = profile->model();
  const std::string& name = profile->name();
  if (auto s = ValidateWhiteningName(model, "model"); !s.ok()) return s;
  if (auto s = ValidateWhiteningName(name, "profile"); !s.ok()) return s;
  const std::string bytes = EncodeWhiteningProfile(*profile);

  std::lock_guard<std::mutex> write_lock(write_mu_);
  if (!overwrite) {
    std::shared_lock<std::shared_mutex> lock(mu_);
    if (profiles_.count({model, name}) > 0) {
      return absl::AlreadyExistsError(absl::StrCat("whitening profile '", name,
                                                   "' already exists for model '", model, "'"));
    }
  }
  if (auto s = MakeDirsDurably(fs::path(root_) / model); !s.ok()) return s;
  if (auto s = engine::WriteFileAtomically(ProfilePath(model, name), bytes); !s.ok()) return s;
  std::unique_lock<std::shared_mutex> lock(mu_);
  profiles_[{model, name}] = std::move(profile);
  return absl::OkStatus();
}

absl::StatusOr<std::shared_ptr<const StoredProfile>> WhiteningStore::Get(
    const std::string& model, const std::string& name) const {
  if (auto s = ValidateWhiteningName(model, "model"); !s.ok()) return s;
  if (auto s = ValidateWhiteningName(name, "profile"); !s.ok()) return s;
  std::shared_lock<std::shared_mutex> lock(mu_);
  auto it = profiles_.find({model, name});
  if (it == profiles_.end()) return NotFound(model, name);
  return it->second;
}

std::vector<std::shared_ptr<const StoredProfile>> WhiteningStore::List(
    const std::string& model) const {
  std::vector<std::shared_ptr<const StoredProfile>> out;
  std::shared_lock<std::shared_mutex> lock(mu_);
  for (auto it = profiles_.lower_bound({model, std::string()});
       it != profiles_.end() && it->first.first == model; ++it) {
    out.push_back(it->second);
  }
  return out;
}

absl::Status WhiteningStore::Delete(const std::string& model, const std::string& name) {
  if (auto s = ValidateWhiteningName(model, "model"); !s.ok()) return s;
  if (auto s = ValidateWhiteningName(name, "profile"); !s.ok()) return s;
  std::lock_guard<std::mutex> write_lock(write_mu_);
  {
    std::shared_lock<std::shared_mutex> lock(mu_);
    if (profiles_.count({model, name}) == 0) return NotFound(model, name);
  }
  const std::string path = ProfilePath(model, name);
  // unlink is atomic: a reader (or a restart) sees the whole file or none.
  if (::unlink(path.c_str()) != 0 && errno != ENOENT) return ErrnoError("cannot delete", path);
  FsyncDir(fs::path(path).parent_path());
  std::unique_lock<std::shared_mutex> lock(mu_);
  profiles_.erase({model, name});
  return absl::OkStatus();
}

}  // namespace maskserve::server
