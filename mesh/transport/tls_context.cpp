#include "transport/tls_context.h"

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include <cstring>
#include <memory>
#include <stdexcept>

namespace llmesh::mesh {

namespace ssl = boost::asio::ssl;

namespace {


struct X509Free {
  void operator()(X509* x) const { X509_free(x); }
};

// A fresh self-signed certificate for the node key. It lives as long as the process (a new one
// is made at every start), so its validity only needs to be generous, not meaningful: peers
// check the key and the self-signature, not the dates (see docs/protocol.md).
std::unique_ptr<X509, X509Free> self_signed_certificate(const NodeIdentity& identity) {
  std::unique_ptr<X509, X509Free> x(X509_new());
  if (!x) throw std::runtime_error("out of memory creating the TLS certificate");
  uint8_t serial[8];
  if (RAND_bytes(serial, sizeof serial) != 1) throw std::runtime_error("RAND_bytes failed");
  serial[0] &= 0x7F;  // a positive serial
  BIGNUM* bn = BN_bin2bn(serial, sizeof serial, nullptr);
  ASN1_INTEGER* sn = bn ? BN_to_ASN1_INTEGER(bn, nullptr) : nullptr;
  BN_free(bn);
  bool ok = sn && X509_set_version(x.get(), 2) == 1 && X509_set_serialNumber(x.get(), sn) == 1;
  ASN1_INTEGER_free(sn);
  ok = ok && X509_gmtime_adj(X509_getm_notBefore(x.get()), -24 * 3600) != nullptr &&
       X509_gmtime_adj(X509_getm_notAfter(x.get()), 10L * 365 * 24 * 3600) != nullptr;
  X509_NAME* name = X509_get_subject_name(x.get());
  std::string cn = identity.id().hex();  // CN is at most 64 characters
  ok = ok && X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                                        reinterpret_cast<const unsigned char*>(cn.c_str()), -1, -1, 0) == 1;
  ok = ok && X509_set_issuer_name(x.get(), name) == 1 && X509_set_pubkey(x.get(), identity.pkey()) == 1;
  // Ed25519 signs the whole message: no digest.
  ok = ok && X509_sign(x.get(), identity.pkey(), nullptr) > 0;
  if (!ok) throw std::runtime_error("cannot create the TLS certificate: " + openssl_error());
  return x;
}

}  // namespace

ssl::context make_tls_context(const NodeIdentity& identity) {
  ssl::context ctx(ssl::context::tls);
  SSL_CTX* native = ctx.native_handle();
  if (SSL_CTX_set_min_proto_version(native, TLS1_3_VERSION) != 1 ||
      SSL_CTX_set_max_proto_version(native, TLS1_3_VERSION) != 1)
    throw std::runtime_error("this OpenSSL cannot restrict TLS to version 1.3: " + openssl_error());
  SSL_CTX_set_ciphersuites(native, "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256");
  SSL_CTX_set_options(native, SSL_OP_NO_TICKET | SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION);
  SSL_CTX_set_session_cache_mode(native, SSL_SESS_CACHE_OFF);  // every connection authenticates afresh
  SSL_CTX_set_num_tickets(native, 0);
  auto cert = self_signed_certificate(identity);
  if (SSL_CTX_use_certificate(native, cert.get()) != 1 || SSL_CTX_use_PrivateKey(native, identity.pkey()) != 1 ||
      SSL_CTX_check_private_key(native) != 1)
    throw std::runtime_error("cannot install the node certificate: " + openssl_error());
  // Both sides require the other's certificate; the per-connection callback decides.
  ctx.set_verify_mode(ssl::verify_peer | ssl::verify_fail_if_no_peer_cert);
  return ctx;
}

std::optional<NodeId> node_id_from_certificate(X509* cert, std::string* why) {
  if (!cert) {
    *why = "no certificate";
    return std::nullopt;
  }
  EVP_PKEY* key = X509_get0_pubkey(cert);
  if (!key || EVP_PKEY_get_base_id(key) != EVP_PKEY_ED25519) {
    *why = "certificate key is not Ed25519";
    ERR_clear_error();
    return std::nullopt;
  }
  if (X509_verify(cert, key) != 1) {
    *why = "certificate is not self-signed by its key";
    ERR_clear_error();
    return std::nullopt;
  }
  NodeId id;
  size_t len = id.bytes.size();
  if (EVP_PKEY_get_raw_public_key(key, id.bytes.data(), &len) != 1 || len != 32) {
    *why = "cannot read the certificate's public key";
    ERR_clear_error();
    return std::nullopt;
  }
  return id;
}

void set_peer_verification(ssl::stream<boost::asio::ip::tcp::socket>& stream, std::optional<NodeId> expected,
                           std::shared_ptr<std::string> failure) {
  stream.set_verify_callback([expected, failure](bool /*preverified*/, ssl::verify_context& vctx) {
    X509_STORE_CTX* store = vctx.native_handle();
    // Self-signed certificates never chain to a trusted root: OpenSSL's own verdict is
    // ignored and replaced by the llmesh rules.
    if (X509_STORE_CTX_get_error_depth(store) != 0) {
      *failure = "peer sent a certificate chain; exactly one self-signed certificate is allowed";
      return false;
    }
    STACK_OF(X509)* sent = X509_STORE_CTX_get0_untrusted(store);
    if (sent && sk_X509_num(sent) > 1) {
      *failure = "peer sent " + std::to_string(sk_X509_num(sent)) + " certificates; exactly one is allowed";
      return false;
    }
    std::string why;
    auto id = node_id_from_certificate(X509_STORE_CTX_get_current_cert(store), &why);
    if (!id) {
      *failure = "peer certificate refused: " + why;
      return false;
    }
    if (expected && *id != *expected) {
      *failure = "peer is " + id->short_hex() + ", expected " + expected->short_hex() + " (pinned node id)";
      return false;
    }
    X509_STORE_CTX_set_error(store, X509_V_OK);
    return true;
  });
}

std::optional<NodeId> peer_node_id(SSL* ssl) {
  X509* cert = SSL_get0_peer_certificate(ssl);
  std::string why;
  return node_id_from_certificate(cert, &why);
}

std::array<uint8_t, 32> export_channel_binding(SSL* ssl) {
  static const char label[] = "EXPORTER-llmesh-admission";
  std::array<uint8_t, 32> out{};
  if (SSL_export_keying_material(ssl, out.data(), out.size(), label, std::strlen(label), nullptr, 0, 0) != 1)
    throw std::runtime_error("TLS exporter failed: " + openssl_error());
  return out;
}

}  // namespace llmesh::mesh
