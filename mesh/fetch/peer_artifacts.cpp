#include "fetch/peer_artifacts.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <nlohmann/json.hpp>

#include "gossip/codec.h"
#include "transport/protocol.h"
#include "transport/transport.h"

namespace llmesh::mesh {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

json parse_map(std::span<const uint8_t> bytes, size_t max_bytes, const char* what) {
  if (bytes.size() > max_bytes)
    throw ArtifactFormatError(fmt::format("{}: {} bytes, over the {} byte limit", what, bytes.size(), max_bytes));
  gossip::ParseLimits limits;
  limits.max_bytes = max_bytes;
  limits.max_depth = 2;
  limits.max_elements = 64;
  limits.max_string = kMaxArtifactPathLength + 64;
  json v;
  try {
    v = gossip::parse_msgpack(bytes, limits);
  } catch (const gossip::WireError& e) {
    throw ArtifactFormatError(fmt::format("{}: not a valid MessagePack map ({})", what, e.what()));
  }
  if (!v.is_object()) throw ArtifactFormatError(fmt::format("{}: not a MessagePack map", what));
  return v;
}

const json* find(const json& obj, const char* key) {
  auto it = obj.find(key);
  return it == obj.end() ? nullptr : &*it;
}

const std::string& str(const json& obj, const char* key) {
  const json* v = find(obj, key);
  if (!v) throw ArtifactFormatError(fmt::format("'{}' is required", key));
  if (!v->is_string()) throw ArtifactFormatError(fmt::format("'{}' must be a string", key));
  return v->get_ref<const std::string&>();
}

uint64_t uint(const json& obj, const char* key) {
  const json* v = find(obj, key);
  if (!v) throw ArtifactFormatError(fmt::format("'{}' is required", key));
  if (!v->is_number_unsigned()) throw ArtifactFormatError(fmt::format("'{}' must be an unsigned integer", key));
  return v->get<uint64_t>();
}

// 64 hex digits, returned lower case; throws otherwise.
std::string sha_field(const std::string& s) {
  if (s.size() != 64) throw ArtifactFormatError("'h' must be 64 hex digits");
  std::string out = s;
  for (char& c : out) {
    if (c >= 'A' && c <= 'F') c = static_cast<char>(c - 'A' + 'a');
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) throw ArtifactFormatError("'h' must be 64 hex digits");
  }
  return out;
}

struct Fd {
  int fd = -1;
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
};

// A regular file (not a link) of exactly `bytes`.
bool regular_file_of_size(const fs::path& file, uint64_t bytes) {
  struct stat st {};
  return ::lstat(file.c_str(), &st) == 0 && S_ISREG(st.st_mode) && static_cast<uint64_t>(st.st_size) == bytes;
}

std::string normalized_dir(const fs::path& dir) {
  std::string p = fs::absolute(dir).lexically_normal().string();
  while (p.size() > 1 && p.ends_with('/')) p.pop_back();
  return p;
}

}  // namespace

std::string describe_artifact_reset(uint32_t code) {
  switch (code) {
    case kResetArtifactBadRequest: return "bad request (0x120)";
    case kResetArtifactNotFound: return "not found (0x121)";
    case kResetArtifactBusy: return "busy (0x122)";
    case kResetArtifactStopping: return "stopping (0x123)";
    default: return fmt::format("{} ({})", reset_name(code), code);
  }
}

std::vector<uint8_t> encode_artifact_request(const ArtifactRequest& r) {
  json j = {{"t", kArtifactStreamType}, {"v", r.version}, {"p", r.path},
            {"o", r.offset},            {"n", r.length},  {"h", r.sha256}};
  auto bytes = json::to_msgpack(j);
  if (bytes.size() > kMaxArtifactRequestBytes) throw ArtifactFormatError("artifact request over its size limit");
  return bytes;
}

ArtifactRequest decode_artifact_request(std::span<const uint8_t> bytes) {
  json j = parse_map(bytes, kMaxArtifactRequestBytes, "artifact request");
  ArtifactRequest r;
  if (str(j, "t") != kArtifactStreamType) throw ArtifactFormatError("'t' is not \"artifact\"");
  uint64_t v = uint(j, "v");
  if (v < 1 || v > 0xffffffffu) throw ArtifactFormatError("'v' must be at least 1");
  r.version = static_cast<uint32_t>(v);
  r.path = str(j, "p");
  try {
    validate_artifact_path(r.path);
  } catch (const FetchError& e) {
    throw ArtifactFormatError(fmt::format("'p': {}", e.what()));
  }
  r.offset = uint(j, "o");
  r.length = uint(j, "n");
  r.sha256 = sha_field(str(j, "h"));
  return r;
}

