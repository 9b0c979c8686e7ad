#include "fetch/gguf_ranges.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "fetch/artifact_cache.h"
#include "fetch/fetch_source.h"
#include "gguf/gguf.h"
#include "package/manifest.h"

namespace llmesh::mesh {

namespace fs = std::filesystem;
using Interval = std::pair<uint64_t, uint64_t>;

namespace {

constexpr uint64_t kPersistEvery = 8ull << 20;   // record progress every 8 MiB
constexpr uint64_t kMergeGap = 1ull << 20;       // fetch across gaps smaller than this
constexpr uint64_t kFirstHeaderRead = 256ull << 10;
constexpr uint64_t kMaxHeaderRead = 512ull << 20;

struct Stop {};  // thrown by a sink that has what it wanted

std::string url_path(const std::string& url) {
  auto scheme = url.find("://");
  auto slash = url.find('/', scheme == std::string::npos ? 0 : scheme + 3);
  return slash == std::string::npos ? std::string() : url.substr(slash);
}

int hexval(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

std::string percent_decode(const std::string& s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '%' && i + 2 < s.size() && hexval(s[i + 1]) >= 0 && hexval(s[i + 2]) >= 0) {
      out += static_cast<char>(hexval(s[i + 1]) * 16 + hexval(s[i + 2]));
      i += 2;
    } else {
      out += s[i];
    }
  }
  return out;
}

// Adds [a, b) to a sorted, disjoint list.
void add_interval(std::vector<Interval>& v, Interval x) {
  v.push_back(x);
  std::sort(v.begin(), v.end());
  std::vector<Interval> out;
  for (const auto& i : v) {
    if (!out.empty() && i.first <= out.back().second)
      out.back().second = std::max(out.back().second, i.second);
    else
      out.push_back(i);
  }
  v = std::move(out);
}

// [a, b) minus the present intervals.
std::vector<Interval> missing(Interval want, const std::vector<Interval>& present) {
  std::vector<Interval> out;
  uint64_t at = want.first;
  for (const auto& p : present) {
    if (p.second <= at) continue;
    if (p.first >= want.second) break;
    if (p.first > at) out.emplace_back(at, p.first);
    at = std::max(at, p.second);
    if (at >= want.second) break;
  }
  if (at < want.second) out.emplace_back(at, want.second);
  return out;
}

uint64_t covered(Interval want, const std::vector<Interval>& present) {
  uint64_t total = want.second - want.first;
  for (const auto& m : missing(want, present)) total -= m.second - m.first;
  return total;
}

int layer_of(const std::string& name) {
  if (name.rfind("blk.", 0) != 0) return -1;
  size_t i = 4, n = 0;
  int v = 0;
  while (i < name.size() && std::isdigit(static_cast<unsigned char>(name[i])) && n < 7) v = v * 10 + (name[i++] - '0'), ++n;
  return n == 0 || i >= name.size() || name[i] != '.' ? -2 : v;
}

struct State {
  uint64_t size = 0;
  uint64_t header_bytes = 0;
  std::vector<Interval> present;
};

State read_state(const fs::path& p) {
  State s;
  std::ifstream in(p);
  if (!in) return s;
  std::stringstream ss;
  ss << in.rdbuf();
  auto j = nlohmann::json::parse(ss.str(), nullptr, false);
  if (!j.is_object()) return s;  // damaged: start over
  s.size = j.value("size", uint64_t{0});
  s.header_bytes = j.value("header_bytes", uint64_t{0});
  if (j.contains("present") && j["present"].is_array())
    for (const auto& r : j["present"])
      if (r.is_array() && r.size() == 2 && r[0].is_number_unsigned() && r[1].is_number_unsigned() &&
          r[0].get<uint64_t>() < r[1].get<uint64_t>() && r[1].get<uint64_t>() <= s.size)
        add_interval(s.present, {r[0].get<uint64_t>(), r[1].get<uint64_t>()});
  return s;
}

void write_state(const fs::path& p, const std::string& url, const State& s) {
  nlohmann::json pr = nlohmann::json::array();
  for (const auto& [a, b] : s.present) pr.push_back({a, b});
  nlohmann::json j = {{"url", url}, {"size", s.size}, {"header_bytes", s.header_bytes}, {"present", pr}};
  fs::path tmp = p;
  tmp += ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << j.dump() << "\n";
    if (!out) throw FetchError(fmt::format("cannot write {}", tmp.string()));
  }
  fs::rename(tmp, p);
}

}  // namespace

