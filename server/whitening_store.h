// Named whitening profiles per model, persisted under --data_dir as
//
//   <data_dir>/whitening/<model>/<profile>.wprof
//
// (file format: server/whitening_profile_file.h, versioned and checksummed;
// JSON import/export: server/whitening_profile_json.h). Model and profile
// names are [A-Za-z0-9_.-]{1,64} and never "." or "..", so they cannot
// escape the directory.
//
// Crash safety: Put writes a temp file next to the target, fsyncs it, renames
// it over the target and fsyncs the directory (engine::WriteFileAtomically);
// Delete unlinks and fsyncs the directory. After a crash at any point a
// profile is either the old or the new one (or, for Delete, there or not),
// never a mix. Open loads every profile, verifies its checksum and skips
// (with a warning) anything corrupt, truncated, misplaced or left over from
// an interrupted write (those temporary files are removed); it never fails
// because of a bad profile file.
//
// Profiles are read on every Embed request, so Get is a shared-lock lookup
// returning a shared_ptr to an immutable profile (transform precomputed);
// Put/Delete do their disk I/O outside that lock.
#pragma once

#include <map>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "server/whitening_profile.h"

namespace maskserve::server {

class WhiteningStore {
 public:
  // Creates <data_dir>/whitening if needed and loads every profile in it.
  // Fails only when that directory cannot be created or read; problems with
  // individual files end up in open_warnings().
  static absl::StatusOr<std::unique_ptr<WhiteningStore>> Open(const std::string& data_dir);

  WhiteningStore(const WhiteningStore&) = delete;
  WhiteningStore& operator=(const WhiteningStore&) = delete;

  // One line per file or directory Open skipped, naming its path and why.
  const std::vector<std::string>& open_warnings() const { return open_warnings_; }

  // Stores `profile` under (profile->model(), profile->name()), durably,
  // replacing an existing one unless !overwrite (then ALREADY_EXISTS).
  // Readers see the old profile until the new one is on disk.
  absl::Status Put(std::shared_ptr<const StoredProfile> profile, bool overwrite = true);

  // NOT_FOUND naming model and profile when absent; INVALID_ARGUMENT for an
  // invalid name.
  absl::StatusOr<std::shared_ptr<const StoredProfile>> Get(const std::string& model,
                                                           const std::string& name) const;

  // The model's profiles sorted by name (empty for an unknown model).
  std::vector<std::shared_ptr<const StoredProfile>> List(const std::string& model) const;

  // Removes the profile from disk and memory; NOT_FOUND when absent.
  // Requests holding the profile keep using their copy.
  absl::Status Delete(const std::string& model, const std::string& name);

  // <data_dir>/whitening/<model>/<name>.wprof (names are not validated).
  std::string ProfilePath(const std::string& model, const std::string& name) const;

 private:
  using Key = std::pair<std::string, std::string>;  // (model, name)

  explicit WhiteningStore(std::string root) : root_(std::move(root)) {}
  void LoadAll();

  // <data_dir>/whitening
  const std::string root_;
  std::vector<std::string> open_warnings_;
  // Serialises Put/Delete (disk I/O and the exists check of !overwrite)
  // without blocking Get. Taken before mu_. std:: mutexes rather than
  // absl::Mutex: Debian's Abseil is not TSAN-instrumented, so TSAN cannot
  // see absl::Mutex and reports its critical sections as races.
  std::mutex write_mu_;
  // Guards profiles_; Get/List share it.
  mutable std::shared_mutex mu_;
  std::map<Key, std::shared_ptr<const StoredProfile>> profiles_;
};

}  // namespace maskserve::server
