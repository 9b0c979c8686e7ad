#include "invite/mesh_secret.h"

#include "identity/private_file.h"

#include <fcntl.h>
#include <sodium.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "invite/sodium_init.h"

namespace llmesh::invite {

namespace fs = std::filesystem;

void ensure_sodium() {
  static const int rc = sodium_init();
  if (rc < 0) throw std::runtime_error("libsodium failed to initialise");
}

MeshSecret MeshSecret::create() {
  ensure_sodium();
  MeshSecret s;
  randombytes_buf(s.mesh_id.data(), s.mesh_id.size());
  randombytes_buf(s.secret.data(), s.secret.size());
  s.epoch = 1;
  return s;
}

SecretKey MeshSecret::public_secret(const MeshId& id) {
  ensure_sodium();
  static const char kContext[] = "llmesh-public-mesh-v1";
  uint8_t msg[sizeof(kContext) - 1 + 16];
  std::memcpy(msg, kContext, sizeof(kContext) - 1);
  std::memcpy(msg + sizeof(kContext) - 1, id.data(), id.size());
  SecretKey out{};
  crypto_generichash(out.data(), out.size(), msg, sizeof(msg), nullptr, 0);
  return out;
}

MeshSecret MeshSecret::public_mesh(const MeshId& id) {
  MeshSecret s;
  s.mesh_id = id;
  s.secret = public_secret(id);
  s.epoch = 1;
  return s;
}

MeshSecret MeshSecret::create_public() {
  ensure_sodium();
  MeshId id;
  randombytes_buf(id.data(), id.size());
  return public_mesh(id);
}

bool MeshSecret::is_public() const { return secret == public_secret(mesh_id); }

void MeshSecret::rotate() {
  ensure_sodium();
  if (is_public())
    throw MeshSecretError("mesh " + mesh_id_hex().substr(0, 8) +
                          " is public: its secret is derived from its id, so there is nothing to rotate");
  if (epoch == UINT32_MAX) throw MeshSecretError("mesh secret epoch overflow; create a new mesh");
  randombytes_buf(secret.data(), secret.size());
  ++epoch;
}

std::string MeshSecret::mesh_id_hex() const { return to_hex(mesh_id); }

std::string MeshSecret::fingerprint() const {
  ensure_sodium();
  uint8_t msg[16 + 4];
  std::memcpy(msg, mesh_id.data(), 16);
  for (int i = 0; i < 4; ++i) msg[16 + i] = uint8_t(epoch >> (24 - 8 * i));
  uint8_t out[16];
  static const char kContext[] = "llmesh-fingerprint-v1";
  // BLAKE2b keyed by the secret over a context string, the mesh id and the epoch.
  crypto_generichash_state st;
  crypto_generichash_init(&st, secret.data(), secret.size(), sizeof out);
  crypto_generichash_update(&st, reinterpret_cast<const uint8_t*>(kContext), sizeof kContext - 1);
  crypto_generichash_update(&st, msg, sizeof msg);
  crypto_generichash_final(&st, out, sizeof out);
  return to_hex(std::span<const uint8_t>(out, 4));
}

std::string to_hex(std::span<const uint8_t> bytes) {
  static const char kDigits[] = "0123456789abcdef";
  std::string s;
  s.reserve(bytes.size() * 2);
  for (uint8_t b : bytes) {
    s.push_back(kDigits[b >> 4]);
    s.push_back(kDigits[b & 15]);
  }
  return s;
}

static int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

bool from_hex(std::string_view hex, std::span<uint8_t> out) {
  if (hex.size() != out.size() * 2) return false;
  for (size_t i = 0; i < out.size(); ++i) {
    int hi = hex_value(hex[2 * i]), lo = hex_value(hex[2 * i + 1]);
    if (hi < 0 || lo < 0) return false;
    out[i] = uint8_t(hi << 4 | lo);
  }
  return true;
}

fs::path llmesh_home() {
  if (const char* h = std::getenv("LLMESH_HOME"); h && *h) return fs::path(h);
  const char* home = std::getenv("HOME");
  if (!home || !*home) throw MeshSecretError("neither LLMESH_HOME nor HOME is set");
  return fs::path(home) / ".llmesh";
}

fs::path default_mesh_secret_path() { return llmesh_home() / "mesh.json"; }

static std::string errno_text() { return std::strerror(errno); }

void save_mesh_secret(const MeshSecret& s, const fs::path& path) {
  nlohmann::json j = {
      {"version", 1},
      {"mesh_id", to_hex(s.mesh_id)},
      {"secret", to_hex(s.secret)},
      {"epoch", s.epoch},
  };
  try {
    mesh::write_private_file(path, j.dump(2) + "\n");
  } catch (const mesh::PrivateFileError& e) {
    throw MeshSecretError(e.what());
  }
}

std::optional<MeshSecret> try_load_mesh_secret(const fs::path& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) {
    if (errno == ENOENT) return std::nullopt;
    throw MeshSecretError("cannot read " + path.string() + ": " + errno_text());
  }
  return load_mesh_secret(path);
}

