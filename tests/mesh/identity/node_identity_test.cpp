#include "identity/node_identity.h"

#include <gtest/gtest.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <sys/stat.h>

#include <cstdlib>
#include <fstream>
#include <unordered_set>

#include "temp_dir.h"

namespace fs = std::filesystem;
using namespace llmesh::mesh;

namespace {

using llmesh::test::TempDir;

unsigned mode_of(const fs::path& p) {
  struct stat st {};
  ::stat(p.c_str(), &st);
  return st.st_mode & 07777;
}

std::string error_of(const fs::path& file) {
  try {
    NodeIdentity::load(file);
  } catch (const IdentityError& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST(NodeId, HexRoundTripAndShortForm) {
  auto id = NodeIdentity::generate().id();
  std::string hex = id.hex();
  ASSERT_EQ(hex.size(), 64u);
  EXPECT_EQ(hex.find_first_not_of("0123456789abcdef"), std::string::npos);
  EXPECT_EQ(id.short_hex(), hex.substr(0, 12));
  auto back = NodeId::from_hex(hex);
  ASSERT_TRUE(back);
  EXPECT_EQ(*back, id);
  std::string upper = hex;
  for (auto& c : upper) c = static_cast<char>(std::toupper(c));
  EXPECT_EQ(NodeId::from_hex(upper), id);
}

TEST(NodeId, FromHexRejectsBadText) {
  EXPECT_FALSE(NodeId::from_hex(""));
  EXPECT_FALSE(NodeId::from_hex(std::string(63, 'a')));
  EXPECT_FALSE(NodeId::from_hex(std::string(65, 'a')));
  EXPECT_FALSE(NodeId::from_hex(std::string(63, 'a') + "g"));
  EXPECT_FALSE(NodeId::from_hex(std::string(62, 'a') + " a"));
  EXPECT_TRUE(NodeId::from_hex(std::string(64, '0')));
  std::vector<uint8_t> raw(31);
  EXPECT_FALSE(NodeId::from_bytes(raw));
  raw.push_back(7);
  ASSERT_TRUE(NodeId::from_bytes(raw));
  EXPECT_EQ(NodeId::from_bytes(raw)->bytes[31], 7);
}

TEST(NodeId, OrderedAndHashable) {
  std::unordered_set<NodeId> set;
  std::vector<NodeId> ids;
  for (int i = 0; i < 20; ++i) ids.push_back(NodeIdentity::generate().id());
  for (auto& id : ids) set.insert(id);
  EXPECT_EQ(set.size(), 20u);
  EXPECT_TRUE(ids[0] < ids[1] || ids[1] < ids[0]);
  EXPECT_TRUE(set.count(ids[5]));
}

TEST(NodeIdentity, GenerateGivesDistinctKeys) {
  EXPECT_NE(NodeIdentity::generate().id(), NodeIdentity::generate().id());
}

TEST(NodeIdentity, CreatesThenLoadsTheSameKeyWithPrivatePermissions) {
  TempDir tmp;
  fs::path home = tmp.path / "sub" / ".llmesh";
  auto a = NodeIdentity::load_or_create(home);
  EXPECT_EQ(mode_of(home), 0700u);
  EXPECT_EQ(mode_of(home / "identity.pem"), 0600u);
  auto b = NodeIdentity::load_or_create(home);
  EXPECT_EQ(a.id(), b.id());
  std::ifstream in(home / "identity.pem");
  std::string first;
  std::getline(in, first);
  EXPECT_EQ(first, "-----BEGIN PRIVATE KEY-----");  // PKCS#8
  // No temporary file is left behind.
  int n = 0;
  for (auto& e : fs::directory_iterator(home)) n += e.is_regular_file();
  EXPECT_EQ(n, 1);
}

TEST(NodeIdentity, RefusesAKeyReadableByOthers) {
  TempDir tmp;
  auto a = NodeIdentity::load_or_create(tmp.path);
  fs::path file = tmp.path / "identity.pem";
  ::chmod(file.c_str(), 0644);
  std::string err = error_of(file);
  EXPECT_NE(err.find("0644"), std::string::npos) << err;
  EXPECT_NE(err.find("too open"), std::string::npos) << err;
  EXPECT_THROW(NodeIdentity::load_or_create(tmp.path), IdentityError);
  ::chmod(file.c_str(), 0640);
  EXPECT_THROW(NodeIdentity::load(file), IdentityError);
  ::chmod(file.c_str(), 0600);
  EXPECT_EQ(NodeIdentity::load(file).id(), a.id());
  ::chmod(file.c_str(), 0400);
  EXPECT_EQ(NodeIdentity::load(file).id(), a.id());
}

TEST(NodeIdentity, CorruptOrForeignKeysAreClearErrors) {
  TempDir tmp;
  fs::path file = tmp.path / "identity.pem";
  auto write = [&](const std::string& text) {
    std::ofstream(file, std::ios::binary | std::ios::trunc) << text;
    ::chmod(file.c_str(), 0600);
  };
  write("");
  EXPECT_NE(error_of(file).find("corrupt"), std::string::npos);
  write("-----BEGIN PRIVATE KEY-----\nnot base64 at all!!\n-----END PRIVATE KEY-----\n");
  EXPECT_NE(error_of(file).find("corrupt"), std::string::npos);
  // A truncated copy of a real key.
  std::string pem = NodeIdentity::generate().private_key_pem();
  write(pem.substr(0, pem.size() / 2));
  EXPECT_NE(error_of(file).find("corrupt"), std::string::npos);
  // A valid key of another type.
  EVP_PKEY* ec = EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-256");
  ASSERT_TRUE(ec);
  BIO* bio = BIO_new(BIO_s_mem());
  PEM_write_bio_PrivateKey(bio, ec, nullptr, nullptr, 0, nullptr, nullptr);
  char* data = nullptr;
  long n = BIO_get_mem_data(bio, &data);
  write(std::string(data, static_cast<size_t>(n)));
  BIO_free(bio);
  EVP_PKEY_free(ec);
  EXPECT_NE(error_of(file).find("not an Ed25519"), std::string::npos) << error_of(file);
  // Missing file / directory in place of the file.
  EXPECT_NE(error_of(tmp.path / "nope.pem").find("no such file"), std::string::npos);
  fs::create_directory(tmp.path / "dir.pem");
  ::chmod((tmp.path / "dir.pem").c_str(), 0700);
  EXPECT_THROW(NodeIdentity::load(tmp.path / "dir.pem"), IdentityError);
  // load_or_create never overwrites a corrupt key with a new one.
  write("garbage");
  EXPECT_THROW(NodeIdentity::load_or_create(tmp.path), IdentityError);
  std::ifstream in(file);
  std::string still;
  std::getline(in, still);
  EXPECT_EQ(still, "garbage");
}

TEST(NodeIdentity, SaveAndLoadRoundTrip) {
  TempDir tmp;
  auto a = NodeIdentity::generate();
  a.save(tmp.path / "k.pem");
  EXPECT_EQ(mode_of(tmp.path / "k.pem"), 0600u);
  EXPECT_EQ(NodeIdentity::load(tmp.path / "k.pem").id(), a.id());
}

TEST(NodeIdentity, SignAndVerify) {
  auto a = NodeIdentity::generate();
  auto b = NodeIdentity::generate();
  std::vector<uint8_t> msg = {'h', 'e', 'l', 'l', 'o'};
  auto sig = a.sign(msg);
  ASSERT_EQ(sig.size(), 64u);
  EXPECT_TRUE(NodeIdentity::verify(a.id(), msg, sig));
  EXPECT_FALSE(NodeIdentity::verify(b.id(), msg, sig));
  auto tampered = msg;
  tampered[0] ^= 1;
  EXPECT_FALSE(NodeIdentity::verify(a.id(), tampered, sig));
  auto badsig = sig;
  badsig[10] ^= 0x80;
  EXPECT_FALSE(NodeIdentity::verify(a.id(), msg, badsig));
  EXPECT_FALSE(NodeIdentity::verify(a.id(), msg, std::span<const uint8_t>(sig).first(63)));
  EXPECT_FALSE(NodeIdentity::verify(a.id(), msg, {}));
  // Empty message signs too; a loaded key signs like the original.
  auto empty_sig = a.sign({});
  EXPECT_TRUE(NodeIdentity::verify(a.id(), {}, empty_sig));
}

TEST(NodeIdentity, DefaultHomeFollowsTheEnvironment) {
  const char* old = std::getenv("LLMESH_HOME");
  std::string saved = old ? old : "";
  ::setenv("LLMESH_HOME", "/tmp/somewhere-else", 1);
  EXPECT_EQ(default_home(), fs::path("/tmp/somewhere-else"));
  ::unsetenv("LLMESH_HOME");
  if (const char* home = std::getenv("HOME")) {
    EXPECT_EQ(default_home(), fs::path(home) / ".llmesh");
  }
  if (old) ::setenv("LLMESH_HOME", saved.c_str(), 1);
}
