#include "discovery/nostr_event.h"

#include "identity/private_file.h"
#include "invite/mesh_secret.h"

#include <openssl/rand.h>
#include <openssl/sha.h>
#include <secp256k1.h>
#include <secp256k1_extrakeys.h>
#include <secp256k1_schnorrsig.h>

#include <fstream>
#include <sstream>

namespace llmesh::mesh::discovery {

namespace fs = std::filesystem;
using Bytes32 = std::array<uint8_t, 32>;
using invite::from_hex;
using invite::to_hex;

namespace {

// One context for the process, randomized once against side channels; secp256k1 only reads it
// afterwards, so every thread may sign and verify with it concurrently.
const secp256k1_context* context() {
  static const secp256k1_context* ctx = [] {
    secp256k1_context* c = secp256k1_context_create(SECP256K1_CONTEXT_NONE);
    Bytes32 seed;
    if (RAND_bytes(seed.data(), int(seed.size())) != 1 || !secp256k1_context_randomize(c, seed.data()))
      throw std::runtime_error("cannot randomize the secp256k1 context");
    return c;
  }();
  return ctx;
}

Bytes32 random32() {
  Bytes32 b;
  if (RAND_bytes(b.data(), int(b.size())) != 1) throw std::runtime_error("RAND_bytes failed");
  return b;
}

bool is_lower_hex(std::string_view s, size_t len) {
  if (s.size() != len) return false;
  for (char c : s)
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  return true;
}

template <size_t N>
bool hex_bytes(std::string_view hex, std::array<uint8_t, N>& out) {
  return from_hex(hex, std::span<uint8_t>(out));
}

Bytes32 sha256(std::string_view text) {
  Bytes32 d;
  SHA256(reinterpret_cast<const unsigned char*>(text.data()), text.size(), d.data());
  return d;
}

std::string octal_mode(fs::perms p) {
  char buf[8];
  std::snprintf(buf, sizeof buf, "%04o", static_cast<unsigned>(p) & 07777);
  return buf;
}

}  // namespace

// ---- the event ----

nlohmann::json NostrEvent::to_json() const {
  return {{"id", id},   {"pubkey", pubkey}, {"created_at", created_at}, {"kind", kind},
          {"tags", tags}, {"content", content}, {"sig", sig}};
}

std::optional<std::string> NostrEvent::tag_value(std::string_view name) const {
  for (const auto& t : tags)
    if (t.size() >= 2 && t[0] == name) return t[1];
  return std::nullopt;
}

std::optional<NostrEvent> parse_event(const nlohmann::json& j, std::string* error) {
  auto fail = [&](const std::string& why) {
    if (error) *error = why;
    return false;
  };
  auto refuse = [&](const std::string& why) -> std::optional<NostrEvent> {
    fail(why);
    return std::nullopt;
  };
  if (!j.is_object()) return refuse("event: not a JSON object");
  NostrEvent e;
  auto hex_field = [&](const char* name, size_t len, std::string& out) -> bool {
    auto it = j.find(name);
    if (it == j.end()) return fail(std::string(name) + ": missing");
    if (!it->is_string()) return fail(std::string(name) + ": not a string");
    out = it->get<std::string>();
    if (!is_lower_hex(out, len))
      return fail(std::string(name) + ": not " + std::to_string(len) + " lower-case hex digits");
    return true;
  };
  if (!hex_field("id", 64, e.id) || !hex_field("pubkey", 64, e.pubkey) || !hex_field("sig", 128, e.sig))
    return std::nullopt;

  auto integer = [&](const char* name, int64_t max, int64_t& out) -> bool {
    auto it = j.find(name);
    if (it == j.end()) return fail(std::string(name) + ": missing");
    if (!it->is_number_integer()) return fail(std::string(name) + ": not an integer");
    if (it->is_number_unsigned() ? it->get<uint64_t>() > uint64_t(max) : it->get<int64_t>() < 0 || it->get<int64_t>() > max)
      return fail(std::string(name) + ": out of range 0.." + std::to_string(max));
    out = it->get<int64_t>();
    return true;
  };
  int64_t kind = 0;
  if (!integer("created_at", NostrLimits::kMaxCreatedAt, e.created_at) || !integer("kind", NostrLimits::kMaxKind, kind))
    return std::nullopt;
  e.kind = uint32_t(kind);

  auto content = j.find("content");
  if (content == j.end()) return refuse("content: missing");
  if (!content->is_string()) return refuse("content: not a string");
  e.content = content->get<std::string>();
  if (e.content.size() > NostrLimits::kMaxContentBytes)
    return refuse("content: " + std::to_string(e.content.size()) + " bytes, more than " +
                  std::to_string(NostrLimits::kMaxContentBytes));

  auto tags = j.find("tags");
  if (tags == j.end()) return refuse("tags: missing");
  if (!tags->is_array()) return refuse("tags: not an array");
  if (tags->size() > NostrLimits::kMaxTags)
    return refuse("tags: " + std::to_string(tags->size()) + " tags, more than " + std::to_string(NostrLimits::kMaxTags));
  e.tags.reserve(tags->size());
  for (size_t i = 0; i < tags->size(); ++i) {
    const auto& t = (*tags)[i];
    std::string where = "tags[" + std::to_string(i) + "]";
    if (!t.is_array()) return refuse(where + ": not an array");
    if (t.empty()) return refuse(where + ": empty");
    if (t.size() > NostrLimits::kMaxTagItems)
      return refuse(where + ": more than " + std::to_string(NostrLimits::kMaxTagItems) + " items");
    auto& tag = e.tags.emplace_back();
    for (const auto& item : t) {
      if (!item.is_string()) return refuse(where + ": an item is not a string");
      if (item.get_ref<const std::string&>().size() > NostrLimits::kMaxTagItemBytes)
        return refuse(where + ": an item is longer than " + std::to_string(NostrLimits::kMaxTagItemBytes) + " bytes");
      tag.push_back(item.get<std::string>());
    }
  }
  return e;
}

std::string serialize_for_id(const NostrEvent& e) {
  // nlohmann's compact dump with ensure_ascii off escapes exactly as JSON.stringify does: the
  // two-letter escapes \" \\ \b \f \n \r \t, \u00xx for the other controls, the rest verbatim.
  nlohmann::json a = nlohmann::json::array({0, e.pubkey, e.created_at, e.kind, e.tags, e.content});
  try {
    return a.dump(-1, ' ', false, nlohmann::json::error_handler_t::strict);
  } catch (const nlohmann::json::type_error&) {
    throw std::invalid_argument("nostr event: content or tags are not valid UTF-8");
  }
}

std::string compute_id(const NostrEvent& e) { return to_hex(sha256(serialize_for_id(e))); }

const char* event_check_name(EventCheck c) {
  switch (c) {
    case EventCheck::ok: return "ok";
    case EventCheck::malformed: return "malformed";
    case EventCheck::bad_id: return "bad_id";
    case EventCheck::bad_signature: return "bad_signature";
  }
  return "unknown";
}

bool schnorr_verify(std::string_view pubkey_hex, std::string_view msg32_hex, std::string_view sig_hex) {
  Bytes32 pub, msg;
  std::array<uint8_t, 64> sig;
  if (!hex_bytes(pubkey_hex, pub) || !hex_bytes(msg32_hex, msg) || !hex_bytes(sig_hex, sig)) return false;
  secp256k1_xonly_pubkey xonly;
  if (!secp256k1_xonly_pubkey_parse(context(), &xonly, pub.data())) return false;
  return secp256k1_schnorrsig_verify(context(), sig.data(), msg.data(), msg.size(), &xonly) == 1;
}

EventCheck verify_event(const NostrEvent& e) {
  if (!is_lower_hex(e.id, 64) || !is_lower_hex(e.pubkey, 64) || !is_lower_hex(e.sig, 128)) return EventCheck::malformed;
  std::string id;
  try {
    id = compute_id(e);
  } catch (const std::exception&) {
    return EventCheck::malformed;
  }
  if (id != e.id) return EventCheck::bad_id;
  return schnorr_verify(e.pubkey, e.id, e.sig) ? EventCheck::ok : EventCheck::bad_signature;
}

// ---- the key ----

NostrKey::NostrKey(const Bytes32& secret) : secret_(secret) {
  if (!secp256k1_ec_seckey_verify(context(), secret_.data()))
    throw std::invalid_argument("not a valid secp256k1 secret key (zero or not below the curve order)");
  secp256k1_keypair kp;
  secp256k1_xonly_pubkey xonly;
  if (!secp256k1_keypair_create(context(), &kp, secret_.data()) ||
      !secp256k1_keypair_xonly_pub(context(), &xonly, nullptr, &kp) ||
      !secp256k1_xonly_pubkey_serialize(context(), public_.data(), &xonly))
    throw std::invalid_argument("cannot derive the secp256k1 public key");
}

NostrKey NostrKey::generate() {
  for (;;) {
    Bytes32 s = random32();
    if (secp256k1_ec_seckey_verify(context(), s.data())) return NostrKey(s);
  }
}

NostrKey NostrKey::from_secret_hex(std::string_view hex) {
  Bytes32 s;
  if (!hex_bytes(hex, s)) throw std::invalid_argument("a nostr secret key is 64 hex digits");
  return NostrKey(s);
}

NostrKey NostrKey::load_or_create(const fs::path& file) {
  std::error_code ec;
  auto st = fs::status(file, ec);
  if (st.type() == fs::file_type::not_found) {
    NostrKey k = generate();
    try {
      write_private_file(file, k.secret_hex() + "\n");
    } catch (const PrivateFileError& e) {
      throw NostrKeyError(std::string("cannot write nostr key: ") + e.what());
    }
    return k;
  }
  const std::string name = file.string();
  if (ec) throw NostrKeyError("cannot read nostr key " + name + ": " + ec.message());
  if (!fs::is_regular_file(st)) throw NostrKeyError("nostr key " + name + " is not a regular file");
  auto perms = st.permissions();
  if ((perms & (fs::perms::group_all | fs::perms::others_all)) != fs::perms::none)
    throw NostrKeyError("permissions " + octal_mode(perms) + " for nostr key " + name +
                        " are too open: it must be accessible only by its owner (chmod 600 " + name + ")");
  std::ifstream in(file, std::ios::binary);
  if (!in) throw NostrKeyError("cannot open nostr key " + name);
  std::string text(200, '\0');
  in.read(text.data(), std::streamsize(text.size()));
  text.resize(size_t(in.gcount()));
  while (!text.empty() && (text.back() == '\n' || text.back() == '\r' || text.back() == ' ')) text.pop_back();
  try {
    return from_secret_hex(text);
  } catch (const std::invalid_argument& e) {
    throw NostrKeyError("nostr key " + name + " is damaged: " + e.what() +
                        " (move it away to create a new key; the node's nostr identity will change)");
  }
}

std::string NostrKey::public_hex() const { return to_hex(public_); }
std::string NostrKey::secret_hex() const { return to_hex(secret_); }

std::string NostrKey::sign_digest(std::string_view msg32_hex, std::string_view aux32_hex) const {
  Bytes32 msg, aux;
  if (!hex_bytes(msg32_hex, msg) || !hex_bytes(aux32_hex, aux))
    throw std::invalid_argument("BIP-340 signing takes a 32-byte message and 32 bytes of aux randomness, in hex");
  secp256k1_keypair kp;
  std::array<uint8_t, 64> sig;
  if (!secp256k1_keypair_create(context(), &kp, secret_.data()) ||
      !secp256k1_schnorrsig_sign32(context(), sig.data(), msg.data(), &kp, aux.data()))
    throw std::runtime_error("BIP-340 signing failed");
  return to_hex(sig);
}

void NostrKey::sign(NostrEvent& e) const {
  e.pubkey = public_hex();
  e.id = compute_id(e);
  e.sig = sign_digest(e.id, to_hex(random32()));
}

}  // namespace llmesh::mesh::discovery