MeshSecret load_mesh_secret(const fs::path& path) {
  const std::string where = path.string();
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0) {
    if (errno == ELOOP)
      throw MeshSecretError(where + " is a symbolic link; the mesh secret must be a regular file");
    throw MeshSecretError("cannot read mesh secret " + where + ": " + errno_text());
  }
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    std::string e = errno_text();
    ::close(fd);
    throw MeshSecretError("cannot read mesh secret " + where + ": " + e);
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    throw MeshSecretError(where + " is not a regular file");
  }
  if (st.st_mode & 077) {
    ::close(fd);
    char mode[8];
    std::snprintf(mode, sizeof mode, "%03o", unsigned(st.st_mode & 0777));
    throw MeshSecretError("refusing to use mesh secret " + where + ": it is accessible by group/others (mode " +
                          mode + "); it must be private to its owner: chmod 600 " + where);
  }
  if (st.st_size > 64 * 1024) {
    ::close(fd);
    throw MeshSecretError(where + " is too large to be a mesh secret file");
  }
  std::string text(size_t(st.st_size), '\0');
  size_t got = 0;
  while (got < text.size()) {
    ssize_t n = ::read(fd, text.data() + got, text.size() - got);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    got += size_t(n);
  }
  ::close(fd);
  text.resize(got);

  nlohmann::json j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) throw MeshSecretError(where + ": not a JSON object");
  auto field = [&](const char* k) -> const nlohmann::json& {
    auto it = j.find(k);
    if (it == j.end()) throw MeshSecretError(where + ": missing field \"" + k + "\"");
    return *it;
  };
  const auto& v = field("version");
  if (!v.is_number_unsigned()) throw MeshSecretError(where + ": \"version\" must be a number");
  if (v.get<uint64_t>() != 1)
    throw MeshSecretError(where + ": unsupported version " + v.dump() + " (this llmesh reads version 1)");
  MeshSecret s;
  const auto& id = field("mesh_id");
  if (!id.is_string() || !from_hex(id.get<std::string>(), s.mesh_id))
    throw MeshSecretError(where + ": \"mesh_id\" must be 32 hex digits");
  const auto& sec = field("secret");
  if (!sec.is_string() || !from_hex(sec.get<std::string>(), s.secret))
    throw MeshSecretError(where + ": \"secret\" must be 64 hex digits");
  const auto& ep = field("epoch");
  if (!ep.is_number_unsigned() || ep.get<uint64_t>() == 0 || ep.get<uint64_t>() > UINT32_MAX)
    throw MeshSecretError(where + ": \"epoch\" must be a number from 1 to 4294967295");
  s.epoch = uint32_t(ep.get<uint64_t>());
  return s;
}

}  // namespace llmesh::invite
