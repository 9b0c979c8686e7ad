// The package manifest: round trip, needed_for, and hostile manifests refused with an error
// naming the field.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "package/manifest.h"

namespace llmesh {
namespace {

using Json = nlohmann::json;

PackageManifest sample(int n_layer = 3, bool tied = false) {
  PackageManifest m;
  m.model_id = "tiny";
  m.architecture = "llama";
  m.n_layer = n_layer;
  m.n_embd = 64;
  m.n_vocab = 512;
  m.tied_embeddings = tied;
  m.source_sha256 = std::string(64, 'a');
  m.source_bytes = 1000;
  auto add = [&](std::string kind, int layer, std::string path) {
    Artifact a;
    a.kind = kind;
    a.layer = layer;
    a.path = path;
    a.bytes = 100 + m.artifacts.size();
    a.sha256 = std::string(63, '0') + static_cast<char>('a' + m.artifacts.size() % 6);
    m.artifacts.push_back(a);
  };
  add("metadata", -1, "metadata.gguf");
  add("embeddings", -1, "embeddings.gguf");
  for (int i = 0; i < n_layer; ++i) add("layer", i, "layers/blk." + std::to_string(i) + ".gguf");
  add("output", -1, "output.gguf");
  return m;
}

std::string error_of(const std::string& text) {
  try {
    parse_manifest(text);
  } catch (const std::runtime_error& e) {
    return e.what();
  }
  return "";
}

// Applies `edit` to the sample's JSON and returns parse_manifest's error ("" when accepted).
template <typename F>
std::string error_after(F edit) {
  Json j = Json::parse(to_json(sample()));
  edit(j);
  return error_of(j.dump());
}

TEST(PackageManifest, RoundTrip) {
  for (bool tied : {false, true}) {
    PackageManifest m = sample(4, tied);
    std::string text = to_json(m);
    PackageManifest r = parse_manifest(text);
    EXPECT_EQ(to_json(r), text);
    EXPECT_EQ(r.n_layer, 4);
    EXPECT_EQ(r.tied_embeddings, tied);
    ASSERT_EQ(r.artifacts.size(), 7u);
    EXPECT_EQ(r.artifacts[2].kind, "layer");
    EXPECT_EQ(r.artifacts[2].layer, 0);
    EXPECT_EQ(r.artifacts[0].layer, -1);
    EXPECT_EQ(r.total_bytes(), m.total_bytes());
  }
}

TEST(PackageManifest, NeededFor) {
  PackageManifest m = sample(4);
  auto names = [](const std::vector<const Artifact*>& v) {
    std::string s;
    for (auto* a : v) s += a->path + " ";
    return s;
  };
  EXPECT_EQ(names(m.needed_for(0, 2)), "metadata.gguf embeddings.gguf layers/blk.0.gguf layers/blk.1.gguf ");
  EXPECT_EQ(names(m.needed_for(2, 4)), "metadata.gguf layers/blk.2.gguf layers/blk.3.gguf output.gguf ");
  EXPECT_EQ(names(m.needed_for(1, 2)), "metadata.gguf layers/blk.1.gguf ");
  EXPECT_EQ(m.needed_for(0, -1).size(), 7u);
  // Tied embeddings: the head is the embedding table, so the last stage needs it too.
  PackageManifest t = sample(4, true);
  EXPECT_EQ(names(t.needed_for(3, 4)), "metadata.gguf embeddings.gguf layers/blk.3.gguf output.gguf ");
  EXPECT_THROW(m.needed_for(2, 2), std::invalid_argument);
  EXPECT_THROW(m.needed_for(-1, 2), std::invalid_argument);
  EXPECT_THROW(m.needed_for(0, 5), std::invalid_argument);
}

TEST(PackageManifest, SafePaths) {
  for (const char* ok : {"metadata.gguf", "layers/blk.0.gguf", "a/b/c/d-e_f.gguf", "..gguf"})
    EXPECT_TRUE(is_safe_relative_path(ok)) << ok;
  for (const char* bad : {"", "/abs.gguf", "../x", "a/../b", "./a", "a//b", "a/", "a\\b", "a b", "a/./b",
                          "C:x", "a/b/c/d/e/f/g/h/i", "\xc3\xa9.gguf"})
    EXPECT_FALSE(is_safe_relative_path(bad)) << bad;
  EXPECT_FALSE(is_safe_relative_path(std::string(256, 'a')));
}

TEST(PackageManifest, HostileManifestsAreRefusedNamingTheField) {
  struct Case {
    const char* field;  // expected in the message
    std::function<void(Json&)> edit;
  };
  std::vector<Case> cases = {
      {"artifacts[2].path", [](Json& j) { j["artifacts"][2]["path"] = "../x"; }},
      {"artifacts[2].path", [](Json& j) { j["artifacts"][2]["path"] = "/abs/blk.0.gguf"; }},
      {"artifacts[0].path", [](Json& j) { j["artifacts"][0]["path"] = "manifest.json"; }},
      {"artifacts[3].path", [](Json& j) { j["artifacts"][3]["path"] = "layers/blk.0.gguf"; }},
      {"artifacts[3].layer", [](Json& j) { j["artifacts"][3]["layer"] = 0; }},  // duplicate layer
      {"artifacts[3].layer", [](Json& j) { j["artifacts"][3]["layer"] = 3; }},  // out of range
      {"artifacts[3].layer", [](Json& j) { j["artifacts"][3]["layer"] = -1; }},
      {"artifacts[3].layer", [](Json& j) { j["artifacts"][3]["layer"] = "1"; }},
      {"artifacts[3].layer", [](Json& j) { j["artifacts"][3]["layer"] = 1.0; }},
      {"artifacts[3].layer", [](Json& j) { j["artifacts"][3].erase("layer"); }},
      {"artifacts[0].layer", [](Json& j) { j["artifacts"][0]["layer"] = 0; }},  // not for metadata
      {"artifacts", [](Json& j) { j["artifacts"].erase(3); }},                    // missing layer
      {"artifacts", [](Json& j) { j["artifacts"].push_back(j["artifacts"][3]); }},
      {"artifacts", [](Json& j) { j["artifacts"] = "none"; }},
      {"artifacts[1].kind", [](Json& j) { j["artifacts"][1]["kind"] = "metadata"; }},  // duplicate kind
      {"artifacts[1].kind", [](Json& j) { j["artifacts"][1]["kind"] = "weights"; }},
      {"artifacts[1].kind", [](Json& j) { j["artifacts"][1]["kind"] = 7; }},
      {"artifacts[1]", [](Json& j) { j["artifacts"][1] = 5; }},
      {"artifacts[1].bytes", [](Json& j) { j["artifacts"][1]["bytes"] = 1ull << 62; }},
      {"artifacts[1].bytes", [](Json& j) { j["artifacts"][1]["bytes"] = -5; }},
      {"artifacts[1].bytes", [](Json& j) { j["artifacts"][1]["bytes"] = 0; }},
      {"artifacts[1].bytes", [](Json& j) { j["artifacts"][1]["bytes"] = 1e30; }},
      {"artifacts[1].bytes", [](Json& j) { j["artifacts"][1]["bytes"] = "100"; }},
      {"artifacts[1].sha256", [](Json& j) { j["artifacts"][1]["sha256"] = std::string(64, 'A'); }},
      {"artifacts[1].sha256", [](Json& j) { j["artifacts"][1]["sha256"] = std::string(63, 'a'); }},
      {"artifacts[1].sha256", [](Json& j) { j["artifacts"][1]["sha256"] = std::string(64, 'g'); }},
      {"artifacts[1].sha256", [](Json& j) { j["artifacts"][1].erase("sha256"); }},
      {"artifacts[1].extra", [](Json& j) { j["artifacts"][1]["extra"] = 1; }},
      {"source_sha256", [](Json& j) { j["source_sha256"] = "xyz"; }},
      {"n_layer", [](Json& j) { j["n_layer"] = 1000000000; }},
      {"n_layer", [](Json& j) { j["n_layer"] = 0; }},
      {"n_layer", [](Json& j) { j["n_layer"] = "3"; }},
      {"n_layer", [](Json& j) { j.erase("n_layer"); }},
      {"n_embd", [](Json& j) { j["n_embd"] = 1ull << 40; }},
      {"n_vocab", [](Json& j) { j["n_vocab"] = -1; }},
      {"n_vocab", [](Json& j) { j["n_vocab"] = true; }},
      {"format_version", [](Json& j) { j["format_version"] = 2; }},
      {"model_id", [](Json& j) { j["model_id"] = ""; }},
      {"model_id", [](Json& j) { j["model_id"] = std::string(300, 'm'); }},
      {"model_id", [](Json& j) { j["model_id"] = "a\nb"; }},
      {"architecture", [](Json& j) { j["architecture"] = "Llama/../x"; }},
      {"tied_embeddings", [](Json& j) { j["tied_embeddings"] = 1; }},
      {"surprise", [](Json& j) { j["surprise"] = 1; }},
  };
  for (const auto& c : cases) {
    std::string err = error_after(c.edit);
    EXPECT_NE(err.find(std::string("'") + c.field + "'"), std::string::npos)
        << "expected an error naming '" << c.field << "', got: " << (err.empty() ? "(accepted)" : err);
  }
  EXPECT_EQ(error_after([](Json&) {}), "");
  EXPECT_NE(error_of("{").find("not valid JSON"), std::string::npos);
  EXPECT_NE(error_of("[1,2]").find("not a JSON object"), std::string::npos);
  EXPECT_NE(error_of(std::string(package_limits::kMaxManifestBytes + 1, ' ')).find("limit"), std::string::npos);
  // Deep nesting is just invalid (no unknown-field recursion), never a crash.
  EXPECT_FALSE(error_of(std::string(100000, '[') + std::string(100000, ']')).empty());
}

TEST(PackageManifest, Sha256) {
  EXPECT_EQ(sha256_hex("", 0), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(sha256_hex("abc", 3), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

}  // namespace
}  // namespace llmesh
