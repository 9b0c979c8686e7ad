#include "identity/node_identity.h"

#include "identity/private_file.h"

#include <fcntl.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>

namespace llmesh::mesh {

namespace fs = std::filesystem;

namespace {

std::shared_ptr<EVP_PKEY> own(EVP_PKEY* k) { return std::shared_ptr<EVP_PKEY>(k, EVP_PKEY_free); }

// Never prompts for a passphrase: an encrypted key file is simply refused.
int no_passphrase(char*, int, int, void*) { return 0; }

std::string octal_mode(fs::perms p) {
  char buf[8];
  std::snprintf(buf, sizeof buf, "%04o", static_cast<unsigned>(p) & 07777);
  return buf;
}

}  // namespace

// ---- NodeId ----

std::string NodeId::hex() const {
  static const char* digits = "0123456789abcdef";
  std::string s(64, '0');
  for (size_t i = 0; i < 32; ++i) {
    s[2 * i] = digits[bytes[i] >> 4];
    s[2 * i + 1] = digits[bytes[i] & 15];
  }
  return s;
}

std::string NodeId::short_hex() const { return hex().substr(0, 12); }

std::optional<NodeId> NodeId::from_hex(std::string_view text) {
  if (text.size() != 64) return std::nullopt;
  auto nibble = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  NodeId id;
  for (size_t i = 0; i < 32; ++i) {
    int hi = nibble(text[2 * i]), lo = nibble(text[2 * i + 1]);
    if (hi < 0 || lo < 0) return std::nullopt;
    id.bytes[i] = static_cast<uint8_t>(hi << 4 | lo);
  }
  return id;
}

std::optional<NodeId> NodeId::from_bytes(std::span<const uint8_t> raw) {
  if (raw.size() != 32) return std::nullopt;
  NodeId id;
  std::memcpy(id.bytes.data(), raw.data(), 32);
  return id;
}

// ---- NodeIdentity ----

NodeIdentity::NodeIdentity(std::shared_ptr<EVP_PKEY> key) : key_(std::move(key)) {
  size_t len = id_.bytes.size();
  if (EVP_PKEY_get_raw_public_key(key_.get(), id_.bytes.data(), &len) != 1 || len != 32)
    throw IdentityError("cannot read the Ed25519 public key: " + openssl_error());
}

NodeIdentity NodeIdentity::generate() {
  EVP_PKEY* k = EVP_PKEY_Q_keygen(nullptr, nullptr, "ED25519");
  if (!k) throw IdentityError("cannot generate an Ed25519 key: " + openssl_error());
  return NodeIdentity(own(k));
}

NodeIdentity NodeIdentity::load(const fs::path& file) {
  std::error_code ec;
  auto st = fs::status(file, ec);
  if (st.type() == fs::file_type::not_found)
    throw IdentityError("cannot read node key " + file.string() + ": no such file");
  if (ec) throw IdentityError("cannot read node key " + file.string() + ": " + ec.message());
  if (!fs::is_regular_file(st)) throw IdentityError("node key " + file.string() + " is not a regular file");
  auto perms = st.permissions();
  if ((perms & (fs::perms::group_all | fs::perms::others_all)) != fs::perms::none)
    throw IdentityError("permissions " + octal_mode(perms) + " for node key " + file.string() +
                        " are too open: it must be accessible only by its owner (chmod 600 " +
                        file.string() + ")");
  std::ifstream in(file, std::ios::binary);
  if (!in) throw IdentityError("cannot open node key " + file.string() + ": " + std::strerror(errno));
  std::stringstream ss;
  ss << in.rdbuf();
  std::string pem = ss.str();
  if (pem.size() > 64 * 1024) throw IdentityError("node key " + file.string() + " is too large to be a key");

  BIO* bio = BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size()));
  if (!bio) throw IdentityError("out of memory reading " + file.string());
  EVP_PKEY* k = PEM_read_bio_PrivateKey(bio, nullptr, no_passphrase, nullptr);
  BIO_free(bio);
  if (!k) {
    ERR_clear_error();
    throw IdentityError("node key " + file.string() +
                        " is corrupt: not an unencrypted PEM private key (move it away to create a new "
                        "identity; the node id will change)");
  }
  auto key = own(k);
  if (EVP_PKEY_get_base_id(k) != EVP_PKEY_ED25519)
    throw IdentityError("node key " + file.string() + " is not an Ed25519 key");
  return NodeIdentity(std::move(key));
}

