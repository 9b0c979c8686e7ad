#include "invite/invite_token.h"

#include <sodium.h>

#include <cctype>
#include <charconv>
#include <ctime>
#include <nlohmann/json.hpp>
#include <stdexcept>

#include "invite/sodium_init.h"

namespace llmesh::invite {

using nlohmann::json;

namespace {

constexpr size_t kChecksumBytes = 4;
constexpr char kB64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

std::string b64url_encode(const std::vector<uint8_t>& in) {
  std::string out;
  out.reserve((in.size() * 4 + 2) / 3);
  size_t i = 0;
  for (; i + 3 <= in.size(); i += 3) {
    uint32_t v = uint32_t(in[i]) << 16 | uint32_t(in[i + 1]) << 8 | in[i + 2];
    out += kB64[v >> 18];
    out += kB64[(v >> 12) & 63];
    out += kB64[(v >> 6) & 63];
    out += kB64[v & 63];
  }
  if (in.size() - i == 1) {
    uint32_t v = uint32_t(in[i]) << 16;
    out += kB64[v >> 18];
    out += kB64[(v >> 12) & 63];
  } else if (in.size() - i == 2) {
    uint32_t v = uint32_t(in[i]) << 16 | uint32_t(in[i + 1]) << 8;
    out += kB64[v >> 18];
    out += kB64[(v >> 12) & 63];
    out += kB64[(v >> 6) & 63];
  }
  return out;
}

int b64_value(char c) {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  if (c == '-') return 62;
  if (c == '_') return 63;
  return -1;
}

// Strict: base64url alphabet only, no padding, and the unused low bits of the last character
// must be zero, so every string decodes to different bytes (a changed character is never
// silently ignored). Returns false with the offending position in *bad_pos (or npos for length).
bool b64url_decode(std::string_view s, std::vector<uint8_t>& out, size_t* bad_pos) {
  *bad_pos = std::string_view::npos;
  if (s.size() % 4 == 1) return false;
  out.clear();
  out.reserve(s.size() * 3 / 4);
  uint32_t acc = 0;
  int bits = 0;
  for (size_t i = 0; i < s.size(); ++i) {
    int v = b64_value(s[i]);
    if (v < 0) {
      *bad_pos = i;
      return false;
    }
    acc = (acc << 6) | uint32_t(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out.push_back(uint8_t(acc >> bits));
      acc &= (1u << bits) - 1;
    }
  }
  if (acc != 0) {
    *bad_pos = s.size() - 1;
    return false;
  }
  return true;
}

std::array<uint8_t, kChecksumBytes> checksum(const uint8_t* p, size_t n) {
  ensure_sodium();
  static const uint8_t kKey[] = "llmesh-invite-checksum-v1";
  std::array<uint8_t, kChecksumBytes> out{};
  // BLAKE2b with a fixed public key: a checksum against typos, not a MAC.
  crypto_generichash(out.data(), out.size(), p, n, kKey, sizeof kKey - 1);
  return out;
}

InviteDecodeResult fail(InviteErrorCode code, std::string msg) {
  InviteDecodeResult r;
  r.code = code;
  r.error = std::move(msg);
  return r;
}

const char* kDamaged =
    "this token is damaged (its checksum does not match): it was probably mistyped or cut off; "
    "copy the whole token again";

bool get_bin(const json& j, size_t size, uint8_t* out) {
  if (!j.is_binary() || j.get_binary().size() != size) return false;
  std::copy(j.get_binary().begin(), j.get_binary().end(), out);
  return true;
}

bool get_int(const json& j, int64_t lo, int64_t hi, int64_t* out) {
  if (j.is_number_unsigned()) {
    uint64_t v = j.get<uint64_t>();
    if (v > uint64_t(INT64_MAX) || int64_t(v) < lo || int64_t(v) > hi) return false;
    *out = int64_t(v);
    return true;
  }
  if (j.is_number_integer()) {
    int64_t v = j.get<int64_t>();
    if (v < lo || v > hi) return false;
    *out = v;
    return true;
  }
  return false;
}

}  // namespace

const char* invite_error_name(InviteErrorCode c) {
  switch (c) {
    case InviteErrorCode::ok: return "ok";
    case InviteErrorCode::bad_prefix: return "bad_prefix";
    case InviteErrorCode::bad_encoding: return "bad_encoding";
    case InviteErrorCode::damaged: return "damaged";
    case InviteErrorCode::bad_format: return "bad_format";
    case InviteErrorCode::wrong_types: return "wrong_types";
    case InviteErrorCode::unsupported_version: return "unsupported_version";
    case InviteErrorCode::expired: return "expired";
    case InviteErrorCode::too_large: return "too_large";
  }
  return "unknown";
}

int64_t unix_now() { return int64_t(std::time(nullptr)); }

std::string format_utc(int64_t t) {
  std::time_t tt = std::time_t(t);
  std::tm tm{};
  if (!gmtime_r(&tt, &tm)) return std::to_string(t);
  char buf[64];
  std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S UTC", &tm);
  return buf;
}

bool valid_address(std::string_view a) {
  if (a.empty() || a.size() > kMaxAddressChars) return false;
  size_t colon = a.rfind(':');
  if (colon == std::string_view::npos || colon == 0 || colon + 1 >= a.size()) return false;
  std::string_view host = a.substr(0, colon), port = a.substr(colon + 1);
  if (port.size() > 5) return false;
  unsigned p = 0;
  for (char c : port) {
    if (c < '0' || c > '9') return false;
    p = p * 10 + unsigned(c - '0');
  }
  if (p == 0 || p > 65535) return false;
  if (host.front() == '[') {
    if (host.size() < 3 || host.back() != ']') return false;
    for (char c : host.substr(1, host.size() - 2))
      if (!(std::isxdigit(static_cast<unsigned char>(c)) || c == ':' || c == '.' || c == '%')) return false;
    return true;
  }
  if (host.size() > 253) return false;
  for (char c : host)
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '-' || c == '_')) return false;
  return true;
}

