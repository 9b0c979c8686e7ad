// Speculative decoding on the real engine (stories260K and its drafts): greedy output equals
// decoding without speculation token for token, whatever the proposer, alone and with other
// requests in the batch; drafts are really accepted; the vocabulary check refuses a stranger.
#include <memory>

#include <gtest/gtest.h>

#include "../scheduler/fake_model.h"
#include "../scheduler/stories_engine.h"
#include "model/forward.h"
#include "scheduler/scheduler.h"
#include "speculative/model_draft.h"
#include "speculative/ngram_draft.h"
#include "test_paths.h"
#include "tokenizer/tokenizer.h"

namespace llmesh {
namespace {

using test::RecordingSink;

constexpr int kCtx = 512;

struct Target : test::StoriesEngine {
  explicit Target(int n_seq, const std::string& file = "stories260K-f32.gguf") : StoriesEngine(n_seq, kCtx, file) {}

  std::unique_ptr<ModelDraft> draft(const std::string& file, int n_seq, float p_min = 0, int batch = 512) {
    std::shared_ptr<const Model> d = Model::load(test::model_path(file));
    check_same_vocabulary(model->file(), model->config().n_vocab, d->file(), d->config().n_vocab, file);
    ModelDraftOptions o;
    o.n_slots = n_seq;
    o.n_ctx = kCtx;
    o.p_min = p_min;
    o.batch = batch;
    return std::make_unique<ModelDraft>(d, file, pool, o);
  }
};

GenerationRequest greedy(std::vector<int32_t> prompt, int max_tokens) {
  GenerationRequest r;
  r.prompt = std::move(prompt);
  r.max_tokens = max_tokens;
  r.sampling.temperature = 0;
  return r;
}

const char* const kTexts[] = {
    "Once upon a time, there was a little girl named Lily.",
    "Tom had a big red ball.",
    "The sun was shining and the birds were singing in the park. A dog",
    "One day",
};
constexpr int kGenerate = 24;

std::vector<std::vector<int32_t>> run_all(Target& t, DraftSource* draft, int n_parallel, int max_tokens,
                                          SchedulerStats* stats = nullptr, bool adaptive = true) {
  SchedulerOptions o;
  o.n_parallel = n_parallel;
  o.draft = draft;
  o.window.adaptive = adaptive;
  Scheduler s(*t.batch_model, o);
  std::vector<std::shared_ptr<RecordingSink>> sinks;
  for (const char* text : kTexts) {
    sinks.push_back(std::make_shared<RecordingSink>());
    s.submit(greedy(t.tok->encode(text, true, false), max_tokens), sinks.back());
  }
  std::vector<std::vector<int32_t>> out;
  for (auto& k : sinks) {
    EXPECT_TRUE(k->wait(std::chrono::seconds(120)));
    out.push_back(k->tokens());
  }
  if (stats) *stats = s.stats();
  return out;
}

class SpecGreedy : public ::testing::TestWithParam<std::string> {};

std::unique_ptr<DraftSource> make_source(Target& t, const std::string& which, int n_seq) {
  if (which == "ngram") {
    NgramOptions o;
    o.n_min = 1;
    return std::make_unique<NgramDraft>(o);
  }
  return t.draft(which, n_seq);
}

TEST_P(SpecGreedy, SameTokensAsWithoutSpeculation) {
  Target plain(1);
  auto reference = run_all(plain, nullptr, 1, kGenerate * 4);
  for (int parallel : {1, 4}) {
    for (bool adaptive : {true, false}) {
      Target t(4);
      auto source = make_source(t, GetParam(), 4);
      SchedulerStats st;
      auto got = run_all(t, source.get(), parallel, kGenerate * 4, &st, adaptive);
      for (size_t i = 0; i < got.size(); ++i)
        EXPECT_EQ(got[i], reference[i]) << "prompt " << i << ", parallel " << parallel << ", adaptive " << adaptive;
      EXPECT_GT(st.spec_windows, 0u);
      // The adaptive policy may stop drafting when it does not pay (timing-dependent); a fixed
      // window always drafts, and every draft here is right at times.
      if (!adaptive) {
        EXPECT_GT(st.spec_accepted, 0u) << "no draft was ever accepted";
      }
      EXPECT_LE(st.spec_accepted, st.spec_drafted);
      EXPECT_EQ(st.generated_tokens, 4u * kGenerate * 4);
      std::printf("[ %s parallel %d adaptive %d ] %llu windows, %llu drafted, %llu accepted (%.0f%%), %.2f tokens per "
                  "verification, %llu steps\n",
                  GetParam().c_str(), parallel, adaptive, (unsigned long long)st.spec_windows,
                  (unsigned long long)st.spec_drafted, (unsigned long long)st.spec_accepted,
                  100.0 * st.spec_accepted / std::max<uint64_t>(1, st.spec_drafted),
                  double(st.spec_tokens) / std::max<uint64_t>(1, st.spec_windows), (unsigned long long)st.steps);
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Drafts, SpecGreedy,
                         ::testing::Values("stories260K-q4_0.gguf", "stories260K-draft-skip3-f32.gguf",
                                           "stories260K-draft-2L-f32.gguf", "ngram"),
                         [](const auto& info) {
                           std::string n = info.param;
                           for (char& c : n)
                             if (!isalnum(static_cast<unsigned char>(c))) c = '_';
                           return n;
                         });

TEST(SpecModelDraft, ALongPromptCatchesUpOverSeveralCallsWithoutStallingTheStep) {
  Target t(1);
  auto draft = t.draft("stories260K-q4_0.gguf", 1, 0, /*batch=*/8);
  std::vector<int32_t> ctx = t.tok->encode(
      "Once upon a time, there was a little girl named Lily. She loved to play outside in the park with her "
      "friends and her big red ball.",
      true, false);
  ASSERT_GT(ctx.size(), 24u);
  const size_t calls_needed = (ctx.size() + 7) / 8;
  size_t calls = 0;
  for (;;) {
    DraftTask task;
    task.context = ctx;
    task.max_tokens = 4;
    DraftTask* p = &task;
    draft->propose(std::span<DraftTask* const>(&p, 1));
    ++calls;
    if (!task.tokens.empty()) break;
    ASSERT_LT(calls, calls_needed) << "still nothing after the whole prompt was fed";
  }
  EXPECT_EQ(calls, calls_needed);  // 8 tokens per call, the draft comes with the last chunk
  // And through the scheduler: the same tokens as without speculation.
  Target plain(1);
  auto reference = run_all(plain, nullptr, 1, kGenerate);
  Target t2(4);
  auto small_steps = t2.draft("stories260K-q4_0.gguf", 4, 0, /*batch=*/8);
  EXPECT_EQ(run_all(t2, small_steps.get(), 4, kGenerate), reference);
}

TEST(SpecVocabulary, ADraftWithAnotherVocabularyIsRefused) {
  auto target = Model::load(test::model_path("stories260K-f32.gguf"));
  auto other = Model::load(test::model_path("llama-2-tiny-random.gguf"));
  try {
    check_same_vocabulary(target->file(), target->config().n_vocab, other->file(), other->config().n_vocab,
                          "llama-2-tiny-random.gguf");
    FAIL() << "accepted a draft with another vocabulary";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("llama-2-tiny-random.gguf"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("tokens"), std::string::npos) << e.what();
  }
  auto q4 = Model::load(test::model_path("stories260K-q4_0.gguf"));
  EXPECT_NO_THROW(check_same_vocabulary(target->file(), target->config().n_vocab, q4->file(), q4->config().n_vocab,
                                        "q4"));
}

}  // namespace
}  // namespace llmesh
