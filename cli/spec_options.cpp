#include "cli/spec_options.h"

#include <filesystem>
#include <stdexcept>

#include <fmt/format.h>

#include "fetch/fetch_progress.h"
#include "fetch/gguf_ranges.h"
#include "fetch/package_fetch.h"
#include "speculative/model_draft.h"
#include "speculative/ngram_draft.h"

namespace llmesh::cli {

void add_spec_options(CLI::App* sub, SpecCliOptions& o) {
  sub->add_option("--draft", o.draft,
                  "Speculative decoding with this draft model: a GGUF file (or http(s) URL of one) sharing the "
                  "model's vocabulary, run on this node")
      ->group("Speculative decoding");
  sub->add_option("--spec", o.spec, "Proposer: draft (needs --draft), ngram (prompt lookup, no model) or off")
      ->check(CLI::IsMember({"draft", "ngram", "off"}))
      ->group("Speculative decoding");
  sub->add_option("--draft-max", o.draft_max, "Longest drafted window; the window adapts to acceptance and cost")
      ->check(CLI::Range(1, 64))
      ->capture_default_str()
      ->group("Speculative decoding");
  sub->add_flag("--draft-fixed", o.draft_fixed, "Always draft --draft-max tokens (no adaptation)")
      ->group("Speculative decoding");
  sub->add_option("--draft-p-min", o.draft_p_min,
                  "Greedy requests: end a window when the draft's top token has less probability (0: never)")
      ->check(CLI::Range(0.0f, 0.99f))
      ->capture_default_str()
      ->group("Speculative decoding");
  sub->add_option("--spec-ngram", o.ngram, "N-gram sizes prompt lookup tries, longest first (A..B)")
      ->capture_default_str()
      ->group("Speculative decoding");
}

namespace {

NgramOptions parse_ngram(const std::string& s) {
  NgramOptions o;
  const auto dots = s.find("..");
  auto whole_int = [](const std::string& t) {
    size_t used = 0;
    const int v = std::stoi(t, &used);
    if (used != t.size()) throw std::invalid_argument(t);
    return v;
  };
  try {
    if (dots == std::string::npos) {
      o.n_min = o.n_max = whole_int(s);
    } else {
      o.n_min = whole_int(s.substr(0, dots));
      o.n_max = whole_int(s.substr(dots + 2));
    }
  } catch (const std::exception&) {
    throw std::invalid_argument(fmt::format("--spec-ngram '{}': expected N or A..B, e.g. 2..4", s));
  }
  if (o.n_min < 1 || o.n_max < o.n_min || o.n_max > 16)
    throw std::invalid_argument(fmt::format("--spec-ngram '{}': sizes must satisfy 1 <= A <= B <= 16", s));
  return o;
}

std::shared_ptr<const Model> load_draft(const SpecCliOptions& o) {
  if (mesh::is_gguf_url(o.draft)) {
    mesh::PackageFetchOptions fo;
    fo.cache_root = o.fetch_cache;
    fo.progress = mesh::stderr_progress();
    return Model::load(mesh::fetch_gguf_layers(o.draft, {}, fo).path.string());
  }
  if (mesh::is_url(o.draft)) throw std::invalid_argument("--draft takes a GGUF file or the URL of one, got " + o.draft);
  if (!std::filesystem::is_regular_file(o.draft)) throw std::invalid_argument("--draft: no such file: " + o.draft);
  try {
    return Model::load(o.draft);
  } catch (const std::exception& e) {
    throw std::invalid_argument(fmt::format("--draft: cannot load the draft model: {}", e.what()));
  }
}

}  // namespace

SpecSetup make_spec(const SpecCliOptions& o, const Model& target, ThreadPool* pool, int n_threads, int n_slots,
                    int n_ctx) {
  SpecSetup s;
  const NgramOptions ngram = parse_ngram(o.ngram);  // a bad value is an error even when unused
  if (o.spec == "draft" && o.draft.empty()) throw std::invalid_argument("--spec draft needs --draft MODEL");
  if (o.spec == "ngram" && !o.draft.empty())
    throw std::invalid_argument("--spec ngram and --draft exclude each other: pick one proposer");
  if (!o.enabled()) return s;
  s.window.draft_max = o.draft_max;
  s.window.adaptive = !o.draft_fixed;
  const std::string how = fmt::format("window up to {}{}", o.draft_max, o.draft_fixed ? ", fixed" : ", adaptive");
  if (o.spec == "ngram") {
    s.source = std::make_unique<NgramDraft>(ngram);
    s.description = fmt::format("n-gram lookup {}..{} ({})", ngram.n_min, ngram.n_max, how);
    return s;
  }
  std::shared_ptr<const Model> d = load_draft(o);
  const std::string label = std::filesystem::path(o.draft).filename().string();
  check_same_vocabulary(target.file(), target.config().n_vocab, d->file(), d->config().n_vocab, label);
  if (!pool) {
    s.own_pool = std::make_shared<ThreadPool>(n_threads);
    pool = s.own_pool.get();
  }
  ModelDraftOptions mo;
  mo.n_slots = n_slots;
  mo.n_ctx = n_ctx;
  mo.p_min = o.draft_p_min;
  auto md = std::make_unique<ModelDraft>(d, label, *pool, mo);
  s.description = fmt::format("draft {} ({} layers, KV {}, {})", label, d->config().n_layer,
                              mesh::human_bytes(static_cast<double>(md->kv_bytes())), how);
  s.source = std::move(md);
  return s;
}

}  // namespace llmesh::cli