std::string encode_invite(const Invite& inv) {
  if (inv.nodes.size() > kMaxInviteNodes)
    throw std::invalid_argument("an invite carries at most " + std::to_string(kMaxInviteNodes) + " nodes");
  json nodes = json::array();
  for (const auto& n : inv.nodes) {
    if (!valid_address(n.address)) throw std::invalid_argument("invalid node address '" + n.address + "'");
    nodes.push_back(json::array({n.address, json::binary({n.node_id.begin(), n.node_id.end()})}));
  }
  if (inv.expires < 0) throw std::invalid_argument("negative expiry");
  json j = {
      {"v", kTokenVersion},
      {"m", json::binary({inv.mesh.mesh_id.begin(), inv.mesh.mesh_id.end()})},
      {"s", json::binary({inv.mesh.secret.begin(), inv.mesh.secret.end()})},
      {"e", inv.mesh.epoch},
      {"n", nodes},
      {"x", inv.expires},
      {"t", inv.issued},
  };
  std::vector<uint8_t> bytes = json::to_msgpack(j);
  auto sum = checksum(bytes.data(), bytes.size());
  bytes.insert(bytes.end(), sum.begin(), sum.end());
  std::string token = std::string(kTokenPrefix) + b64url_encode(bytes);
  if (token.size() > kMaxTokenChars) throw std::invalid_argument("invite token would be too large");
  return token;
}

