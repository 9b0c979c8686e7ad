#include "fetch/fetch_source.h"

#include <fcntl.h>
#include <openssl/evp.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <vector>

#include <fmt/format.h>

namespace llmesh::mesh {

namespace {

bool ends_with(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

struct Fd {
  int fd = -1;
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
};

}  // namespace

void validate_artifact_path(std::string_view path) {
  auto bad = [&](const char* why) {
    std::string shown(path.substr(0, 200));
    for (char& c : shown)
      if (static_cast<unsigned char>(c) < 0x20) c = '?';
    throw FetchError(fmt::format("bad artifact path \"{}\": {}", shown, why));
  };
  if (path.empty()) bad("empty");
  if (path.size() > kMaxArtifactPathLength)
    bad("longer than 1024 bytes");
  if (path.front() == '/') bad("absolute (must be relative to the model's root)");
  for (char c : path) {
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) bad("control character");
    if (c == '\\') bad("backslash (use '/')");
  }
  size_t start = 0;
  while (start <= path.size()) {
    size_t end = path.find('/', start);
    if (end == std::string_view::npos) end = path.size();
    std::string_view seg = path.substr(start, end - start);
    if (seg.empty()) bad("empty segment");
    if (seg == "." || seg == "..") bad("'.' or '..' segment");
    if (seg.size() > 255) bad("segment longer than 255 bytes");
    if (ends_with(seg, ".part") || ends_with(seg, ".sha256") || ends_with(seg, ".lock"))
      bad("ends in .part, .sha256 or .lock (names the cache keeps for itself)");
    start = end + 1;
  }
}

ArtifactRef validated(const ArtifactRef& ref) {
  validate_artifact_path(ref.path);
  ArtifactRef out = ref;
  if (out.sha256.size() != 64)
    throw FetchError(fmt::format("artifact {}: sha256 must be 64 hex digits, got \"{}\"", ref.path,
                                 ref.sha256.substr(0, 80)));
  for (char& c : out.sha256) {
    if (c >= 'A' && c <= 'F') c = static_cast<char>(c - 'A' + 'a');
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')))
      throw FetchError(fmt::format("artifact {}: sha256 must be 64 hex digits, got \"{}\"",
                                   ref.path, ref.sha256));
  }
  return out;
}

// ---- sha256 ----

Sha256::Sha256() : ctx_(EVP_MD_CTX_new()) {
  if (!ctx_) throw FetchError("sha256: out of memory");
  reset();
}
Sha256::~Sha256() { EVP_MD_CTX_free(static_cast<EVP_MD_CTX*>(ctx_)); }
void Sha256::reset() {
  if (EVP_DigestInit_ex(static_cast<EVP_MD_CTX*>(ctx_), EVP_sha256(), nullptr) != 1)
    throw FetchError("sha256: EVP_DigestInit_ex failed");
}
void Sha256::update(const void* data, size_t n) {
  if (n) EVP_DigestUpdate(static_cast<EVP_MD_CTX*>(ctx_), data, n);
}
std::string Sha256::hex_final() {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_DigestFinal_ex(static_cast<EVP_MD_CTX*>(ctx_), md, &len);
  static const char* hex = "0123456789abcdef";
  std::string out;
  out.reserve(len * 2);
  for (unsigned i = 0; i < len; ++i) {
    out.push_back(hex[md[i] >> 4]);
    out.push_back(hex[md[i] & 15]);
  }
  reset();
  return out;
}

std::string sha256_hex(std::string_view data) {
  Sha256 h;
  h.update(data.data(), data.size());
  return h.hex_final();
}

std::string sha256_file(const std::filesystem::path& file) {
  Fd f;
  f.fd = ::open(file.c_str(), O_RDONLY | O_CLOEXEC);
  if (f.fd < 0) throw FetchError(fmt::format("cannot open {}: {}", file.string(), std::strerror(errno)));
  Sha256 h;
  std::vector<char> buf(1 << 20);
  for (;;) {
    ssize_t n = ::read(f.fd, buf.data(), buf.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      throw FetchError(fmt::format("cannot read {}: {}", file.string(), std::strerror(errno)));
    }
    if (n == 0) break;
    h.update(buf.data(), static_cast<size_t>(n));
  }
  return h.hex_final();
}

// ---- DirectorySource ----

DirectorySource::DirectorySource(std::filesystem::path root) : root_(std::move(root)) {}

std::string DirectorySource::describe() const { return "directory " + root_.string(); }

void DirectorySource::read(const std::string& path, uint64_t offset, uint64_t /*length*/,
                           const ChunkSink& sink) {
  validate_artifact_path(path);
  std::filesystem::path file = root_ / path;
  Fd f;
  f.fd = ::open(file.c_str(), O_RDONLY | O_CLOEXEC);
  if (f.fd < 0) {
    if (errno == ENOENT) throw FetchError(fmt::format("{} not found in {}", path, describe()));
    throw FetchError(fmt::format("cannot open {}: {}", file.string(), std::strerror(errno)));
  }
  struct stat st {};
  if (::fstat(f.fd, &st) != 0 || !S_ISREG(st.st_mode))
    throw FetchError(fmt::format("{} is not a regular file", file.string()));
  std::vector<char> buf(1 << 20);
  uint64_t pos = offset;
  for (;;) {
    ssize_t n = ::pread(f.fd, buf.data(), buf.size(), static_cast<off_t>(pos));
    if (n < 0) {
      if (errno == EINTR) continue;
      throw FetchError(fmt::format("cannot read {}: {}", file.string(), std::strerror(errno)));
    }
    if (n == 0) break;
    pos += static_cast<uint64_t>(n);
    sink(buf.data(), static_cast<size_t>(n));
  }
}

// ---- CallbackSource ----

CallbackSource::CallbackSource(std::string description, ReadFn read)
    : description_(std::move(description)), read_(std::move(read)) {
  if (!read_) throw FetchError("CallbackSource: no read function");
}
std::string CallbackSource::describe() const { return description_; }
void CallbackSource::read(const std::string& path, uint64_t offset, uint64_t length,
                          const ChunkSink& sink) {
  validate_artifact_path(path);
  read_(path, offset, length, sink);
}

// ---- make_source ----

std::unique_ptr<ArtifactSource> make_source(const std::string& spec) {
  if (spec.rfind("http://", 0) == 0 || spec.rfind("https://", 0) == 0)
    return std::make_unique<HttpSource>(spec);
  std::error_code ec;
  if (!spec.empty() && std::filesystem::is_directory(spec, ec))
    return std::make_unique<DirectorySource>(spec);
  throw FetchError(fmt::format(
      "artifact source \"{}\" is neither an existing directory nor an http:// or https:// URL",
      spec));
}

}  // namespace llmesh::mesh