bool is_gguf_url(const std::string& spec) {
  if (!is_url(spec)) return false;
  std::string p = url_path(spec);
  if (auto q = p.find_first_of("?#"); q != std::string::npos) p = p.substr(0, q);
  return p.size() > 5 && p.compare(p.size() - 5, 5, ".gguf") == 0;
}

namespace {

// What follows "blk.N." in an expert weight: "ffn_gate_exps.weight" (merged: *expert = -1) or
// "ffn_gate.E.weight" (*expert = E).
bool expert_tensor(std::string_view rest, int* expert) {
  for (std::string_view w : {"ffn_gate", "ffn_up", "ffn_down"}) {
    if (!rest.starts_with(w)) continue;
    std::string_view r = rest.substr(w.size());
    if (r == "_exps.weight") {
      *expert = -1;
      return true;
    }
    if (r.size() > 8 && r.size() < 8 + 7 && r.front() == '.' && r.ends_with(".weight")) {
      std::string_view num = r.substr(1, r.size() - 8);
      int v = 0;
      bool digits = !num.empty();
      for (char c : num) {
        digits = digits && c >= '0' && c <= '9';
        v = v * 10 + (c - '0');
      }
      if (digits) {
        *expert = v;
        return true;
      }
    }
  }
  return false;
}

}  // namespace

std::vector<Interval> gguf_ranges_for_layers(const GgufFile& header, LayerRange layers,
                                             const std::vector<std::vector<int>>& experts) {
  const std::string arch = header.get_string("general.architecture");
  const int n_layer = static_cast<int>(header.get_uint(arch + ".block_count"));
  const int first = layers.first, last = layers.last < 0 ? n_layer : layers.last;
  if (first < 0 || (first >= last && !(first == 0 && last == 0)) || last > n_layer)
    throw std::invalid_argument(fmt::format("layer range [{}, {}) is invalid for a model with {} layers", first, last, n_layer));
  // An expert shard: which experts of each layer of the range are held.
  std::vector<std::vector<uint8_t>> held;
  if (!experts.empty()) {
    const int n_expert = static_cast<int>(header.opt_uint(arch + ".expert_count").value_or(0));
    if (n_expert <= 0)
      throw std::invalid_argument("an expert shard was asked for, but the model has no experts");
    if (static_cast<int>(experts.size()) != n_layer)
      throw std::invalid_argument(fmt::format("an expert shard lists experts for {} layers; the model has {}",
                                              experts.size(), n_layer));
    held.assign(n_layer, std::vector<uint8_t>(n_expert, 0));
    for (int il = first; il < last; ++il) {
      if (experts[il].empty())
        throw std::invalid_argument(fmt::format("an expert shard must hold at least one expert of layer {}", il));
      for (int e : experts[il]) {
        if (e < 0 || e >= n_expert)
          throw std::invalid_argument(fmt::format("expert {} of layer {} does not exist (the model has {} experts)",
                                                  e, il, n_expert));
        if (held[il][e]) throw std::invalid_argument(fmt::format("expert {} of layer {} is listed twice", e, il));
        held[il][e] = 1;
      }
    }
  }
  const bool tied = header.find_tensor("output.weight") == nullptr;
  std::vector<Interval> want;
  std::vector<Interval> skip;  // bytes of experts not held: never fetched, not even across a gap
  const uint64_t base = header.data_offset();
  for (const auto& t : header.tensors()) {
    const int l = layer_of(t.name);
    bool need;
    if (l >= 0)
      need = l >= first && l < last;
    else if (t.name == "token_embd.weight")
      need = first == 0 || (last == n_layer && tied);
    else if (t.name == "output.weight" || t.name == "output_norm.weight")
      need = last == n_layer;
    else
      need = true;  // small global tensors (rope_freqs...)
    if (!need || t.nbytes == 0) continue;
    const uint64_t begin = base + t.offset;
    int e = -1;
    if (!held.empty() && expert_tensor(std::string_view(t.name).substr(t.name.find('.', 4) + 1), &e)) {
      const int n_expert = static_cast<int>(held[l].size());
      if (e < 0) {
        // Merged [cols, rows, n_expert]: expert x is the contiguous slice [x*S, (x+1)*S).
        if (t.n_dims != 3 || t.ne[2] != n_expert || t.nbytes % static_cast<uint64_t>(n_expert) != 0)
          throw std::invalid_argument(fmt::format("tensor '{}' has shape {}, expected [cols, rows, {}]", t.name,
                                                  t.shape_string(), n_expert));
        const uint64_t slice = t.nbytes / static_cast<uint64_t>(n_expert);
        for (int x = 0; x < n_expert; ++x) {
          const Interval r{begin + slice * static_cast<uint64_t>(x), begin + slice * static_cast<uint64_t>(x + 1)};
          (held[l][x] ? want : skip).push_back(r);
        }
      } else {
        (e < n_expert && held[l][e] ? want : skip).emplace_back(begin, begin + t.nbytes);
      }
      continue;
    }
    want.emplace_back(begin, begin + t.nbytes);
  }
  std::sort(want.begin(), want.end());
  std::sort(skip.begin(), skip.end());
  // Does [a, b) touch bytes of an expert not held?
  auto skips = [&](uint64_t a, uint64_t b) {
    auto it = std::lower_bound(skip.begin(), skip.end(), Interval{a, 0},
                               [](const Interval& x, const Interval& y) { return x.second <= y.first; });
    return it != skip.end() && it->first < b;
  };
  std::vector<Interval> merged;
  for (const auto& w : want) {
    if (!merged.empty() && w.first <= merged.back().second + kMergeGap &&
        (w.first <= merged.back().second || !skips(merged.back().second, w.first)))
      merged.back().second = std::max(merged.back().second, w.second);
    else
      merged.push_back(w);
  }
  return merged;
}