std::vector<uint8_t> encode_artifact_head(const ArtifactHead& h) {
  return json::to_msgpack(json{{"s", h.status}, {"n", h.bytes}});
}

ArtifactHead decode_artifact_head(std::span<const uint8_t> bytes) {
  json j = parse_map(bytes, kMaxArtifactHeadBytes, "artifact head");
  ArtifactHead h;
  uint64_t s = uint(j, "s");
  if (s > 999) throw ArtifactFormatError("'s' is not a status");
  h.status = static_cast<uint32_t>(s);
  h.bytes = uint(j, "n");
  return h;
}

// ---- ArtifactServer ----

ArtifactServer::ArtifactServer(ArtifactServerOptions options) : options_(std::move(options)) {
  if (options_.max_concurrent == 0) options_.max_concurrent = 1;
}

ArtifactServer::~ArtifactServer() { stop(); }

void ArtifactServer::log(const std::string& line) const {
  if (options_.log) options_.log(line);
}

size_t ArtifactServer::add_package(const fs::path& dir, const PackageManifest& manifest, bool verify_sha256) {
  const std::string pkg = normalized_dir(dir);
  std::vector<std::pair<std::string, Entry>> found;
  for (const Artifact& a : manifest.artifacts) {
    ArtifactRef ref;
    try {
      ref = validated(ArtifactRef{a.path, a.bytes, a.sha256});
    } catch (const FetchError&) {
      continue;
    }
    fs::path file = fs::path(pkg) / ref.path;
    if (!regular_file_of_size(file, ref.bytes)) continue;
    if (verify_sha256) {
      try {
        if (sha256_file(file) != ref.sha256) {
          log(fmt::format("artifact server: {} does not match its sha256; not served (reason artifact_corrupt)",
                          file.string()));
          continue;
        }
      } catch (const FetchError&) {
        continue;
      }
    }
    found.push_back({ref.sha256, Entry{file, ref.bytes, ref.path, pkg}});
  }
  std::lock_guard lk(m_);
  for (auto& [sha, e] : found) by_sha_[sha] = std::move(e);
  return found.size();
}

size_t ArtifactServer::add_package(const fs::path& dir) {
  return add_package(dir, read_manifest(dir.string()));
}

bool ArtifactServer::add_file(const fs::path& file, const ArtifactRef& ref_in) {
  ArtifactRef ref = validated(ref_in);
  fs::path abs = fs::absolute(file).lexically_normal();
  if (!regular_file_of_size(abs, ref.bytes)) return false;
  std::lock_guard lk(m_);
  by_sha_[ref.sha256] = Entry{abs, ref.bytes, ref.path, {}};
  return true;
}

size_t ArtifactServer::remove_package(const fs::path& dir) {
  const std::string pkg = normalized_dir(dir);
  std::lock_guard lk(m_);
  size_t n = 0;
  for (auto it = by_sha_.begin(); it != by_sha_.end();) {
    if (it->second.package == pkg) {
      it = by_sha_.erase(it);
      ++n;
    } else {
      ++it;
    }
  }
  return n;
}

bool ArtifactServer::has(const std::string& sha256) const {
  std::lock_guard lk(m_);
  return by_sha_.count(sha256) > 0;
}

size_t ArtifactServer::size() const {
  std::lock_guard lk(m_);
  return by_sha_.size();
}

ArtifactServer::Stats ArtifactServer::stats() const {
  std::lock_guard lk(m_);
  return stats_;
}

bool ArtifactServer::is_artifact_stream(std::span<const uint8_t> header) {
  try {
    json j = parse_map(header, kMaxArtifactRequestBytes, "stream header");
    const json* t = find(j, "t");
    return t && t->is_string() && t->get_ref<const std::string&>() == kArtifactStreamType;
  } catch (const ArtifactFormatError&) {
    return false;
  }
}

void ArtifactServer::reap_locked() {
  for (auto it = workers_.begin(); it != workers_.end();) {
    if (it->second.done) {
      if (it->second.thread.joinable()) it->second.thread.join();  // it has returned or is returning
      it = workers_.erase(it);
    } else {
      ++it;
    }
  }
}

