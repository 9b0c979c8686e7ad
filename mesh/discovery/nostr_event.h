// Nostr events (NIP-01) signed with BIP-340 Schnorr signatures over secp256k1: the signed
// records that mesh listings travel in (docs/nostr.md). An event's id is the sha256 of a fixed
// JSON serialization of its fields; its signature signs that id with the author's x-only key.
// Everything read from a relay is untrusted: parse_event bounds and type-checks it, and
// verify_event recomputes the id and checks the signature.
#pragma once
#include <array>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

namespace llmesh::mesh::discovery {

struct NostrEvent {
  std::string id;      // 64 lower-case hex: sha256 of serialize_for_id
  std::string pubkey;  // 64 lower-case hex: the author's x-only public key
  int64_t created_at = 0;
  uint32_t kind = 0;
  std::vector<std::vector<std::string>> tags;
  std::string content;
  std::string sig;  // 128 lower-case hex: BIP-340 signature of the id

  nlohmann::json to_json() const;
  // The first value of the first tag named `name` (e.g. "d", "expiration"), if any.
  std::optional<std::string> tag_value(std::string_view name) const;
};

// Bounds on an event read from a relay (parse_event refuses anything beyond them).
struct NostrLimits {
  static constexpr size_t kMaxContentBytes = 64 * 1024;
  static constexpr size_t kMaxTags = 200;
  static constexpr size_t kMaxTagItems = 16;
  static constexpr size_t kMaxTagItemBytes = 1024;
  static constexpr int64_t kMaxCreatedAt = int64_t{1} << 40;
  static constexpr uint32_t kMaxKind = 65535;
};

// Untrusted JSON from a relay: checks every field's type, lower-case hex of the right length,
// and the bounds above. Extra fields are ignored. On refusal: nullopt and *error (when given)
// names the field and the problem, e.g. "tags[3]: more than 16 items".
std::optional<NostrEvent> parse_event(const nlohmann::json& j, std::string* error = nullptr);

// NIP-01: the UTF-8 JSON text of [0,pubkey,created_at,kind,tags,content] with no whitespace.
// Strings are escaped as JSON.stringify does (what nostr-tools and most clients hash): the
// two-character escapes for quote, backslash, \b \f \n \r \t; other characters below U+0020
// as \u00xx (lower-case hex); everything else (U+007F, U+2028, all non-ASCII) verbatim as UTF-8.
// Throws std::invalid_argument when the content or a tag is not valid UTF-8.
std::string serialize_for_id(const NostrEvent& e);
// Lower-case hex sha256 of serialize_for_id(e). Throws like serialize_for_id.
std::string compute_id(const NostrEvent& e);

enum class EventCheck : uint8_t { ok, malformed, bad_id, bad_signature };
const char* event_check_name(EventCheck c);  // "ok", "malformed", "bad_id", "bad_signature"

// Recomputes the id and checks the BIP-340 signature. malformed: a hex field of the wrong
// length or case, or text that is not UTF-8. Never throws.
EventCheck verify_event(const NostrEvent& e);

// BIP-340 verification of a signature over a 32-byte message (all hex, either case): false for
// anything malformed (wrong lengths, a public key not on the curve). Never throws.
bool schnorr_verify(std::string_view pubkey_hex, std::string_view msg32_hex, std::string_view sig_hex);

// A nostr key file that cannot be used; the message names the file and what to do.
class NostrKeyError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// A secp256k1 key pair (BIP-340). Copies share nothing mutable; signing is thread-safe.
class NostrKey {
 public:
  static NostrKey generate();
  // 64 hex digits (either case) of a valid secret key; throws std::invalid_argument otherwise.
  static NostrKey from_secret_hex(std::string_view hex);
  // A 0600 file holding the secret key as 64 lower-case hex digits and a newline, written
  // atomically (identity/private_file.h) and created, with its 0700 directory, when missing.
  // Throws NostrKeyError when it exists but is not a regular file, is accessible by group or
  // others, or does not hold a valid key.
  static NostrKey load_or_create(const std::filesystem::path& file);

  std::string public_hex() const;  // 64 lower-case hex: the x-only public key
  std::string secret_hex() const;  // 64 lower-case hex (what the key file holds)

  // Fills pubkey, id and sig (created_at, kind, tags, content must be set). Uses fresh aux
  // randomness. Throws std::invalid_argument on text that is not UTF-8.
  void sign(NostrEvent& e) const;
  // BIP-340 signature (128 hex) of a 32-byte message with the given 32-byte aux randomness
  // (hex): deterministic, for the BIP-340 test vectors. Throws std::invalid_argument on bad hex.
  std::string sign_digest(std::string_view msg32_hex, std::string_view aux32_hex) const;

 private:
  explicit NostrKey(const std::array<uint8_t, 32>& secret);
  std::array<uint8_t, 32> secret_{};
  std::array<uint8_t, 32> public_{};  // x-only
};

}  // namespace llmesh::mesh::discovery
