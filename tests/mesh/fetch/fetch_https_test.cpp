// https:// through HttpSource (cpp-httplib built with CPPHTTPLIB_OPENSSL_SUPPORT): a local
// httplib::SSLServer with a self-signed certificate made here for 127.0.0.1 and localhost.
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <stdlib.h>

#include <gtest/gtest.h>

#include "fetch/artifact_cache.h"
#include "fetch_fixture.h"

namespace llmesh::mesh {
namespace {

namespace fs = std::filesystem;
using test::TempDir;

// Writes cert.pem and key.pem (a self-signed P-256 certificate for 127.0.0.1 and localhost).
void make_certificate(const fs::path& dir) {
  EVP_PKEY* key = EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-256");
  ASSERT_NE(key, nullptr);
  X509* x = X509_new();
  X509_set_version(x, 2);
  ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
  X509_gmtime_adj(X509_getm_notBefore(x), -3600);
  X509_gmtime_adj(X509_getm_notAfter(x), 3600);
  X509_set_pubkey(x, key);
  X509_NAME* name = X509_get_subject_name(x);
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                             reinterpret_cast<const unsigned char*>("127.0.0.1"), -1, -1, 0);
  X509_set_issuer_name(x, name);
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, x, x, nullptr, nullptr, 0);
  for (auto [nid, value] : {std::pair{NID_subject_alt_name, "IP:127.0.0.1,DNS:localhost"},
                            std::pair{NID_basic_constraints, "critical,CA:TRUE"}}) {
    X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, &ctx, nid, value);
    ASSERT_NE(ext, nullptr);
    X509_add_ext(x, ext, -1);
    X509_EXTENSION_free(ext);
  }
  ASSERT_GT(X509_sign(x, key, EVP_sha256()), 0);
  FILE* f = fopen((dir / "cert.pem").c_str(), "w");
  PEM_write_X509(f, x);
  fclose(f);
  f = fopen((dir / "key.pem").c_str(), "w");
  PEM_write_PrivateKey(f, key, nullptr, nullptr, 0, nullptr, nullptr);
  fclose(f);
  X509_free(x);
  EVP_PKEY_free(key);
}

class HttpsServer : public test::FileServerT<httplib::SSLServer> {
 public:
  explicit HttpsServer(const fs::path& dir)
      : FileServerT((dir / "cert.pem").c_str(), (dir / "key.pem").c_str()) {}
};

TEST(FetchHttps, SelfSignedServerWithItsCertificate) {
  TempDir tmp;
  make_certificate(tmp.path);
  HttpsServer server(tmp.path);
  auto content = test::random_bytes(300000, 21);
  server.files["a.bin"] = content;
  ArtifactRef ref{"a.bin", content.size(), sha256_hex(content)};
  ArtifactCacheOptions o;
  o.retry_delay = std::chrono::milliseconds(0);

  // Trusting the test's certificate, with a resume and a token for the base URL's host only.
  HttpSourceOptions ho;
  ho.ca_cert_file = (tmp.path / "cert.pem").string();
  ho.bearer_token = "hf_test";
  test::write_all(tmp.path / "cache" / "m" / "a.bin.part", content.substr(0, 100000));
  HttpSource src(server.url("files", "https"), ho);
  ArtifactCache cache("m", tmp.path / "cache", o);
  EXPECT_EQ(test::read_all(cache.ensure(ref, src)), content);
  EXPECT_EQ(server.served.load(), 200000u);
  {
    std::lock_guard<std::mutex> lock(server.mu);
    ASSERT_EQ(server.authorization.size(), 1u);
    EXPECT_EQ(server.authorization[0], "Bearer hf_test");
    server.authorization.clear();
  }

  // A redirect to another origin (localhost instead of 127.0.0.1) does not carry the token.
  server.redirect_origin = "https://localhost:" + std::to_string(server.port());
  HttpSource redir(server.url("redir-abs", "https"), ho);
  ArtifactCache cache2("m2", tmp.path / "cache", o);
  EXPECT_EQ(test::read_all(cache2.ensure(ref, redir)), content);
  {
    std::lock_guard<std::mutex> lock(server.mu);
    ASSERT_EQ(server.authorization.size(), 1u);  // /redir-abs/ itself records nothing
    EXPECT_EQ(server.authorization[0], "");
  }

  // https -> http is refused.
  server.redirect_origin = "http://127.0.0.1:1";
  ArtifactCache cache3("m3", tmp.path / "cache", o);
  try {
    cache3.ensure(ref, redir);
    ADD_FAILURE() << "no error";
  } catch (const FetchError& e) {
    EXPECT_NE(std::string(e.what()).find("refusing a redirect from https to http"),
              std::string::npos) << e.what();
  }

  // With the system's trust store the self-signed certificate is refused, not retried.
  HttpSourceOptions plain;
  plain.token_from_env = false;
  HttpSource untrusted(server.url("files", "https"), plain);
  ArtifactCache cache4("m4", tmp.path / "cache", o);
  try {
    cache4.ensure(ref, untrusted);
    ADD_FAILURE() << "no error";
  } catch (const FetchError& e) {
    EXPECT_FALSE(e.transient());
    EXPECT_NE(std::string(e.what()).find("not trusted"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace llmesh::mesh
