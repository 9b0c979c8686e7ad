#include "gguf/gguf.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <limits>
#include <unordered_set>

#include <fmt/format.h>

namespace llmesh {
namespace {

using namespace gguf_limits;

// A key or name as it appears in an error message: at most 80 bytes, control and non-ASCII
// bytes escaped, so a hostile file cannot flood or garble the terminal.
std::string printable(std::string_view s) {
  std::string out;
  for (size_t i = 0; i < s.size() && i < 80; ++i) {
    auto ch = static_cast<unsigned char>(s[i]);
    if (ch >= 0x20 && ch < 0x7f && ch != '\\') out += static_cast<char>(ch);
    else out += fmt::format("\\x{:02x}", ch);
  }
  if (s.size() > 80) out += fmt::format("...({} bytes)", s.size());
  return out;
}

// Bounds-checked little-endian cursor over the file.
class Cursor {
 public:
  Cursor(const GgufFile& f, const uint8_t* p, uint64_t size) : f_(f), p_(p), size_(size) {}
  uint64_t pos() const { return pos_; }
  uint64_t left() const { return size_ - pos_; }
  const uint8_t* here() const { return p_ + pos_; }
  void need(uint64_t n, std::string_view what) {
    if (n > left())
      f_.fail(fmt::format("truncated: {} needs {} bytes at offset {} but the file has {} left",
                          printable(what), n, pos_, left()));
  }
  template <typename T>
  T read(std::string_view what) {
    need(sizeof(T), what);
    T v;
    std::memcpy(&v, p_ + pos_, sizeof(T));
    pos_ += sizeof(T);
    return v;
  }
  std::string_view str(std::string_view what, uint64_t max_bytes = kMaxStringBytes) {
    uint64_t n = read<uint64_t>(what);
    if (n > max_bytes)
      f_.fail(fmt::format("{}: string length {} at offset {} exceeds the limit of {} bytes",
                          printable(what), n, pos_ - 8, max_bytes));
    need(n, what);
    std::string_view s(reinterpret_cast<const char*>(p_ + pos_), n);
    pos_ += n;
    return s;
  }
  void skip(uint64_t n, std::string_view what) {
    need(n, what);
    pos_ += n;
  }

