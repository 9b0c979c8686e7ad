#include "fetch/artifact_cache.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <thread>

#include <fmt/format.h>

namespace llmesh::mesh {

namespace fs = std::filesystem;

namespace {

[[noreturn]] void io_error(const std::string& what, const fs::path& p) {
  throw FetchError(fmt::format("{} {}: {}", what, p.string(), std::strerror(errno)));
}

struct FdGuard {
  int fd = -1;
  ~FdGuard() {
    if (fd >= 0) ::close(fd);
  }
};

fs::path with_suffix(const fs::path& p, const char* suffix) {
  fs::path out = p;
  out += suffix;
  return out;
}

int64_t mtime_ns(const struct stat& st) {
  return static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec;
}

// Writes "<sha256> <size> <mtime_ns>\n" next to the file, atomically.
void write_marker(const fs::path& file, const std::string& sha, const struct stat& st) {
  static std::atomic<unsigned> counter{0};
  fs::path marker = with_suffix(file, ".sha256");
  fs::path tmp = with_suffix(file, fmt::format(".sha256.tmp.{}.{}", ::getpid(), counter++).c_str());
  {
    FdGuard f;
    f.fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0644);
    if (f.fd < 0) return;  // a marker is an optimisation: without it the file is re-hashed
    std::string line = fmt::format("{} {} {}\n", sha, static_cast<uint64_t>(st.st_size), mtime_ns(st));
    if (::write(f.fd, line.data(), line.size()) != static_cast<ssize_t>(line.size())) {
      ::unlink(tmp.c_str());
      return;
    }
  }
  if (::rename(tmp.c_str(), marker.c_str()) != 0) ::unlink(tmp.c_str());
}

bool marker_matches(const fs::path& file, const std::string& sha, const struct stat& st) {
  const fs::path marker = with_suffix(file, ".sha256");
  struct stat ms {};
  if (::lstat(marker.c_str(), &ms) != 0 || !S_ISREG(ms.st_mode)) return false;
  std::ifstream in(marker);
  if (!in) return false;
  std::string s;
  uint64_t size = 0;
  int64_t mt = 0;
  if (!(in >> s >> size >> mt)) return false;
  return s == sha && size == static_cast<uint64_t>(st.st_size) && mt == mtime_ns(st);
}

void fsync_dir(const fs::path& dir) {
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd >= 0) {
    ::fsync(fd);
    ::close(fd);
  }
}

}  // namespace

fs::path default_cache_root() {
  if (const char* c = std::getenv("LLMESH_CACHE"); c && *c) return fs::path(c);
  if (const char* x = std::getenv("XDG_CACHE_HOME"); x && *x) return fs::path(x) / "llmesh";
  const char* home = std::getenv("HOME");
  if (!home || !*home)
    throw FetchError("no cache directory: set LLMESH_CACHE (or HOME or XDG_CACHE_HOME)");
  return fs::path(home) / ".cache" / "llmesh";
}

ArtifactCache::ArtifactCache(std::string name_space, fs::path root, ArtifactCacheOptions options)
    : ns_(std::move(name_space)), root_(std::move(root)), options_(options) {
  try {
    validate_artifact_path(ns_);
  } catch (const FetchError& e) {
    throw FetchError(fmt::format("bad cache namespace: {}", e.what()));
  }
  if (root_.empty()) throw FetchError("empty cache root");
}

fs::path ArtifactCache::local_path(const ArtifactRef& ref) const {
  validate_artifact_path(ref.path);
  return root_ / ns_ / ref.path;
}

// Creates <root>/<ns>/<dirs of path>, refusing any existing component below the root that is a
// symbolic link or not a directory: nothing the cache writes lands outside its root.
void ArtifactCache::prepare_directories(const ArtifactRef& ref) const {
  std::error_code ec;
  fs::create_directories(root_, ec);
  if (!fs::is_directory(root_))
    throw FetchError(fmt::format("cache root {} is not a directory{}", root_.string(),
                                 ec ? ": " + ec.message() : ""));
  std::string rel = ns_ + "/" + ref.path;
  fs::path p = root_;
  size_t start = 0;
  for (;;) {
    size_t slash = rel.find('/', start);
    if (slash == std::string::npos) break;  // the last segment is the file itself
    p /= rel.substr(start, slash - start);
    start = slash + 1;
    struct stat st {};
    if (::lstat(p.c_str(), &st) == 0) {
      if (S_ISLNK(st.st_mode))
        throw FetchError(fmt::format("refusing {}: a symbolic link inside the cache", p.string()));
      if (!S_ISDIR(st.st_mode))
        throw FetchError(fmt::format("{} is in the way: not a directory", p.string()));
    } else if (::mkdir(p.c_str(), 0755) != 0 && errno != EEXIST) {
      io_error("cannot create", p);
    }
  }
}

