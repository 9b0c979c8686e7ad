#include "gguf/gguf_writer.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include <fmt/format.h>

namespace llmesh {
namespace {

using namespace gguf_limits;

[[noreturn]] void fail(const std::string& what) { throw GgufError("gguf writer: " + what); }

template <typename T>
void put(std::string& out, T v) {
  char b[sizeof(T)];
  std::memcpy(b, &v, sizeof(T));
  out.append(b, sizeof(T));
}

void put_string(std::string& out, std::string_view s) {
  put<uint64_t>(out, s.size());
  out.append(s);
}

uint64_t align_up(uint64_t x, uint64_t a) { return (x + a - 1) / a * a; }

void check_key(std::string_view key) {
  if (key.empty()) fail("metadata key is empty");
  if (key.size() > kMaxKeyBytes)
    fail(fmt::format("metadata key of {} bytes is longer than the limit of {}", key.size(),
                     kMaxKeyBytes));
}

void check_string(std::string_view s) {
  if (s.size() > kMaxStringBytes)
    fail(fmt::format("string of {} bytes is longer than the limit of {}", s.size(),
                     kMaxStringBytes));
}

// Writes all of [p, p+n) to fd, retrying short writes and EINTR.
void write_all(int fd, const void* p, uint64_t n, const std::string& tmp) {
  auto* b = static_cast<const uint8_t*>(p);
  while (n > 0) {
    size_t chunk = static_cast<size_t>(std::min<uint64_t>(n, 1u << 30));
    ssize_t w = ::write(fd, b, chunk);
    if (w < 0) {
      if (errno == EINTR) continue;
      fail(fmt::format("{}: write failed: {}", tmp, std::strerror(errno)));
    }
    b += w;
    n -= static_cast<uint64_t>(w);
  }
}

}  // namespace

// ---------------------------------------------------------------- GgufMetaValue

GgufMetaValue GgufMetaValue::scalar(GgufType t, const void* p, size_t n) {
  GgufMetaValue v;
  v.type_ = t;
  v.bytes_.resize(n);
  std::memcpy(v.bytes_.data(), p, n);
  return v;
}

GgufMetaValue GgufMetaValue::boolean(bool b) {
  uint8_t x = b ? 1 : 0;
  return scalar(GgufType::BOOL, &x, 1);
}

GgufMetaValue GgufMetaValue::string(std::string_view s) {
  check_string(s);
  GgufMetaValue v;
  v.type_ = GgufType::STRING;
  v.bytes_ = std::string(s);
  return v;
}

GgufMetaValue GgufMetaValue::array(GgufType elem, const void* data, uint64_t count) {
  int es = gguf_scalar_size(elem);
  if (es == 0)
    fail(fmt::format("array(): element type {} is not a numeric scalar type (use string_array "
                     "or array_of_arrays)",
                     gguf_type_name(elem)));
  if (count > 0 && !data) fail("array(): null data");
  GgufMetaValue v;
  v.type_ = GgufType::ARRAY;
  v.elem_ = elem;
  v.count_ = count;
  v.depth_ = 1;
  if (count > 0) v.bytes_.assign(static_cast<const char*>(data), count * static_cast<uint64_t>(es));
  return v;
}

GgufMetaValue GgufMetaValue::string_array(std::span<const std::string> s) {
  GgufMetaValue v;
  v.type_ = GgufType::ARRAY;
  v.elem_ = GgufType::STRING;
  v.count_ = s.size();
  v.depth_ = 1;
  for (const auto& x : s) check_string(x);
  v.strings_.assign(s.begin(), s.end());
  return v;
}

GgufMetaValue GgufMetaValue::string_array(std::span<const std::string_view> s) {
  GgufMetaValue v;
  v.type_ = GgufType::ARRAY;
  v.elem_ = GgufType::STRING;
  v.count_ = s.size();
  v.depth_ = 1;
  v.strings_.reserve(s.size());
  for (auto x : s) {
    check_string(x);
    v.strings_.emplace_back(x);
  }
  return v;
}

GgufMetaValue GgufMetaValue::array_of_arrays(std::vector<GgufMetaValue> items) {
  GgufMetaValue v;
  v.type_ = GgufType::ARRAY;
  v.elem_ = GgufType::ARRAY;
  v.count_ = items.size();
  int depth = 0;
  for (const auto& it : items) {
    if (it.type_ != GgufType::ARRAY)
      fail(fmt::format("array_of_arrays(): item is a {}, not an array", gguf_type_name(it.type_)));
    depth = std::max(depth, it.depth_);
  }
  v.depth_ = depth + 1;
  if (v.depth_ > kMaxArrayDepth)
    fail(fmt::format("array_of_arrays(): arrays nested {} deep (limit {})", v.depth_,
                     kMaxArrayDepth));
  v.items_ = std::move(items);
  return v;
}

GgufMetaValue GgufMetaValue::from(const GgufValue& x) {
  switch (x.type) {
    case GgufType::UINT8: return u8(static_cast<uint8_t>(x.u));
    case GgufType::INT8: return i8(static_cast<int8_t>(x.i));
    case GgufType::UINT16: return u16(static_cast<uint16_t>(x.u));
    case GgufType::INT16: return i16(static_cast<int16_t>(x.i));
    case GgufType::UINT32: return u32(static_cast<uint32_t>(x.u));
    case GgufType::INT32: return i32(static_cast<int32_t>(x.i));
    case GgufType::UINT64: return u64(x.u);
    case GgufType::INT64: return i64(x.i);
    case GgufType::FLOAT32: return f32(static_cast<float>(x.f));
    case GgufType::FLOAT64: return f64(x.f);
    case GgufType::BOOL: {
      uint8_t b = static_cast<uint8_t>(x.u);  // keep the byte as read
      return scalar(GgufType::BOOL, &b, 1);
    }
    case GgufType::STRING: return string(x.s);
    case GgufType::ARRAY: break;
  }
  if (x.elem == GgufType::STRING) return string_array(std::span<const std::string_view>(x.strings));
  if (x.elem == GgufType::ARRAY) {
    std::vector<GgufMetaValue> items;
    items.reserve(x.items.size());
    for (const auto& it : x.items) items.push_back(from(it));
    return array_of_arrays(std::move(items));
  }
  return array(x.elem, x.raw, x.count);
}

uint64_t GgufMetaValue::nested_arrays() const {
  uint64_t n = items_.size();
  for (const auto& it : items_) n += it.nested_arrays();
  return n;
}

uint64_t GgufMetaValue::encoded_size() const {
  if (type_ == GgufType::STRING) return 8 + bytes_.size();
  if (type_ != GgufType::ARRAY) return bytes_.size();
  uint64_t n = 4 + 8;
  if (elem_ == GgufType::STRING) {
    for (const auto& s : strings_) n += 8 + s.size();
  } else if (elem_ == GgufType::ARRAY) {
    for (const auto& it : items_) n += it.encoded_size();
  } else {
    n += bytes_.size();
  }
  return n;
}

void GgufMetaValue::encode(std::string& out) const {
  if (type_ == GgufType::STRING) return put_string(out, bytes_);
  if (type_ != GgufType::ARRAY) {
    out.append(bytes_);
    return;
  }
  put<uint32_t>(out, static_cast<uint32_t>(elem_));
  put<uint64_t>(out, count_);
  if (elem_ == GgufType::STRING) {
    for (const auto& s : strings_) put_string(out, s);
  } else if (elem_ == GgufType::ARRAY) {
    for (const auto& it : items_) it.encode(out);
  } else {
    out.append(bytes_);
  }
}

// ---------------------------------------------------------------- GgufWriter

void GgufWriter::set(std::string_view key, GgufMetaValue value) {
  check_key(key);
  if (key == "general.alignment") {
    if (value.type() != GgufType::UINT32)
      fail(fmt::format("general.alignment must be a uint32, not {}", gguf_type_name(value.type())));
    std::string enc;
    value.encode(enc);
    uint32_t a;
    std::memcpy(&a, enc.data(), 4);
    if (a == 0 || (a & (a - 1)) != 0 || a > kMaxAlignment)
      fail(fmt::format("general.alignment {} is not a power of two in 1..{}", a, kMaxAlignment));
    alignment_ = a;
  }
  std::string k(key);
  auto it = kv_index_.find(k);
  if (it != kv_index_.end()) {
    kv_[it->second].second = std::move(value);
    return;
  }
  if (kv_.size() >= kMaxMetadataCount)
    fail(fmt::format("more than {} metadata keys", kMaxMetadataCount));
  kv_index_.emplace(k, kv_.size());
  kv_.emplace_back(std::move(k), std::move(value));
}

bool GgufWriter::remove(std::string_view key) {
  auto it = kv_index_.find(std::string(key));
  if (it == kv_index_.end()) return false;
  size_t idx = it->second;
  if (key == "general.alignment") alignment_ = kDefaultAlignment;
  kv_.erase(kv_.begin() + static_cast<ptrdiff_t>(idx));
  kv_index_.clear();
  for (size_t i = 0; i < kv_.size(); ++i) kv_index_.emplace(kv_[i].first, i);
  return true;
}

void GgufWriter::copy_metadata(const GgufFile& src) {
  for (const auto& [k, v] : src.metadata()) {
    // The reader accepts general.alignment of any integer type; the writer writes a uint32.
    if (k == "general.alignment") set_u32(k, static_cast<uint32_t>(v.u));
    else set(k, GgufMetaValue::from(v));
  }
}

void GgufWriter::add(std::string_view name, DType type, std::span<const int64_t> shape,
                     const void* data, uint64_t nbytes, Fill fill) {
  std::string n(name);
  if (n.empty()) fail("tensor name is empty");
  if (n.size() > kMaxTensorNameBytes)
    fail(fmt::format("tensor name of {} bytes is longer than the limit of {}", n.size(),
                     kMaxTensorNameBytes));
  if (tensor_index_.count(n)) fail(fmt::format("duplicate tensor name '{}'", n));
  if (tensors_.size() >= kMaxTensorCount) fail(fmt::format("more than {} tensors", kMaxTensorCount));
  const DTypeTraits& tr = dtype_traits(type);
  if (!tr.name)
    fail(fmt::format("tensor '{}': unknown type id {}", n, static_cast<uint32_t>(type)));
  if (shape.empty() || shape.size() > 4)
    fail(fmt::format("tensor '{}': {} dimensions (must be 1..4)", n, shape.size()));
  Tensor t{n, type, static_cast<uint32_t>(shape.size()), {1, 1, 1, 1}, 0, nullptr, {}};
  unsigned __int128 elems = 1;
  for (size_t d = 0; d < shape.size(); ++d) {
    if (shape[d] < 1 || static_cast<uint64_t>(shape[d]) > kMaxDim)
      fail(fmt::format("tensor '{}': dimension {} has invalid size {} (must be 1..2^40)", n, d,
                       shape[d]));
    t.ne[d] = shape[d];
    elems *= static_cast<uint64_t>(shape[d]);
    if (elems > kMaxElements) fail(fmt::format("tensor '{}': more than 2^62 elements", n));
  }
  if (t.ne[0] % tr.block_elems != 0)
    fail(fmt::format("tensor '{}': row length {} is not a multiple of the {} block size {}", n,
                     t.ne[0], tr.name, tr.block_elems));
  unsigned __int128 bytes =
      elems / static_cast<uint64_t>(tr.block_elems) * static_cast<uint64_t>(tr.block_bytes);
  if (bytes > std::numeric_limits<uint64_t>::max() / 2)
    fail(fmt::format("tensor '{}': too many bytes", n));
  t.nbytes = static_cast<uint64_t>(bytes);
  if (fill) {
    t.fill = std::move(fill);
  } else {
    if (nbytes != t.nbytes)
      fail(fmt::format("tensor '{}': {} bytes given, but {} {} takes {} bytes", n, nbytes, tr.name,
                       [&] {
                         std::string s = "[";
                         for (uint32_t d = 0; d < t.n_dims; ++d)
                           s += (d ? ", " : "") + std::to_string(t.ne[d]);
                         return s + "]";
                       }(),
                       t.nbytes));
    if (!data) fail(fmt::format("tensor '{}': null data", n));
    t.data = static_cast<const uint8_t*>(data);
  }
  tensor_index_.emplace(n, tensors_.size());
  tensors_.push_back(std::move(t));
}

void GgufWriter::add_tensor(std::string_view name, DType type, std::span<const int64_t> shape,
                            const void* data, uint64_t nbytes) {
  add(name, type, shape, data, nbytes, {});
}

void GgufWriter::add_tensor(std::string_view name, DType type, std::span<const int64_t> shape,
                            Fill fill) {
  if (!fill) fail(fmt::format("tensor '{}': empty fill function", name));
  add(name, type, shape, nullptr, 0, std::move(fill));
}

void GgufWriter::add_tensor(const GgufTensor& src, std::string_view name) {
  add(name.empty() ? std::string_view(src.name) : name, src.type,
      std::span<const int64_t>(src.ne, src.n_dims), src.data, src.nbytes, {});
}

uint64_t GgufWriter::write(const std::string& path) const {
  // Arrays of arrays across the file stay within what the reader accepts.
  uint64_t nested = 0;
  for (const auto& kv : kv_) nested += kv.second.nested_arrays();
  if (nested > kMaxNestedArrays)
    fail(fmt::format("{} nested arrays in the metadata (limit {})", nested, kMaxNestedArrays));
  // Header: magic, version, counts, metadata, tensor infos, padding.
  std::string header;
  header.append("GGUF", 4);
  put<uint32_t>(header, 3);
  put<uint64_t>(header, tensors_.size());
  put<uint64_t>(header, kv_.size());
  for (const auto& [k, v] : kv_) {
    put_string(header, k);
    put<uint32_t>(header, static_cast<uint32_t>(v.type()));
    v.encode(header);
  }
  std::vector<uint64_t> offsets;
  offsets.reserve(tensors_.size());
  uint64_t data_size = 0;
  for (const auto& t : tensors_) {
    offsets.push_back(data_size);
    put_string(header, t.name);
    put<uint32_t>(header, t.n_dims);
    for (uint32_t d = 0; d < t.n_dims; ++d) put<uint64_t>(header, static_cast<uint64_t>(t.ne[d]));
    put<uint32_t>(header, static_cast<uint32_t>(t.type));
    put<uint64_t>(header, data_size);
    data_size = align_up(data_size + t.nbytes, alignment_);
  }
  header.resize(align_up(header.size(), alignment_), '\0');

  // Temporary file next to the destination, so the rename stays on one file system.
  std::string tmpl = path + ".tmp-XXXXXX";
  std::vector<char> name(tmpl.begin(), tmpl.end());
  name.push_back('\0');
  int fd = mkstemp(name.data());
  if (fd < 0) fail(fmt::format("{}: cannot create a temporary file: {}", tmpl, std::strerror(errno)));
  const std::string tmp(name.data());
  try {
    write_all(fd, header.data(), header.size(), tmp);
    constexpr uint64_t kChunk = 4u << 20;
    std::vector<uint8_t> buf;
    static const uint8_t zeros[4096] = {};
    uint64_t pos = 0;
    for (size_t i = 0; i < tensors_.size(); ++i) {
      const Tensor& t = tensors_[i];
      while (pos < offsets[i]) {  // padding after the previous tensor
        uint64_t n = std::min<uint64_t>(offsets[i] - pos, sizeof(zeros));
        write_all(fd, zeros, n, tmp);
        pos += n;
      }
      if (t.data) {
        // Straight from the caller's memory (or another file's mapping): no copy in RAM.
        for (uint64_t off = 0; off < t.nbytes; off += kChunk)
          write_all(fd, t.data + off, std::min(kChunk, t.nbytes - off), tmp);
      } else {
        buf.resize(static_cast<size_t>(std::min(kChunk, t.nbytes)));
        for (uint64_t off = 0; off < t.nbytes; off += kChunk) {
          uint64_t n = std::min(kChunk, t.nbytes - off);
          t.fill(buf.data(), off, n);
          write_all(fd, buf.data(), n, tmp);
        }
      }
      pos += t.nbytes;
    }
    while (pos < data_size) {  // the last tensor's padding, so the file ends aligned
      uint64_t n = std::min<uint64_t>(data_size - pos, sizeof(zeros));
      write_all(fd, zeros, n, tmp);
      pos += n;
    }
    if (fchmod(fd, 0644) != 0)
      fail(fmt::format("{}: chmod failed: {}", tmp, std::strerror(errno)));
    if (fsync(fd) != 0) fail(fmt::format("{}: fsync failed: {}", tmp, std::strerror(errno)));
    if (::close(fd) != 0) {
      fd = -1;
      fail(fmt::format("{}: close failed: {}", tmp, std::strerror(errno)));
    }
    fd = -1;
    if (std::rename(tmp.c_str(), path.c_str()) != 0)
      fail(fmt::format("cannot rename {} to {}: {}", tmp, path, std::strerror(errno)));
  } catch (...) {
    if (fd >= 0) ::close(fd);
    ::unlink(tmp.c_str());
    throw;
  }
  // Make the rename durable too (best effort: some file systems refuse fsync on directories).
  std::string dir = path.find('/') == std::string::npos ? "." : path.substr(0, path.rfind('/'));
  if (dir.empty()) dir = "/";
  int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    (void)fsync(dfd);
    ::close(dfd);
  }
  return header.size() + data_size;
}

}  // namespace llmesh