void ArtifactServer::serve(std::shared_ptr<Stream> stream) {
  if (!stream) return;
  std::lock_guard lk(m_);
  reap_locked();
  if (stopping_) {
    stream->reset(static_cast<ResetCode>(kResetArtifactStopping));
    return;
  }
  if (active_ >= options_.max_concurrent) {
    ++stats_.busy;
    log(fmt::format("artifact server: peer {} refused: {} streams already served (reason artifact_busy)",
                    stream->peer().short_hex(), active_));
    stream->reset(static_cast<ResetCode>(kResetArtifactBusy));
    return;
  }
  ++active_;
  const uint64_t key = next_key_++;
  Worker& w = workers_[key];
  w.stream = stream;
  try {
    w.thread = std::thread([this, key, stream] { run(key, stream); });
  } catch (const std::system_error&) {
    --active_;
    workers_.erase(key);
    ++stats_.busy;
    stream->reset(static_cast<ResetCode>(kResetArtifactBusy));
  }
}

void ArtifactServer::run(uint64_t key, std::shared_ptr<Stream> stream) {
  auto finish = [&] {
    std::lock_guard lk(m_);
    --active_;
    auto it = workers_.find(key);
    if (it != workers_.end()) {
      it->second.done = true;
      it->second.stream.reset();
    }
  };
  auto refuse = [&](uint32_t code, const std::string& why) {
    {
      std::lock_guard lk(m_);
      if (code == kResetArtifactBadRequest) ++stats_.bad_request;
      if (code == kResetArtifactNotFound) ++stats_.not_found;
    }
    log(fmt::format("artifact server: peer {} refused ({}): {} (reason {})", stream->peer().short_hex(),
                    describe_artifact_reset(code), why,
                    code == kResetArtifactNotFound ? "artifact_not_found" : "artifact_bad_request"));
    stream->reset(static_cast<ResetCode>(code));
  };

  try {
    ArtifactRequest req;
    try {
      req = decode_artifact_request(stream->header());
    } catch (const ArtifactFormatError& e) {
      refuse(kResetArtifactBadRequest, e.what());
      finish();
      return;
    }
    Entry entry;
    bool known = false;
    {
      std::lock_guard lk(m_);
      auto it = by_sha_.find(req.sha256);
      if (it != by_sha_.end()) {
        entry = it->second;
        known = true;
      }
    }
    if (!known) {
      refuse(kResetArtifactNotFound, fmt::format("no artifact with sha256 {} ({})", req.sha256, req.path));
      finish();
      return;
    }
    if (req.offset > entry.bytes) {
      refuse(kResetArtifactBadRequest,
             fmt::format("offset {} is past the end of {} ({} bytes)", req.offset, entry.path, entry.bytes));
      finish();
      return;
    }
    Fd f;
    f.fd = ::open(entry.file.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    struct stat st {};
    if (f.fd < 0 || ::fstat(f.fd, &st) != 0 || !S_ISREG(st.st_mode) ||
        static_cast<uint64_t>(st.st_size) != entry.bytes) {
      refuse(kResetArtifactNotFound,
             fmt::format("{} is gone or changed since it was registered", entry.file.string()));
      finish();
      return;
    }
    const uint64_t n = std::min(req.length, entry.bytes - req.offset);
    auto head = encode_artifact_head({kArtifactStatusOk, n});
    bool ok = stream->write(head, options_.write_timeout) == Stream::Status::OK;
    std::vector<uint8_t> buf(static_cast<size_t>(std::min<uint64_t>(n, kArtifactChunkBytes)));
    uint64_t sent = 0;
    while (ok && sent < n) {
      size_t want = static_cast<size_t>(std::min<uint64_t>(buf.size(), n - sent));
      ssize_t r = ::pread(f.fd, buf.data(), want, static_cast<off_t>(req.offset + sent));
      if (r < 0 && errno == EINTR) continue;
      if (r <= 0) {
        log(fmt::format("artifact server: cannot read {}: {} (reason artifact_read_failed)", entry.file.string(),
                        r < 0 ? std::strerror(errno) : "the file got shorter"));
        ok = false;
        break;
      }
      auto status = stream->write(std::span<const uint8_t>(buf.data(), static_cast<size_t>(r)),
                                  options_.write_timeout);
      if (status != Stream::Status::OK) {
        ok = false;
        break;
      }
      sent += static_cast<uint64_t>(r);
      std::lock_guard lk(m_);
      stats_.bytes_sent += static_cast<uint64_t>(r);
    }
    if (ok) {
      stream->end();
      std::lock_guard lk(m_);
      ++stats_.streams;
    } else {
      stream->reset(ResetCode::CANCEL);
    }
  } catch (const std::exception& e) {
    log(fmt::format("artifact server: {} (reason artifact_serve_failed)", e.what()));
    stream->reset(ResetCode::CANCEL);
  }
  finish();
}

void ArtifactServer::stop() {
  std::map<uint64_t, Worker> workers;
  {
    std::lock_guard lk(m_);
    stopping_ = true;
    for (auto& [k, w] : workers_)
      if (w.stream) w.stream->reset(static_cast<ResetCode>(kResetArtifactStopping));
    workers.swap(workers_);
  }
  for (auto& [k, w] : workers)
    if (w.thread.joinable()) w.thread.join();
}

// ---- PeerSource ----

PeerSource::PeerSource(Transport& transport, PeerCandidatesFn candidates, PeerSourceOptions options)
    : transport_(transport), candidates_(std::move(candidates)), options_(options) {}

std::string PeerSource::describe() const { return "mesh peers"; }

void PeerSource::expect(const std::vector<ArtifactRef>& refs) {
  std::vector<ArtifactRef> ok;
  for (const ArtifactRef& r : refs) ok.push_back(validated(r));
  std::lock_guard lk(m_);
  for (ArtifactRef& r : ok) refs_[r.path] = std::move(r);
}

std::set<NodeId> PeerSource::distrusted(const std::string& sha256) const {
  std::lock_guard lk(m_);
  auto it = distrusted_.find(sha256);
  return it == distrusted_.end() ? std::set<NodeId>{} : it->second;
}

void PeerSource::read(const std::string& path, uint64_t offset, uint64_t length, const ChunkSink& sink) {
  validate_artifact_path(path);
  ArtifactRef ref;
  std::set<NodeId> skip;
  {
    std::lock_guard lk(m_);
    auto it = refs_.find(path);
    if (it == refs_.end())
      throw FetchError(fmt::format("{}: no sha256 known for it, so no peer can be asked (the peer source "
                                   "learns artifacts from their manifest)",
                                   path));
    ref = it->second;
    if (offset == 0) {  // a restart from scratch after a completion from a later offset
      auto t = completed_tail_.find(ref.sha256);
      if (t != completed_tail_.end()) {
        distrusted_[ref.sha256].insert(t->second.begin(), t->second.end());
        completed_tail_.erase(t);
      }
    }
    if (auto d = distrusted_.find(ref.sha256); d != distrusted_.end()) skip = d->second;
  }
  if (offset > ref.bytes)
    throw FetchError(fmt::format("{}: offset {} is past its end ({} bytes)", path, offset, ref.bytes));
  // Like every source, the rest of the file (the caller's length is what it expects; the peers
  // hold the file of the ref's size under that hash).
  length = ref.bytes - offset;
  if (length == 0) return;
  std::vector<NodeId> peers;
  for (const NodeId& id : candidates_ ? candidates_(ref) : std::vector<NodeId>{})
    if (!skip.count(id) && std::find(peers.begin(), peers.end(), id) == peers.end() && id != transport_.id())
      peers.push_back(id);
  if (peers.empty())
    throw FetchError(fmt::format("{}: no peer to ask{}", path,
                                 skip.empty() ? "" : fmt::format(" ({} sent wrong bytes before)", skip.size())));

  const bool hashing = offset == 0;
  Sha256 hash;
  uint64_t delivered = 0;
  std::set<NodeId> contributors;
  std::vector<std::string> errors;
  bool complete = false;
  for (const NodeId& peer : peers) {
    auto fail = [&](const std::string& why) { errors.push_back(fmt::format("peer {}: {}", peer.short_hex(), why)); };
    std::shared_ptr<Stream> s;
    try {
      ArtifactRequest req;
      req.path = ref.path;
      req.offset = offset + delivered;
      req.length = length - delivered;
      req.sha256 = ref.sha256;
      s = transport_.open_stream(peer, encode_artifact_request(req));
    } catch (const std::exception& e) {
      fail(e.what());
      continue;
    }
    if (!s) {
      fail("not connected");
      continue;
    }
    s->end();  // the caller sends nothing after OPEN
    auto why_not = [&](const Stream::ReadResult& r, const char* waiting) -> std::string {
      switch (r.status) {
        case Stream::Status::RESET: {
          auto code = s->reset_code();
          return "stream reset: " + (code ? describe_artifact_reset(*code) : std::string("?"));
        }
        case Stream::Status::CLOSED: return "the connection closed";
        case Stream::Status::TIMEOUT: return fmt::format("no {} in time", waiting);
        case Stream::Status::END: return fmt::format("the stream ended before the {}", waiting);
        default: return "unexpected stream status";
      }
    };
    auto r = s->read(options_.head_timeout);
    if (r.status != Stream::Status::OK) {
      fail(why_not(r, "head"));
      s->reset();
      continue;
    }
    ArtifactHead head;
    try {
      head = decode_artifact_head(r.message);
    } catch (const ArtifactFormatError& e) {
      fail(e.what());
      s->reset();
      continue;
    }
    // Peers hold the same hash-named file, so an honest one offers exactly what was asked.
    if (head.status != kArtifactStatusOk || head.bytes != length - delivered) {
      fail(head.status != kArtifactStatusOk
               ? fmt::format("status {}", head.status)
               : fmt::format("offers {} bytes where {} were asked", head.bytes, length - delivered));
      s->reset();
      continue;
    }
    uint64_t got = 0;
    std::string error;
    bool contributed = false;
    for (;;) {
      auto m = s->read(options_.read_timeout);
      if (m.status == Stream::Status::END) break;
      if (m.status != Stream::Status::OK) {
        error = why_not(m, "data");
        break;
      }
      if (m.message.empty() || m.message.size() > kArtifactChunkBytes || m.message.size() > head.bytes - got) {
        error = m.message.empty()                        ? "an empty data message"
                : m.message.size() > kArtifactChunkBytes ? "a data message over 1 MiB"
                                                         : "more bytes than its head said";
        break;
      }
      try {
        sink(reinterpret_cast<const char*>(m.message.data()), m.message.size());
      } catch (...) {
        s->reset();
        throw;  // the caller's own error
      }
      if (hashing) hash.update(m.message.data(), m.message.size());
      got += m.message.size();
      delivered += m.message.size();
      contributed = true;
    }
    if (contributed) contributors.insert(peer);
    if (error.empty() && got < head.bytes)
      error = fmt::format("the stream ended after {} of {} bytes", got, head.bytes);
    if (!error.empty()) {
      fail(error);
      s->reset();
      continue;
    }
    complete = true;
    break;
  }
  if (!complete)
    throw FetchError(fmt::format("{}: no peer could send it: {}", path, fmt::join(errors, "; ")), true);

  std::lock_guard lk(m_);
  if (offset + delivered == ref.bytes) {
    if (hashing) {
      if (hash.hex_final() != ref.sha256) distrusted_[ref.sha256].insert(contributors.begin(), contributors.end());
      completed_tail_.erase(ref.sha256);
    } else {
      completed_tail_[ref.sha256] = contributors;
    }
  }
}

// ---- FallbackSource ----

FallbackSource::FallbackSource(std::vector<std::shared_ptr<ArtifactSource>> sources) : sources_(std::move(sources)) {
  sources_.erase(std::remove(sources_.begin(), sources_.end(), nullptr), sources_.end());
  if (sources_.empty()) throw std::invalid_argument("FallbackSource needs at least one source");
}

std::string FallbackSource::describe() const {
  std::string s;
  for (size_t i = 0; i < sources_.size(); ++i) {
    if (i) s += ", then ";
    s += sources_[i]->describe();
  }
  return s;
}

void FallbackSource::expect(const std::vector<ArtifactRef>& refs) {
  for (auto& s : sources_) s->expect(refs);
}

void FallbackSource::read(const std::string& path, uint64_t offset, uint64_t length, const ChunkSink& sink) {
  uint64_t delivered = 0;
  bool sink_failed = false;
  ChunkSink counting = [&](const char* data, size_t n) {
    try {
      sink(data, n);
    } catch (...) {
      sink_failed = true;
      throw;
    }
    delivered += n;
  };
  std::vector<std::string> errors;
  bool transient = false;
  for (auto& source : sources_) {
    const uint64_t from = delivered;
    try {
      source->read(path, offset + delivered, length - std::min(length, delivered), counting);
      return;
    } catch (const FetchError& e) {
      if (sink_failed) throw;
      transient = transient || e.transient();
      errors.push_back(delivered > from ? fmt::format("{} (after {} bytes)", e.what(), delivered - from) : e.what());
    }
  }
  throw FetchError(fmt::format("every source failed: {}", fmt::join(errors, "; ")), transient);
}

}  // namespace llmesh::mesh