InviteDecodeResult decode_invite(std::string_view token, int64_t now) {
  if (now == 0) now = unix_now();
  // Surrounding whitespace from copy and paste is harmless.
  while (!token.empty() && std::isspace(static_cast<unsigned char>(token.front()))) token.remove_prefix(1);
  while (!token.empty() && std::isspace(static_cast<unsigned char>(token.back()))) token.remove_suffix(1);
  if (token.size() > kMaxTokenChars)
    return fail(InviteErrorCode::too_large, "this token is too large (" + std::to_string(token.size()) +
                                                " characters; the limit is " + std::to_string(kMaxTokenChars) + ")");
  if (token.substr(0, kTokenPrefix.size()) != kTokenPrefix) {
    if (token.starts_with("llmesh"))
      return fail(InviteErrorCode::bad_prefix,
                  "this is not a version-1 llmesh invite token (it should start with 'llmesh1'); it may be "
                  "damaged, or come from a newer llmesh");
    return fail(InviteErrorCode::bad_prefix, "this is not an llmesh invite token (it should start with 'llmesh1')");
  }
  std::string_view body = token.substr(kTokenPrefix.size());
  std::vector<uint8_t> bytes;
  size_t bad = 0;
  if (!b64url_decode(body, bytes, &bad)) {
    if (bad == std::string_view::npos)
      return fail(InviteErrorCode::bad_encoding,
                  "this token is damaged (its length is impossible): it was probably cut off; copy the whole "
                  "token again");
    if (bad + 1 == body.size() && b64_value(body[bad]) >= 0)
      return fail(InviteErrorCode::damaged, kDamaged);
    return fail(InviteErrorCode::bad_encoding,
                "this token is damaged (character " + std::to_string(kTokenPrefix.size() + bad + 1) +
                    " is not allowed in a token): copy the whole token again");
  }
  if (bytes.size() <= kChecksumBytes)
    return fail(InviteErrorCode::damaged, "this token is damaged (too short): copy the whole token again");
  size_t n = bytes.size() - kChecksumBytes;
  auto sum = checksum(bytes.data(), n);
  if (sodium_memcmp(sum.data(), bytes.data() + n, kChecksumBytes) != 0) return fail(InviteErrorCode::damaged, kDamaged);

  json j = json::from_msgpack(bytes.begin(), bytes.begin() + std::ptrdiff_t(n), /*strict=*/true,
                              /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object())
    return fail(InviteErrorCode::bad_format,
                "this token is well-formed text but its content is not an invite (a bug in the llmesh that made "
                "it?)");
  auto wrong = [](const std::string& what) {
    return fail(InviteErrorCode::wrong_types, "this token's content is invalid: " + what);
  };
  int64_t version = 0;
  auto it = j.find("v");
  if (it == j.end() || !get_int(*it, 0, INT64_MAX, &version)) return wrong("missing or invalid version");
  if (version != kTokenVersion)
    return fail(InviteErrorCode::unsupported_version,
                "this token has version " + std::to_string(version) + "; this llmesh reads version " +
                    std::to_string(kTokenVersion) + " (upgrade llmesh)");
  Invite inv;
  if ((it = j.find("m")) == j.end() || !get_bin(*it, 16, inv.mesh.mesh_id.data()))
    return wrong("mesh id must be 16 bytes");
  if ((it = j.find("s")) == j.end() || !get_bin(*it, 32, inv.mesh.secret.data()))
    return wrong("mesh secret must be 32 bytes");
  int64_t v = 0;
  if ((it = j.find("e")) == j.end() || !get_int(*it, 1, UINT32_MAX, &v)) return wrong("epoch must be 1..2^32-1");
  inv.mesh.epoch = uint32_t(v);
  if ((it = j.find("x")) == j.end() || !get_int(*it, 0, INT64_MAX, &inv.expires)) return wrong("invalid expiry");
  if ((it = j.find("t")) != j.end() && !get_int(*it, 0, INT64_MAX, &inv.issued)) return wrong("invalid issue time");
  if ((it = j.find("n")) == j.end() || !it->is_array()) return wrong("node list missing");
  if (it->size() > kMaxInviteNodes) return wrong("too many nodes");
  for (const auto& e : *it) {
    InviteNode node;
    if (!e.is_array() || e.size() < 2 || !e[0].is_string() || !get_bin(e[1], 32, node.node_id.data()))
      return wrong("a node entry must be [address, 32-byte node id]");
    node.address = e[0].get<std::string>();
    if (!valid_address(node.address)) return wrong("invalid node address");
    inv.nodes.push_back(std::move(node));
  }
  if (inv.expires != 0 && now >= inv.expires)
    return fail(InviteErrorCode::expired,
                "this token expired on " + format_utc(inv.expires) + "; ask a mesh member for a new one");
  InviteDecodeResult r;
  r.invite = std::move(inv);
  return r;
}

std::string redact_token(std::string_view token) {
  ensure_sodium();
  uint8_t h[4];
  crypto_generichash(h, sizeof h, reinterpret_cast<const uint8_t*>(token.data()), token.size(), nullptr, 0);
  std::string head = token.starts_with(kTokenPrefix) ? std::string(kTokenPrefix) : std::string();
  return head + "\xE2\x80\xA6(" + std::to_string(token.size()) + " chars, id " + to_hex(std::span<const uint8_t>(h, 4)) +
         ")";
}

std::optional<int64_t> parse_duration(std::string_view text, std::string* error) {
  auto bad = [&](const std::string& m) -> std::optional<int64_t> {
    if (error) *error = m;
    return std::nullopt;
  };
  if (text == "never") return int64_t(0);
  if (text.empty()) return bad("empty duration (use e.g. 7d, 12h, 30m or never)");
  constexpr int64_t kMax = 10LL * 366 * 86400;
  int64_t total = 0;
  size_t i = 0;
  while (i < text.size()) {
    size_t j = i;
    while (j < text.size() && text[j] >= '0' && text[j] <= '9') ++j;
    if (j == i || j - i > 9 || j >= text.size())
      return bad("invalid duration '" + std::string(text) + "' (use e.g. 7d, 12h, 1d12h, 30m or never)");
    int64_t num = 0;
    std::from_chars(text.data() + i, text.data() + j, num);
    int64_t unit = 0;
    switch (text[j]) {
      case 's': unit = 1; break;
      case 'm': unit = 60; break;
      case 'h': unit = 3600; break;
      case 'd': unit = 86400; break;
      case 'w': unit = 7 * 86400; break;
      default:
        return bad("invalid duration unit '" + std::string(1, text[j]) + "' in '" + std::string(text) +
                   "' (units: s, m, h, d, w)");
    }
    total += num * unit;
    if (total > kMax) return bad("duration '" + std::string(text) + "' is longer than 10 years (use never)");
    i = j + 1;
  }
  if (total == 0) return bad("a zero duration would expire at once (use never for no expiry)");
  return total;
}

int64_t expiry_after(int64_t seconds, int64_t now) {
  if (seconds == 0) return 0;
  return (now == 0 ? unix_now() : now) + seconds;
}

}  // namespace llmesh::invite
