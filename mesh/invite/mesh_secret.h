// The mesh secret: what makes a mesh private. A mesh has a random 16-byte id and a random
// 32-byte secret with an epoch number; rotating the secret draws a new one and increments the
// epoch, so every token and admission proof made with the old secret stops working.
// Stored in $LLMESH_HOME/mesh.json (default ~/.llmesh/mesh.json), mode 0600, written atomically.
// Format and rotation: docs/invites.md.
#pragma once
#include <array>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>

namespace llmesh::invite {

class MeshSecretError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

using MeshId = std::array<uint8_t, 16>;
using SecretKey = std::array<uint8_t, 32>;
using NodeId = std::array<uint8_t, 32>;

struct MeshSecret {
  MeshId mesh_id{};
  SecretKey secret{};
  uint32_t epoch = 1;

  // A new mesh: random id, random secret, epoch 1.
  static MeshSecret create();
  // A new public mesh (docs/discovery.md): random id, and the secret everyone can derive from
  // the id (public_secret), epoch 1. Admission runs unchanged, so anyone who has the mesh id
  // from a listing gets in, while the proof still binds each connection to a node identity.
  static MeshSecret create_public();
  // The secret of the public mesh `id`: BLAKE2b-256 of "llmesh-public-mesh-v1" and the id.
  static SecretKey public_secret(const MeshId& id);
  // The public mesh with this id (what a listing's mesh id stands for).
  static MeshSecret public_mesh(const MeshId& id);
  // True when the secret is the one derived from the mesh id: a public mesh, whose secret is
  // no secret and may be published; any other mesh is private and its secret never is.
  bool is_public() const;
  // Draws a new secret and increments the epoch (same mesh id). Old tokens and proofs stop
  // working: peers still holding the old secret are refused with the stale-epoch reason.
  // Throws MeshSecretError for a public mesh: it has no secret to rotate.
  void rotate();

  std::string mesh_id_hex() const;
  // A short, non-secret fingerprint of (mesh id, secret, epoch) for logs and `llmesh status`:
  // 8 hex digits of a keyed hash; reveals nothing usable about the secret.
  std::string fingerprint() const;

  bool operator==(const MeshSecret&) const = default;
};

// $LLMESH_HOME if set and non-empty, else $HOME/.llmesh.
std::filesystem::path llmesh_home();
// llmesh_home() / "mesh.json".
std::filesystem::path default_mesh_secret_path();

// Writes atomically (temporary file in the same directory, fsync, rename, fsync of the
// directory) with mode 0600; creates the directory with mode 0700 if missing.
void save_mesh_secret(const MeshSecret& s, const std::filesystem::path& path);
// Reads and validates. Throws MeshSecretError naming the file and the problem: missing, not
// a regular file, readable or writable by group/others (with the chmod to fix it), bad JSON,
// wrong or missing fields, unsupported version.
MeshSecret load_mesh_secret(const std::filesystem::path& path);
// nullopt when the file does not exist; throws like load_mesh_secret otherwise.
std::optional<MeshSecret> try_load_mesh_secret(const std::filesystem::path& path);

// Lower-case hex, and its strict inverse (exact length, [0-9a-fA-F] only).
std::string to_hex(std::span<const uint8_t> bytes);
bool from_hex(std::string_view hex, std::span<uint8_t> out);

}  // namespace llmesh::invite
