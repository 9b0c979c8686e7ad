#include "invite/mesh_secret.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "temp_dir.h"

namespace fs = std::filesystem;
using namespace llmesh::invite;

namespace {

using llmesh::test::TempDir;

mode_t file_mode(const fs::path& p) {
  struct stat st {};
  ::stat(p.c_str(), &st);
  return st.st_mode & 0777;
}

void write_file(const fs::path& p, const std::string& text, mode_t mode) {
  std::ofstream(p) << text;
  ::chmod(p.c_str(), mode);
}

}  // namespace

TEST(MeshSecret, CreateIsRandom) {
  MeshSecret a = MeshSecret::create(), b = MeshSecret::create();
  EXPECT_NE(a.mesh_id, b.mesh_id);
  EXPECT_NE(a.secret, b.secret);
  EXPECT_EQ(a.epoch, 1u);
  EXPECT_EQ(a.mesh_id_hex().size(), 32u);
  EXPECT_EQ(a.fingerprint().size(), 8u);
  EXPECT_NE(a.fingerprint(), b.fingerprint());
}

TEST(MeshSecret, RotateKeepsIdChangesSecretBumpsEpoch) {
  MeshSecret a = MeshSecret::create();
  MeshSecret b = a;
  b.rotate();
  EXPECT_EQ(a.mesh_id, b.mesh_id);
  EXPECT_NE(a.secret, b.secret);
  EXPECT_EQ(b.epoch, a.epoch + 1);
  EXPECT_NE(a.fingerprint(), b.fingerprint());
}

TEST(MeshSecret, SaveLoadRoundTripWithMode0600) {
  TempDir t;
  fs::path p = t.path / "sub" / "mesh.json";
  MeshSecret a = MeshSecret::create();
  a.rotate();
  save_mesh_secret(a, p);
  EXPECT_EQ(file_mode(p), 0600u);
  EXPECT_EQ(file_mode(p.parent_path()), 0700u);
  EXPECT_EQ(load_mesh_secret(p), a);
  // Overwrite atomically: no temporary file is left behind.
  MeshSecret b = MeshSecret::create();
  save_mesh_secret(b, p);
  EXPECT_EQ(load_mesh_secret(p), b);
  int files = 0;
  for (auto& e : fs::directory_iterator(p.parent_path())) {
    (void)e;
    ++files;
  }
  EXPECT_EQ(files, 1);
}

TEST(MeshSecret, SaveIgnoresPermissiveUmask) {
  TempDir t;
  mode_t old = ::umask(0);
  save_mesh_secret(MeshSecret::create(), t.path / "mesh.json");
  ::umask(old);
  EXPECT_EQ(file_mode(t.path / "mesh.json"), 0600u);
}

TEST(MeshSecret, RefusesGroupOrOtherReadableFile) {
  TempDir t;
  fs::path p = t.path / "mesh.json";
  save_mesh_secret(MeshSecret::create(), p);
  for (mode_t m : {0640u, 0604u, 0660u, 0644u, 0620u}) {
    ::chmod(p.c_str(), m);
    try {
      load_mesh_secret(p);
      FAIL() << "mode " << std::oct << m << " accepted";
    } catch (const MeshSecretError& e) {
      std::string msg = e.what();
      EXPECT_NE(msg.find("chmod 600"), std::string::npos) << msg;
      EXPECT_NE(msg.find(p.string()), std::string::npos) << msg;
    }
  }
  ::chmod(p.c_str(), 0400);
  EXPECT_NO_THROW(load_mesh_secret(p));
}

TEST(MeshSecret, ClearErrorsForBadFiles) {
  TempDir t;
  fs::path p = t.path / "mesh.json";
  EXPECT_FALSE(try_load_mesh_secret(p).has_value());
  EXPECT_THROW(load_mesh_secret(p), MeshSecretError);

  auto expect_error = [&](const std::string& text, const std::string& needle) {
    write_file(p, text, 0600);
    try {
      load_mesh_secret(p);
      ADD_FAILURE() << "accepted: " << text;
    } catch (const MeshSecretError& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  expect_error("not json", "JSON");
  expect_error("[1,2]", "JSON object");
  expect_error(R"({"mesh_id":"00","secret":"00","epoch":1})", "version");
  expect_error(R"({"version":2,"mesh_id":"00","secret":"00","epoch":1})", "unsupported version");
  std::string id(32, 'a'), sec(64, 'b');
  expect_error(R"({"version":1,"mesh_id":"zz","secret":")" + sec + R"(","epoch":1})", "mesh_id");
  expect_error(R"({"version":1,"mesh_id":")" + id + R"(","secret":"abc","epoch":1})", "secret");
  expect_error(R"({"version":1,"mesh_id":")" + id + R"(","secret":")" + sec + R"(","epoch":0})", "epoch");
  expect_error(R"({"version":1,"mesh_id":")" + id + R"(","secret":")" + sec + R"(","epoch":"1"})", "epoch");
  write_file(p, R"({"version":1,"mesh_id":")" + id + R"(","secret":")" + sec + R"(","epoch":7,"extra":true})", 0600);
  MeshSecret s = load_mesh_secret(p);
  EXPECT_EQ(s.epoch, 7u);
  EXPECT_EQ(s.mesh_id_hex(), id);
}

TEST(MeshSecret, RefusesSymlink) {
  TempDir t;
  save_mesh_secret(MeshSecret::create(), t.path / "real.json");
  fs::create_symlink(t.path / "real.json", t.path / "mesh.json");
  EXPECT_THROW(load_mesh_secret(t.path / "mesh.json"), MeshSecretError);
}

TEST(MeshSecret, HomeFromEnvironment) {
  const char* old = std::getenv("LLMESH_HOME");
  std::string saved = old ? old : "";
  const char* old_home = std::getenv("HOME");
  std::string saved_home = old_home ? old_home : "";
  ::setenv("LLMESH_HOME", "/tmp/some-llmesh-home", 1);
  EXPECT_EQ(default_mesh_secret_path(), fs::path("/tmp/some-llmesh-home/mesh.json"));
  ::setenv("LLMESH_HOME", "", 1);
  ::setenv("HOME", "/home/someone", 1);
  EXPECT_EQ(llmesh_home(), fs::path("/home/someone/.llmesh"));
  if (old) ::setenv("LLMESH_HOME", saved.c_str(), 1);
  else ::unsetenv("LLMESH_HOME");
  if (old_home) ::setenv("HOME", saved_home.c_str(), 1);
}

TEST(Hex, RoundTripAndStrictness) {
  std::array<uint8_t, 4> b{0x00, 0xab, 0x7f, 0xff}, out{};
  EXPECT_EQ(to_hex(b), "00ab7fff");
  EXPECT_TRUE(from_hex("00AB7fff", out));
  EXPECT_EQ(out, b);
  EXPECT_FALSE(from_hex("00ab7ff", out));
  EXPECT_FALSE(from_hex("00ab7fffaa", out));
  EXPECT_FALSE(from_hex("00ab7fgf", out));
}