 private:
  const GgufFile& f_;
  const uint8_t* p_;
  uint64_t size_;
  uint64_t pos_ = 0;
};

bool valid_type(uint32_t t) { return t <= static_cast<uint32_t>(GgufType::FLOAT64); }

template <typename T>
T load(const uint8_t* p) {
  T v;
  std::memcpy(&v, p, sizeof(T));
  return v;
}

void read_scalar(GgufValue& v, const uint8_t* p) {
  switch (v.type) {
    case GgufType::UINT8: v.u = load<uint8_t>(p); break;
    case GgufType::INT8: v.i = load<int8_t>(p); break;
    case GgufType::UINT16: v.u = load<uint16_t>(p); break;
    case GgufType::INT16: v.i = load<int16_t>(p); break;
    case GgufType::UINT32: v.u = load<uint32_t>(p); break;
    case GgufType::INT32: v.i = load<int32_t>(p); break;
    case GgufType::UINT64: v.u = load<uint64_t>(p); break;
    case GgufType::INT64: v.i = load<int64_t>(p); break;
    case GgufType::FLOAT32: v.f = load<float>(p); break;
    case GgufType::FLOAT64: v.f = load<double>(p); break;
    case GgufType::BOOL: v.u = load<uint8_t>(p); break;
    default: break;
  }
  switch (v.type) {
    case GgufType::INT8: case GgufType::INT16: case GgufType::INT32: case GgufType::INT64:
      v.u = static_cast<uint64_t>(v.i);  // two's complement bits
      break;
    case GgufType::UINT8: case GgufType::UINT16: case GgufType::UINT32: case GgufType::UINT64:
    case GgufType::BOOL:
      v.i = static_cast<int64_t>(v.u);  // modular for UINT64 > INT64_MAX
      break;
    default: break;
  }
}

// Parses one value of type v.type (already read) at the cursor. `nested` counts the inner
// arrays of the whole file, so arrays of arrays cannot multiply memory without bound.
void read_value(const GgufFile& f, Cursor& c, GgufValue& v, const std::string& key, int depth,
                uint64_t& nested) {
  if (v.type == GgufType::STRING) {
    v.s = c.str(key);
    return;
  }
  if (v.type != GgufType::ARRAY) {
    int n = gguf_scalar_size(v.type);
    c.need(n, key);
    read_scalar(v, c.here());
    c.skip(n, key);
    return;
  }
  if (depth >= kMaxArrayDepth)
    f.fail(fmt::format("key '{}': arrays nested more than {} deep", printable(key),
                       kMaxArrayDepth));
  uint32_t et = c.read<uint32_t>(key);
  if (!valid_type(et))
    f.fail(fmt::format("key '{}': invalid array element type {}", printable(key), et));
  v.elem = static_cast<GgufType>(et);
  v.count = c.read<uint64_t>(key);
  // Containers grow as elements are actually parsed (never reserved from the count alone
  // beyond a small amount), so memory stays proportional to the bytes consumed.
  constexpr uint64_t kReserveCap = 1 << 16;
  if (v.elem == GgufType::STRING) {
    // Every string needs at least its 8-byte length.
    if (v.count > c.left() / 8)
      f.fail(fmt::format("key '{}': string array of {} elements cannot fit in the {} bytes left",
                         printable(key), v.count, c.left()));
    v.strings.reserve(std::min(v.count, kReserveCap));
    for (uint64_t k = 0; k < v.count; ++k) v.strings.push_back(c.str(key));
  } else if (v.elem == GgufType::ARRAY) {
    // Every inner array needs at least its element type and count.
    if (v.count > c.left() / 12)
      f.fail(fmt::format("key '{}': array of {} arrays cannot fit in the {} bytes left",
                         printable(key), v.count, c.left()));
    if (v.count > kMaxNestedArrays - nested)
      f.fail(fmt::format("key '{}': more than {} nested arrays in the file", printable(key),
                         kMaxNestedArrays));
    nested += v.count;
    v.items.reserve(std::min(v.count, kReserveCap));
    for (uint64_t k = 0; k < v.count; ++k) {
      GgufValue& item = v.items.emplace_back();
      item.type = GgufType::ARRAY;
      read_value(f, c, item, key, depth + 1, nested);
    }
  } else {
    uint64_t es = static_cast<uint64_t>(gguf_scalar_size(v.elem));
    if (v.count > c.left() / es)
      f.fail(fmt::format("key '{}': array of {} {} elements extends past the end of the file",
                         printable(key), v.count, gguf_type_name(v.elem)));
    v.raw = c.here();
    c.skip(v.count * es, key);
  }
}

}  // namespace

int gguf_scalar_size(GgufType t) {
  switch (t) {
    case GgufType::UINT8: case GgufType::INT8: case GgufType::BOOL: return 1;
    case GgufType::UINT16: case GgufType::INT16: return 2;
    case GgufType::UINT32: case GgufType::INT32: case GgufType::FLOAT32: return 4;
    case GgufType::UINT64: case GgufType::INT64: case GgufType::FLOAT64: return 8;
    default: return 0;
  }
}

const char* gguf_type_name(GgufType t) {
  static const char* names[] = {"uint8", "int8", "uint16", "int16", "uint32", "int32", "float32",
                                "bool",  "string", "array", "uint64", "int64", "float64"};
  auto i = static_cast<uint32_t>(t);
  return i < 13 ? names[i] : "invalid";
}

bool GgufValue::is_integer() const {
  switch (type) {
    case GgufType::UINT8: case GgufType::INT8: case GgufType::UINT16: case GgufType::INT16:
    case GgufType::UINT32: case GgufType::INT32: case GgufType::UINT64: case GgufType::INT64:
      return true;
    default: return false;
  }
}

GgufValue GgufValue::array_scalar(uint64_t k) const {
  if (type != GgufType::ARRAY || !raw || gguf_scalar_size(elem) == 0)
    throw GgufError("not a numeric array");
  if (k >= count) throw GgufError(fmt::format("array index {} out of range ({} elements)", k, count));
  GgufValue v;
  v.type = elem;
  read_scalar(v, raw + k * static_cast<uint64_t>(gguf_scalar_size(elem)));
  return v;
}

double GgufValue::array_number(uint64_t k) const {
  GgufValue v = array_scalar(k);
  if (v.is_float()) return v.f;
  if (elem == GgufType::UINT64 || elem == GgufType::BOOL) return static_cast<double>(v.u);
  return static_cast<double>(v.i);
}

int64_t GgufValue::array_int(uint64_t k) const {
  GgufValue v = array_scalar(k);
  if (!v.is_float()) return v.i;
  // Float to integer is undefined behaviour out of range: saturate instead.
  if (std::isnan(v.f)) return 0;
  if (v.f >= 9223372036854775807.0) return std::numeric_limits<int64_t>::max();
  if (v.f <= -9223372036854775808.0) return std::numeric_limits<int64_t>::min();
  return static_cast<int64_t>(v.f);
}

uint64_t GgufValue::array_uint(uint64_t k) const {
  GgufValue v = array_scalar(k);
  if (!v.is_float()) return v.u;
  if (std::isnan(v.f) || v.f <= 0) return 0;
  if (v.f >= 18446744073709551615.0) return std::numeric_limits<uint64_t>::max();
  return static_cast<uint64_t>(v.f);
}

std::string GgufTensor::shape_string() const {
  std::string s = "[";
  for (uint32_t d = 0; d < n_dims; ++d) s += (d ? ", " : "") + std::to_string(ne[d]);
  return s + "]";
}

void GgufFile::fail(const std::string& what) const { throw GgufError(path_ + ": " + what); }

std::unique_ptr<GgufFile> GgufFile::open(const std::string& path) {
  std::unique_ptr<GgufFile> f(new GgufFile());
  f->path_ = path;
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) f->fail(fmt::format("cannot open: {}", std::strerror(errno)));
  struct stat st {};
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    f->fail("not a regular file");
  }
  f->size_ = static_cast<uint64_t>(st.st_size);
  if (f->size_ == 0) {
    ::close(fd);
    f->fail("empty file (0 bytes), expected a GGUF header");
  }
  void* m = mmap(nullptr, f->size_, PROT_READ, MAP_SHARED, fd, 0);
  ::close(fd);
  if (m == MAP_FAILED) f->fail(fmt::format("mmap failed: {}", std::strerror(errno)));
  f->map_ = m;
  f->base_ = static_cast<const uint8_t*>(m);
  f->parse_all();
  return f;
}