FetchedGguf fetch_gguf_layers(const std::string& url, LayerRange layers,
                              const std::vector<std::vector<int>>& experts, const PackageFetchOptions& options) {
  PackageFetchOptions o = options;
  o.experts = experts;
  return fetch_gguf_layers(url, layers, o);
}

FetchedGguf fetch_gguf_layers(const std::string& url, LayerRange layers, const PackageFetchOptions& options) {
  if (!is_gguf_url(url)) throw FetchError(fmt::format("{} is not an http(s) URL of a .gguf file", url));
  if (url.find_first_of("?#") != std::string::npos)
    throw FetchError(fmt::format("{}: a GGUF URL with a query or fragment is not supported; give the file's plain URL", url));
  const auto cut = url.rfind('/');
  const std::string base = url.substr(0, cut + 1), name = percent_decode(url.substr(cut + 1));
  validate_artifact_path(name);
  HttpSourceOptions ho;
  ho.bounded_ranges = true;  // pieces of a big file: never stream past what is asked
  HttpSource src(base, ho);
  const std::string where = url;

  const fs::path root = options.cache_root.empty() ? default_cache_root() : options.cache_root;
  const fs::path dir = root / "gguf" / sha256_hex(url).substr(0, 24);
  fs::create_directories(dir);
  const fs::path file = dir / "model.gguf", state_path = dir / "ranges.json";
  // One process at a time per file (others wait): the state file and the sparse copy change.
  int lock_fd = ::open((dir / "lock").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (lock_fd < 0) throw FetchError(fmt::format("cannot open {}: {}", (dir / "lock").string(), std::strerror(errno)));
  struct LockGuard {
    int fd;
    ~LockGuard() { ::close(fd); }
  } lock_guard{lock_fd};
  ::flock(lock_fd, LOCK_EX);

  FetchedGguf out;
  out.path = file;
  State st = read_state(state_path);
  std::error_code ec;
  if (st.size == 0 || !fs::exists(file) || fs::file_size(file, ec) != st.size) st = {};

  // The header: from the local copy when it is there, else read from the start of the remote
  // file, more each time until it parses.
  std::vector<uint8_t> head;
  std::unique_ptr<GgufFile> header;
  if (st.header_bytes > 0 && covered({0, st.header_bytes}, st.present) == st.header_bytes) {
    head.resize(st.header_bytes);
    std::ifstream in(file, std::ios::binary);
    in.read(reinterpret_cast<char*>(head.data()), static_cast<std::streamsize>(head.size()));
    try {
      header = GgufFile::parse_header(head.data(), head.size(), where);
    } catch (const GgufError&) {
      st = {};  // damaged: start over
    }
  }
  if (!header) {
    for (uint64_t want = kFirstHeaderRead;; want *= 4) {
      head.clear();
      bool ended = false;
      try {
        src.read(name, 0, want, [&](const char* d, size_t n) {
          head.insert(head.end(), d, d + std::min<uint64_t>(n, want - head.size()));
          if (head.size() >= want) throw Stop{};
        });
      } catch (const Stop&) {
      } catch (const FetchError&) {
        if (head.empty()) throw;
        ended = true;  // a server that ends a range past the end of the file by dropping the connection
      }
      if (head.size() < want) ended = true;
      try {
        header = GgufFile::parse_header(head.data(), head.size(), where);
        break;
      } catch (const GgufError&) {
        if (ended || want >= kMaxHeaderRead) throw;  // the file ended, or no sane header is this big
      }
    }
  }
  out.header_bytes = header->data_offset();
  uint64_t size = header->data_offset();
  for (const auto& t : header->tensors()) size = std::max(size, header->data_offset() + t.offset + t.nbytes);
  out.file_bytes = size;
  const std::string arch = header->get_string("general.architecture");
  out.n_layer = static_cast<int>(header->get_uint(arch + ".block_count"));
  const auto ranges = gguf_ranges_for_layers(*header, layers, options.experts);

  int fd = ::open(file.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) throw FetchError(fmt::format("cannot open {}: {}", file.string(), std::strerror(errno)));
  struct FdGuard {
    int fd;
    ~FdGuard() { ::close(fd); }
  } fd_guard{fd};
  if (st.size != size) {
    st = {};
    st.size = size;
    if (::ftruncate(fd, 0) != 0 || ::ftruncate(fd, static_cast<off_t>(size)) != 0)  // sparse: holes cost nothing
      throw FetchError(fmt::format("cannot size {} to {} bytes: {}", file.string(), size, std::strerror(errno)));
  }
  auto write_at = [&](uint64_t pos, const uint8_t* d, size_t n) {
    while (n > 0) {
      ssize_t w = ::pwrite(fd, d, n, static_cast<off_t>(pos));
      if (w <= 0) throw FetchError(fmt::format("writing {}: {}", file.string(), std::strerror(errno)));
      pos += static_cast<uint64_t>(w);
      d += w;
      n -= static_cast<size_t>(w);
    }
  };
  const uint64_t hb = std::min<uint64_t>(head.size(), header->data_offset());
  if (covered({0, hb}, st.present) < hb) {
    write_at(0, head.data(), hb);
    add_interval(st.present, {0, hb});
  }
  st.header_bytes = header->data_offset();
  write_state(state_path, url, st);

  uint64_t total = 0, have = 0;
  for (const auto& r : ranges) {
    total += r.second - r.first;
    have += covered(r, st.present);
  }
  out.bytes_cached = have;
  FetchProgress pr;
  pr.path = fmt::format("{} [layers {}..{}){}", name, layers.first, layers.last < 0 ? out.n_layer : layers.last,
                        options.experts.empty() ? "" : " (expert shard)");
  pr.total_bytes = total;
  pr.done_bytes = have;
  const auto t0 = std::chrono::steady_clock::now();
  if (options.progress) options.progress(pr);
  for (const auto& r : ranges) {
    for (const auto& [a, b] : missing(r, st.present)) {
      uint64_t pos = a, since_persist = 0;
      for (int idle_attempts = 0; pos < b;) {  // a dropped connection resumes where it stopped
        const uint64_t before = pos;
        try {
        src.read(name, a, b - a, [&](const char* d, size_t n) {
          const size_t take = static_cast<size_t>(std::min<uint64_t>(n, b - pos));
          write_at(pos, reinterpret_cast<const uint8_t*>(d), take);
          pos += take;
          since_persist += take;
          out.bytes_fetched += take;
          if (since_persist >= kPersistEvery || pos == b) {
            add_interval(st.present, {pos - since_persist, pos});
            write_state(state_path, url, st);
            since_persist = 0;
            if (options.progress) {
              pr.done_bytes = have + out.bytes_fetched;
              const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
              pr.bytes_per_second = s > 0 ? static_cast<double>(out.bytes_fetched) / s : 0;
              options.progress(pr);
            }
          }
          if (pos >= b) throw Stop{};
        });
        } catch (const Stop&) {
        } catch (const FetchError& e) {
          if (!e.transient() || ++idle_attempts >= std::max(1, options.cache_options.max_attempts_without_progress) + (pos > before ? 1 : 0))
            throw;
          if (pos > before) idle_attempts = 0;
          continue;
        }
        if (pos == before) break;  // the source had no more bytes
      }
      if (since_persist > 0) {
        add_interval(st.present, {pos - since_persist, pos});
        write_state(state_path, url, st);
      }
      if (pos < b)
        throw FetchError(fmt::format("{}: the file ended at byte {} but its header places tensor data up to {}", where, pos, b));
    }
  }
  pr.done_bytes = total;
  pr.finished = true;
  pr.from_cache = out.bytes_fetched == 0;
  if (options.progress) options.progress(pr);
  return out;
}

}  // namespace llmesh::mesh