bool ArtifactCache::verified(const fs::path& file, const ArtifactRef& ref, bool hash_if_needed) {
  struct stat st {};
  if (::lstat(file.c_str(), &st) != 0) return false;
  if (S_ISLNK(st.st_mode))
    throw FetchError(fmt::format("refusing {}: a symbolic link inside the cache", file.string()));
  if (!S_ISREG(st.st_mode))
    throw FetchError(fmt::format("{} is in the way: not a regular file", file.string()));
  if (static_cast<uint64_t>(st.st_size) != ref.bytes) return false;
  if (marker_matches(file, ref.sha256, st)) return true;
  if (!hash_if_needed) return false;
  if (sha256_file(file) != ref.sha256) return false;
  write_marker(file, ref.sha256, st);
  return true;
}

bool ArtifactCache::is_cached(const ArtifactRef& ref) {
  ArtifactRef r = validated(ref);
  fs::path file = local_path(r);
  std::error_code ec;
  if (!fs::exists(fs::symlink_status(file, ec))) return false;
  return verified(file, r, true);
}

fs::path ArtifactCache::ensure(const ArtifactRef& ref_in, ArtifactSource& source,
                               const ProgressFn& progress) {
  const ArtifactRef ref = validated(ref_in);
  prepare_directories(ref);
  const fs::path file = local_path(ref);
  auto report_cached = [&] {
    if (progress) {
      FetchProgress p;
      p.path = ref.path;
      p.done_bytes = p.total_bytes = ref.bytes;
      p.from_cache = p.finished = true;
      progress(p);
    }
  };
  if (verified(file, ref, false)) {
    report_cached();
    return file;
  }

  // Own <file>.part: open, flock, and make sure the locked file is still the one at that path
  // (whoever held the lock before may have renamed it into place or removed it).
  const fs::path part = with_suffix(file, ".part");
  FdGuard guard;
  for (;;) {
    int fd = ::open(part.c_str(), O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0644);
    if (fd < 0) io_error("cannot open", part);
    while (::flock(fd, LOCK_EX) != 0) {
      if (errno != EINTR) {
        ::close(fd);
        io_error("cannot lock", part);
      }
    }
    struct stat a {}, b {};
    if (::fstat(fd, &a) == 0 && ::lstat(part.c_str(), &b) == 0 && a.st_ino == b.st_ino &&
        a.st_dev == b.st_dev) {
      guard.fd = fd;
      break;
    }
    ::close(fd);
  }

  if (verified(file, ref, true)) {  // another process finished it while we waited
    ::unlink(part.c_str());
    report_cached();
    return file;
  }
  std::error_code ec;
  if (fs::exists(fs::symlink_status(file, ec))) {  // there but wrong (truncated, changed)
    if (::unlink(file.c_str()) != 0) io_error("cannot remove", file);
  }
  ::unlink(with_suffix(file, ".sha256").c_str());
  download(ref, source, progress, guard.fd, part, file);
  return file;
}