std::unique_ptr<GgufFile> GgufFile::parse(const uint8_t* data, size_t size, std::string label) {
  std::unique_ptr<GgufFile> f(new GgufFile());
  f->path_ = std::move(label);
  f->base_ = data;
  f->size_ = size;
  f->parse_all();
  return f;
}

std::unique_ptr<GgufFile> GgufFile::parse_header(const uint8_t* data, size_t size, std::string label) {
  std::unique_ptr<GgufFile> f(new GgufFile());
  f->path_ = std::move(label);
  f->base_ = data;
  f->size_ = size;
  f->header_only_ = true;
  f->parse_all();
  return f;
}

GgufFile::~GgufFile() {
  if (map_) munmap(map_, size_);
}

void GgufFile::parse_all() {
  Cursor c(*this, base_, size_);
  uint32_t magic = c.read<uint32_t>("magic");
  if (magic != 0x46554747u)  // "GGUF" little-endian
    fail(fmt::format("not a GGUF file (magic {:08x}, expected 'GGUF')", magic));
  version_ = c.read<uint32_t>("version");
  if (version_ == 1) fail("GGUF version 1 is not supported (only v2 and v3); re-convert the model");
  if (version_ == 0x02000000u || version_ == 0x03000000u)
    fail("big-endian GGUF files are not supported");
  if (version_ != 2 && version_ != 3) fail(fmt::format("unsupported GGUF version {}", version_));
  uint64_t n_tensors = c.read<uint64_t>("tensor count");
  uint64_t n_kv = c.read<uint64_t>("metadata count");
  if (n_kv > kMaxMetadataCount)
    fail(fmt::format("metadata count {} exceeds the limit of {}", n_kv, kMaxMetadataCount));
  if (n_tensors > kMaxTensorCount)
    fail(fmt::format("tensor count {} exceeds the limit of {}", n_tensors, kMaxTensorCount));
  // A key-value needs >= 8 (key length) + 1 (key) + 4 (type) + 1 bytes; a tensor info
  // >= 8 (name length) + 1 (name) + 4 (dims) + 8 (one dim) + 4 (type) + 8 (offset).
  if (n_kv > c.left() / 14) fail(fmt::format("metadata count {} is impossible for the file size", n_kv));
  if (n_tensors > (c.left() - n_kv * 14) / 33)
    fail(fmt::format("tensor count {} is impossible for the file size", n_tensors));

  // Reserve only a little up front: a lying count must not cost memory before the entries it
  // claims are actually found in the file.
  constexpr uint64_t kReserveCap = 4096;
  kv_.reserve(std::min(n_kv, kReserveCap));
  uint64_t nested = 0;
  for (uint64_t k = 0; k < n_kv; ++k) {
    std::string key(c.str("metadata key", kMaxKeyBytes));
    if (key.empty()) fail(fmt::format("metadata entry {} has an empty key", k));
    uint32_t t = c.read<uint32_t>(key);
    if (!valid_type(t)) fail(fmt::format("key '{}': invalid value type {}", printable(key), t));
    GgufValue v;
    v.type = static_cast<GgufType>(t);
    read_value(*this, c, v, key, 0, nested);
    kv_.emplace_back(std::move(key), std::move(v));
  }
  for (size_t k = 0; k < kv_.size(); ++k) {
    if (!kv_index_.emplace(kv_[k].first, k).second)
      fail(fmt::format("duplicate metadata key '{}'", printable(kv_[k].first)));
  }
  if (const GgufValue* a = find("general.alignment")) {
    if (!a->is_integer() || a->u == 0 || (a->u & (a->u - 1)) != 0 || a->u > kMaxAlignment)
      fail(fmt::format("general.alignment must be a power of two integer no larger than {} "
                       "(got {} {})",
                       kMaxAlignment, gguf_type_name(a->type),
                       a->is_integer() ? std::to_string(a->i) : std::string("value")));
    alignment_ = a->u;
  }

  tensors_.reserve(std::min(n_tensors, kReserveCap));
  for (uint64_t k = 0; k < n_tensors; ++k) {
    GgufTensor t;
    t.name = std::string(c.str("tensor name", kMaxTensorNameBytes));
    if (t.name.empty()) fail(fmt::format("tensor {} has an empty name", k));
    const std::string pname = printable(t.name);
    t.n_dims = c.read<uint32_t>("tensor dims");
    if (t.n_dims == 0 || t.n_dims > 4)
      fail(fmt::format("tensor '{}': {} dimensions (must be 1..4)", pname, t.n_dims));
    // Element count without overflow: each dim <= 2^40, and the running product is checked
    // against 2^62 after every factor, so it never exceeds 2^102 (fits in 128 bits).
    unsigned __int128 elems = 1;
    for (uint32_t d = 0; d < t.n_dims; ++d) {
      uint64_t n = c.read<uint64_t>("tensor shape");
      if (n == 0 || n > kMaxDim)
        fail(fmt::format("tensor '{}': dimension {} has invalid size {} (must be 1..2^40)", pname,
                         d, n));
      t.ne[d] = static_cast<int64_t>(n);
      elems *= n;
      if (elems > kMaxElements)
        fail(fmt::format("tensor '{}': shape {} has more than 2^62 elements", pname,
                         t.shape_string()));
    }
    uint32_t type = c.read<uint32_t>("tensor type");
    const DTypeTraits& tr = dtype_traits(type);
    if (!tr.name) fail(fmt::format("tensor '{}': unknown tensor type id {}", pname, type));
    t.type = static_cast<DType>(type);
    t.offset = c.read<uint64_t>("tensor offset");
    if (t.ne[0] % tr.block_elems != 0)
      fail(fmt::format("tensor '{}': row length {} is not a multiple of the {} block size {}",
                       pname, t.ne[0], tr.name, tr.block_elems));
    unsigned __int128 bytes = elems / static_cast<uint64_t>(tr.block_elems) *
                              static_cast<uint64_t>(tr.block_bytes);
    if (bytes > (header_only_ ? (unsigned __int128)1 << 62 : size_))
      fail(fmt::format("tensor '{}': {} {} needs {:.0f} bytes, more than the whole file ({})",
                       pname, t.shape_string(), tr.name, static_cast<double>(bytes), size_));
    t.nbytes = static_cast<uint64_t>(bytes);
    if (t.offset % alignment_ != 0)
      fail(fmt::format("tensor '{}': offset {} is not a multiple of the alignment {}", pname,
                       t.offset, alignment_));
    tensors_.push_back(std::move(t));
  }
  for (size_t k = 0; k < tensors_.size(); ++k) {
    if (!tensor_index_.emplace(tensors_[k].name, k).second)
      fail(fmt::format("duplicate tensor name '{}'", printable(tensors_[k].name)));
  }

  uint64_t pos = c.pos();
  data_offset_ = (pos + alignment_ - 1) / alignment_ * alignment_;
  if (!tensors_.empty() && data_offset_ > size_ && !header_only_)
    fail(fmt::format("truncated: the data section would start at {} past the end ({})",
                     data_offset_, size_));
  for (auto& t : tensors_) {
    if (header_only_) {  // the data is elsewhere: offsets only, checked against each other below
      if (t.offset > (1ull << 62) || t.nbytes > (1ull << 62))
        fail(fmt::format("tensor '{}': offset {} or size {} is impossible", printable(t.name), t.offset, t.nbytes));
      t.data = nullptr;
      continue;
    }
    uint64_t room = size_ - data_offset_;
    if (t.offset > room || t.nbytes > room - t.offset)
      fail(fmt::format("tensor '{}': data at offset {} ({} bytes) extends past the end of the file "
                       "(data section is {} bytes)",
                       printable(t.name), t.offset, t.nbytes, room));
    t.data = base_ + data_offset_ + t.offset;
  }
  // No two tensors may share bytes: a writer bug or a crafted file aliasing one tensor's
  // weights onto another's.
  std::vector<const GgufTensor*> by_offset;
  by_offset.reserve(tensors_.size());
  for (const auto& t : tensors_) by_offset.push_back(&t);
  std::sort(by_offset.begin(), by_offset.end(), [](const GgufTensor* a, const GgufTensor* b) {
    return a->offset < b->offset;
  });
  for (size_t k = 1; k < by_offset.size(); ++k) {
    const GgufTensor& a = *by_offset[k - 1];
    const GgufTensor& b = *by_offset[k];
    if (b.offset < a.offset + a.nbytes)
      fail(fmt::format("tensor '{}' data [{}, {}) overlaps tensor '{}' data [{}, {})",
                       printable(b.name), b.offset, b.offset + b.nbytes, printable(a.name),
                       a.offset, a.offset + a.nbytes));
  }
}

