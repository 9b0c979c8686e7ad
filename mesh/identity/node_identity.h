// A node's identity: an Ed25519 key pair kept at $LLMESH_HOME/identity.pem (PKCS#8 PEM, mode
// 0600, in a 0700 directory). The node id is the 32-byte raw public key; its text form is
// lowercase hex. The key signs the node's self-signed TLS certificate (transport/) and, where
// other layers need it, their own messages.
#pragma once
#include <array>
#include <compare>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

// OpenSSL's key type, kept out of this header.
typedef struct evp_pkey_st EVP_PKEY;

namespace llmesh::mesh {

struct NodeId {
  std::array<uint8_t, 32> bytes{};

  std::string hex() const;        // 64 lowercase hex chars
  std::string short_hex() const;  // first 12 hex chars, for logs and tables
  // Accepts exactly 64 hex digits (either case); anything else is nullopt.
  static std::optional<NodeId> from_hex(std::string_view text);
  static std::optional<NodeId> from_bytes(std::span<const uint8_t> raw);  // exactly 32 bytes

  auto operator<=>(const NodeId&) const = default;
  bool operator==(const NodeId&) const = default;
};

// A key file that cannot be used: missing pieces, wrong permissions, not an Ed25519 key.
// The message names the file and says what to do.
class IdentityError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

class NodeIdentity {
 public:
  // A fresh key pair (not stored).
  static NodeIdentity generate();
  // Loads dir/identity.pem, or creates it (and dir, mode 0700) when it does not exist.
  // Throws IdentityError when the file exists but is unreadable, corrupt, not Ed25519, or
  // readable by group/other (like ssh, such a key is refused rather than silently used).
  static NodeIdentity load_or_create(const std::filesystem::path& dir);
  // Loads one key file, with the same checks.
  static NodeIdentity load(const std::filesystem::path& file);
  // Writes the key (PKCS#8 PEM, 0600) atomically: a temporary file renamed over `file`.
  void save(const std::filesystem::path& file) const;

  static constexpr const char* kFileName = "identity.pem";

  const NodeId& id() const { return id_; }
  // An Ed25519 signature (64 bytes) of msg.
  std::vector<uint8_t> sign(std::span<const uint8_t> msg) const;
  static bool verify(const NodeId& signer, std::span<const uint8_t> msg, std::span<const uint8_t> sig);

  // The OpenSSL key, for the TLS certificate (owned by this object; valid while it lives).
  EVP_PKEY* pkey() const { return key_.get(); }
  std::string private_key_pem() const;

 private:
  explicit NodeIdentity(std::shared_ptr<EVP_PKEY> key);
  std::shared_ptr<EVP_PKEY> key_;
  NodeId id_;
};

// $LLMESH_HOME, else $HOME/.llmesh (else ./.llmesh when HOME is unset).
std::filesystem::path default_home();

// The oldest queued OpenSSL error as text (and the queue cleared): for error messages.
std::string openssl_error();

}  // namespace llmesh::mesh

template <>
struct std::hash<llmesh::mesh::NodeId> {
  size_t operator()(const llmesh::mesh::NodeId& id) const noexcept {
    // The id is a public key: its bytes are already uniformly distributed.
    size_t h = 0;
    for (size_t i = 0; i < sizeof(size_t); ++i) h = (h << 8) | id.bytes[i];
    return h;
  }
};