void NodeIdentity::save(const fs::path& file) const {
  try {
    write_private_file(file, private_key_pem());
  } catch (const PrivateFileError& e) {
    throw IdentityError(std::string("cannot write node key: ") + e.what());
  }
}

NodeIdentity NodeIdentity::load_or_create(const fs::path& dir) {
  std::error_code ec;
  if (!fs::exists(dir, ec)) {
    fs::create_directories(dir, ec);
    if (ec) throw IdentityError("cannot create " + dir.string() + ": " + ec.message());
    fs::permissions(dir, fs::perms::owner_all, fs::perm_options::replace, ec);
    if (ec) throw IdentityError("cannot set permissions of " + dir.string() + ": " + ec.message());
  } else if (!fs::is_directory(dir, ec)) {
    throw IdentityError(dir.string() + " is not a directory");
  }
  fs::path file = dir / kFileName;
  if (fs::exists(fs::symlink_status(file, ec)) || fs::exists(file, ec)) return load(file);
  NodeIdentity id = generate();
  id.save(file);
  return id;
}

std::string NodeIdentity::private_key_pem() const {
  BIO* bio = BIO_new(BIO_s_mem());
  if (!bio) throw IdentityError("out of memory");
  if (PEM_write_bio_PrivateKey(bio, key_.get(), nullptr, nullptr, 0, nullptr, nullptr) != 1) {
    BIO_free(bio);
    throw IdentityError("cannot encode the node key: " + openssl_error());
  }
  char* data = nullptr;
  long n = BIO_get_mem_data(bio, &data);
  std::string pem(data, static_cast<size_t>(n));
  BIO_free(bio);
  return pem;
}

std::vector<uint8_t> NodeIdentity::sign(std::span<const uint8_t> msg) const {
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  if (!ctx) throw IdentityError("out of memory");
  std::vector<uint8_t> sig(64);
  size_t len = sig.size();
  bool ok = EVP_DigestSignInit(ctx, nullptr, nullptr, nullptr, key_.get()) == 1 &&
            EVP_DigestSign(ctx, sig.data(), &len, msg.data(), msg.size()) == 1;
  EVP_MD_CTX_free(ctx);
  if (!ok) throw IdentityError("Ed25519 signing failed: " + openssl_error());
  sig.resize(len);
  return sig;
}

bool NodeIdentity::verify(const NodeId& signer, std::span<const uint8_t> msg, std::span<const uint8_t> sig) {
  if (sig.size() != 64) return false;
  EVP_PKEY* pub = EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, nullptr, signer.bytes.data(), 32);
  if (!pub) {
    ERR_clear_error();
    return false;
  }
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  bool ok = ctx && EVP_DigestVerifyInit(ctx, nullptr, nullptr, nullptr, pub) == 1 &&
            EVP_DigestVerify(ctx, sig.data(), sig.size(), msg.data(), msg.size()) == 1;
  EVP_MD_CTX_free(ctx);
  EVP_PKEY_free(pub);
  ERR_clear_error();
  return ok;
}

fs::path default_home() {
  if (const char* h = std::getenv("LLMESH_HOME"); h && *h) return fs::path(h);
  if (const char* home = std::getenv("HOME"); home && *home) return fs::path(home) / ".llmesh";
  return fs::path(".llmesh");
}

std::string openssl_error() {
  unsigned long e = ERR_get_error();
  ERR_clear_error();
  if (e == 0) return "unknown OpenSSL error";
  char buf[256];
  ERR_error_string_n(e, buf, sizeof buf);
  return buf;
}

}  // namespace llmesh::mesh