const GgufValue* GgufFile::find(std::string_view key) const {
  auto it = kv_index_.find(key);
  return it == kv_index_.end() ? nullptr : &kv_[it->second].second;
}

namespace {
[[noreturn]] void wrong_type(const GgufFile& f, std::string_view key, const GgufValue& v,
                             const char* want) {
  f.fail(fmt::format("metadata '{}' is {}, expected {}", key, gguf_type_name(v.type), want));
}
}  // namespace

std::string GgufFile::get_string(std::string_view key) const {
  auto v = opt_string(key);
  if (!v) fail(fmt::format("missing metadata '{}'", key));
  return *v;
}
uint64_t GgufFile::get_uint(std::string_view key) const {
  auto v = opt_uint(key);
  if (!v) fail(fmt::format("missing metadata '{}'", key));
  return *v;
}
int64_t GgufFile::get_int(std::string_view key) const {
  const GgufValue* v = find(key);
  if (!v) fail(fmt::format("missing metadata '{}'", key));
  if (!v->is_integer()) wrong_type(*this, key, *v, "an integer");
  if (v->type == GgufType::UINT64 && v->u > static_cast<uint64_t>(INT64_MAX))
    fail(fmt::format("metadata '{}' = {} is out of range", key, v->u));
  return v->i;
}
double GgufFile::get_float(std::string_view key) const {
  auto v = opt_float(key);
  if (!v) fail(fmt::format("missing metadata '{}'", key));
  return *v;
}
bool GgufFile::get_bool(std::string_view key) const {
  auto v = opt_bool(key);
  if (!v) fail(fmt::format("missing metadata '{}'", key));
  return *v;
}
const GgufValue& GgufFile::get_array(std::string_view key) const {
  const GgufValue* v = find(key);
  if (!v) fail(fmt::format("missing metadata '{}'", key));
  if (v->type != GgufType::ARRAY) wrong_type(*this, key, *v, "an array");
  return *v;
}
std::optional<std::string> GgufFile::opt_string(std::string_view key) const {
  const GgufValue* v = find(key);
  if (!v) return std::nullopt;
  if (v->type != GgufType::STRING) wrong_type(*this, key, *v, "a string");
  return std::string(v->s);
}
std::optional<uint64_t> GgufFile::opt_uint(std::string_view key) const {
  const GgufValue* v = find(key);
  if (!v) return std::nullopt;
  if (v->type == GgufType::BOOL) return v->u;
  if (!v->is_integer()) wrong_type(*this, key, *v, "an unsigned integer");
  bool is_signed = v->type == GgufType::INT8 || v->type == GgufType::INT16 ||
                   v->type == GgufType::INT32 || v->type == GgufType::INT64;
  if (is_signed && v->i < 0) fail(fmt::format("metadata '{}' = {} must not be negative", key, v->i));
  return v->u;
}
std::optional<double> GgufFile::opt_float(std::string_view key) const {
  const GgufValue* v = find(key);
  if (!v) return std::nullopt;
  if (v->is_float()) return v->f;
  if (v->is_integer()) return v->type == GgufType::UINT64 ? static_cast<double>(v->u)
                                                          : static_cast<double>(v->i);
  wrong_type(*this, key, *v, "a number");
}
std::optional<bool> GgufFile::opt_bool(std::string_view key) const {
  const GgufValue* v = find(key);
  if (!v) return std::nullopt;
  if (v->type == GgufType::BOOL || v->is_integer()) return v->u != 0;
  wrong_type(*this, key, *v, "a bool");
}

const GgufTensor* GgufFile::find_tensor(std::string_view name) const {
  auto it = tensor_index_.find(name);
  return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
}
const GgufTensor& GgufFile::tensor(std::string_view name) const {
  const GgufTensor* t = find_tensor(name);
  if (!t) fail(fmt::format("missing tensor '{}'", name));
  return *t;
}

}  // namespace llmesh