void ArtifactCache::download(const ArtifactRef& ref, ArtifactSource& source,
                             const ProgressFn& progress, int fd, const fs::path& part,
                             const fs::path& file) {
  using Clock = std::chrono::steady_clock;
  struct stat st {};
  if (::fstat(fd, &st) != 0) io_error("cannot stat", part);
  uint64_t cur = static_cast<uint64_t>(st.st_size);
  if (cur > ref.bytes) {
    if (::ftruncate(fd, 0) != 0) io_error("cannot truncate", part);
    cur = 0;
  }
  Sha256 hash;
  {  // the resumed prefix counts in the hash
    std::vector<char> buf(1 << 20);
    uint64_t pos = 0;
    while (pos < cur) {
      ssize_t n = ::pread(fd, buf.data(), std::min<uint64_t>(buf.size(), cur - pos),
                          static_cast<off_t>(pos));
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) io_error("cannot read", part);
      hash.update(buf.data(), static_cast<size_t>(n));
      pos += static_cast<uint64_t>(n);
    }
  }

  const auto started = Clock::now();
  uint64_t session_bytes = 0;
  auto last_report = Clock::now();
  auto report = [&](bool force, bool finished) {
    if (!progress) return;
    auto now = Clock::now();
    if (!force && now - last_report < options_.progress_interval) return;
    last_report = now;
    FetchProgress p;
    p.path = ref.path;
    p.done_bytes = cur;
    p.total_bytes = ref.bytes;
    double secs = std::chrono::duration<double>(now - started).count();
    p.bytes_per_second = secs > 0 ? static_cast<double>(session_bytes) / secs : 0;
    p.finished = finished;
    progress(p);
  };
  report(true, false);

  auto prefix = [&] { return fmt::format("fetching {} from {}", ref.path, source.describe()); };
  bool restarted = false;
  bool oversize = false;  // the source has more bytes than the ref says: drop what came
  int attempts_without_progress = 0;
  for (;;) {
    if (cur < ref.bytes) {
      const uint64_t before = cur;
      ChunkSink sink = [&](const char* data, size_t n) {
        if (n > ref.bytes - cur) {
          oversize = true;
          throw FetchError(fmt::format("the source has more than the expected {} bytes", ref.bytes));
        }
        size_t off = 0;
        while (off < n) {
          ssize_t w = ::pwrite(fd, data + off, n - off, static_cast<off_t>(cur + off));
          if (w < 0 && errno == EINTR) continue;
          if (w <= 0) io_error("cannot write", part);
          off += static_cast<size_t>(w);
        }
        hash.update(data, n);
        cur += n;
        session_bytes += n;
        report(false, false);
      };
      try {
        source.read(ref.path, cur, ref.bytes - cur, sink);
      } catch (const FetchError& e) {
        if (e.transient()) {
          attempts_without_progress = cur > before ? 0 : attempts_without_progress + 1;
          if (attempts_without_progress < options_.max_attempts_without_progress) {
            std::this_thread::sleep_for(options_.retry_delay);
            continue;
          }
        }
        if (cur == 0 || oversize) {  // nothing worth keeping
          ::unlink(part.c_str());
          throw FetchError(fmt::format("{}: {}", prefix(), e.what()), e.transient());
        }
        throw FetchError(fmt::format("{}: {} ({} of {} bytes are kept in {} for the next try)",
                                     prefix(), e.what(), cur, ref.bytes, part.string()),
                         e.transient());
      }
      if (cur < ref.bytes) {
        if (cur == 0) ::unlink(part.c_str());
        throw FetchError(fmt::format("{}: the source ended after {} of the expected {} bytes",
                                     prefix(), cur, ref.bytes));
      }
    }
    const std::string got = hash.hex_final();
    if (got == ref.sha256) break;
    if (::ftruncate(fd, 0) != 0) io_error("cannot truncate", part);
    if (restarted) {
      ::unlink(part.c_str());
      throw FetchError(fmt::format(
          "{}: sha256 mismatch (downloaded twice): expected {}, got {}", prefix(), ref.sha256, got));
    }
    restarted = true;  // a stale resumed prefix, or a bad transfer: once more from scratch
    cur = 0;
    attempts_without_progress = 0;
    report(true, false);
  }

  if (::fsync(fd) != 0) io_error("cannot sync", part);
  if (::fstat(fd, &st) != 0) io_error("cannot stat", part);
  write_marker(file, ref.sha256, st);  // mtime and size survive the rename
  if (::rename(part.c_str(), file.c_str()) != 0) io_error("cannot rename", part);
  fsync_dir(file.parent_path());
  report(true, true);
}

std::vector<fs::path> ArtifactCache::ensure_all(const std::vector<ArtifactRef>& refs,
                                                ArtifactSource& source,
                                                const ProgressFn& progress) {
  std::vector<fs::path> out;
  out.reserve(refs.size());
  for (const auto& r : refs) out.push_back(ensure(r, source, progress));
  return out;
}

}  // namespace llmesh::mesh
