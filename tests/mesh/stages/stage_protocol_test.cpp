// The stage wire format: hidden-state encodings and their error bounds, and hostile messages
// refused with the field named.
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include <nlohmann/json.hpp>

#include "stages/pipeline.h"
#include "stages/stage_protocol.h"

namespace llmesh::mesh::stages {
namespace {

using nlohmann::json;

std::vector<float> random_hidden(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0, 3);
  std::vector<float> x(n);
  for (auto& v : x) v = d(rng);
  return x;
}

TEST(HiddenFormat, F32IsExactF16AndQ8AreWithinTheirBounds) {
  const size_t E = 72;  // not a multiple of 32: a partial Q8 block per token
  auto x = random_hidden(E * 5, 1);
  std::vector<float> y;
  decode_hidden(encode_hidden(x, E, HiddenFormat::F32), 5, E, HiddenFormat::F32, y);
  EXPECT_EQ(x, y);
  auto h = encode_hidden(x, E, HiddenFormat::F16);
  EXPECT_EQ(h.size(), 5 * E * 2);
  decode_hidden(h, 5, E, HiddenFormat::F16, y);
  for (size_t i = 0; i < x.size(); ++i) EXPECT_LE(std::fabs(x[i] - y[i]), std::fabs(x[i]) * 0x1p-11f + 1e-7f);
  auto q = encode_hidden(x, E, HiddenFormat::Q8);
  EXPECT_EQ(q.size(), hidden_bytes(HiddenFormat::Q8, 5, E));
  EXPECT_EQ(q.size(), 5u * 3 * 34);
  decode_hidden(q, 5, E, HiddenFormat::Q8, y);
  for (size_t t = 0; t < 5; ++t)
    for (size_t b = 0; b < E; b += 32) {
      float amax = 0;
      for (size_t i = b; i < std::min(E, b + 32); ++i) amax = std::max(amax, std::fabs(x[t * E + i]));
      for (size_t i = b; i < std::min(E, b + 32); ++i)
        EXPECT_LE(std::fabs(x[t * E + i] - y[t * E + i]), amax / 127 * 0.51f + 1e-6f);
    }
  std::vector<float> zeros(64, 0.0f);
  decode_hidden(encode_hidden(zeros, 64, HiddenFormat::Q8), 1, 64, HiddenFormat::Q8, y);
  EXPECT_EQ(y, zeros);
}

TEST(HiddenFormat, WrongSizesAndNonFiniteValuesAreRefused) {
  auto x = random_hidden(64, 2);
  auto b = encode_hidden(x, 64, HiddenFormat::F16);
  std::vector<float> y;
  EXPECT_THROW(decode_hidden(b, 2, 64, HiddenFormat::F16, y), StageFormatError);
  b.pop_back();
  EXPECT_THROW(decode_hidden(b, 1, 64, HiddenFormat::F16, y), StageFormatError);
  x[3] = std::nanf("");
  EXPECT_THROW(decode_hidden(encode_hidden(x, 64, HiddenFormat::F32), 1, 64, HiddenFormat::F32, y), StageFormatError);
  EXPECT_EQ(parse_hidden_format("q8"), HiddenFormat::Q8);
  EXPECT_FALSE(parse_hidden_format("bf16"));
}

StageOpen an_open() {
  StageOpen o;
  o.model = "m";
  o.first = 2;
  o.last = 5;
  o.n_seq = 2;
  o.n_ctx = 16;
  return o;
}

TEST(StageProtocol, MessagesRoundTrip) {
  StageOpen o = decode_open(encode_open(an_open()));
  EXPECT_EQ(o.model, "m");
  EXPECT_EQ(o.first, 2);
  EXPECT_EQ(o.last, 5);
  EXPECT_EQ(o.format, HiddenFormat::F16);
  StepRequest s;
  s.id = 7;
  s.pos = {0, 1, 0};
  s.seq = {0, 0, 1};
  s.output = {0, 1, 1};
  s.out_top = {1, 0};
  s.truncate = {{1, 0}};
  s.hidden = encode_hidden(random_hidden(3 * 8, 3), 8, HiddenFormat::F16);
  StepRequest d = decode_step(encode_step(s), o, 8);
  EXPECT_EQ(d.id, 7u);
  EXPECT_EQ(d.pos, s.pos);
  EXPECT_EQ(d.seq, s.seq);
  EXPECT_EQ(d.output, s.output);
  EXPECT_EQ(d.out_top, s.out_top);
  EXPECT_EQ(d.truncate, s.truncate);
  EXPECT_EQ(d.hidden, s.hidden);
  StepReply r;
  r.id = 7;
  r.row_k = {1, 0};
  r.ids = {3};
  r.logits = std::vector<float>(1 + 10, 0.5f);
  StepReply back = decode_reply(encode_reply(r), true, 3, 2, 8, 10, HiddenFormat::F16);
  EXPECT_EQ(back.row_k, r.row_k);
  EXPECT_EQ(back.ids, r.ids);
  EXPECT_EQ(back.logits.size(), 11u);
  StepReply err;
  err.id = 9;
  err.error = kErrStepInvalid;
  err.message = "gap";
  back = decode_reply(encode_reply(err), true, 3, 2, 8, 10, HiddenFormat::F16);
  EXPECT_EQ(back.error, kErrStepInvalid);
  EXPECT_EQ(back.message, "gap");
}

void expect_refused(const std::function<void()>& f, const std::string& needle) {
  try {
    f();
    ADD_FAILURE() << "accepted; expected an error naming " << needle;
  } catch (const StageFormatError& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

std::vector<uint8_t> mp(const json& v) { return json::to_msgpack(v); }
json bin(std::vector<uint8_t> b) { return json::binary(std::move(b)); }
std::vector<uint8_t> i32(std::vector<int32_t> v) {
  std::vector<uint8_t> b(v.size() * 4);
  std::memcpy(b.data(), v.data(), b.size());
  return b;
}

TEST(StageProtocol, HostileMessagesAreRefusedNamingTheField) {
  const StageOpen o = an_open();
  expect_refused([] { decode_open(std::vector<uint8_t>{0xc1}); }, "not a valid MessagePack");
  expect_refused([] { decode_open(mp({{"t", "http"}, {"v", 1}})); }, "\"t\" is not \"stage\"");
  expect_refused([] { decode_open(mp({{"t", "stage"}, {"v", 1}, {"model", "m"}, {"f", 3}, {"l", 3}, {"ns", 1}, {"nc", 1}})); },
                 "empty layer range");
  expect_refused([] { decode_open(mp({{"t", "stage"}, {"v", 1}, {"model", "m"}, {"f", 0}, {"l", 3}, {"ns", 100000}, {"nc", 1}})); },
                 "ns");
  expect_refused([] { decode_open(mp({{"t", "stage"}, {"v", 1}, {"model", "m"}, {"f", 0}, {"l", 3}, {"ns", 1}, {"nc", 1}, {"hf", 9}})); },
                 "hidden-state format 9");
  auto h = bin(std::vector<uint8_t>(8 * 2));
  json good = {{"op", "step"}, {"id", 1}, {"pos", bin(i32({3}))}, {"seq", bin(i32({1}))}, {"out", bin({1})}, {"h", h}};
  EXPECT_NO_THROW(decode_step(mp(good), o, 8));
  json bad = good;
  bad["pos"] = bin(i32({16}));
  expect_refused([&] { decode_step(mp(bad), o, 8); }, "position 16 outside");
  bad = good;
  bad["seq"] = bin(i32({2}));
  expect_refused([&] { decode_step(mp(bad), o, 8); }, "sequence 2 outside");
  bad = good;
  bad["seq"] = bin(i32({0, 0}));
  expect_refused([&] { decode_step(mp(bad), o, 8); }, "\"seq\" has 8 bytes");
  bad = good;
  bad["h"] = bin(std::vector<uint8_t>(15));
  expect_refused([&] { decode_step(mp(bad), o, 8); }, "hidden states of 15 bytes");
  bad = good;
  bad["out"] = bin({2});
  expect_refused([&] { decode_step(mp(bad), o, 8); }, "\"out\"");
  bad = good;
  bad["tr"] = json::array({json::array({5, 0})});
  expect_refused([&] { decode_step(mp(bad), o, 8); }, "truncate");
  bad = good;
  bad["pos"] = "x";
  expect_refused([&] { decode_step(mp(bad), o, 8); }, "\"pos\" is not binary");
  bad = good;
  bad["op"] = "ok";
  expect_refused([&] { decode_step(mp(bad), o, 8); }, "\"op\"");
  json rep = {{"op", "ok"}, {"id", 1}, {"rk", bin(i32({1}))}, {"ids", bin(i32({10}))}, {"lv", bin(std::vector<uint8_t>(4))}};
  expect_refused([&] { decode_reply(mp(rep), true, 1, 1, 8, 10, HiddenFormat::F16); }, "token id 10 outside");
  rep["rk"] = bin(i32({11}));
  expect_refused([&] { decode_reply(mp(rep), true, 1, 1, 8, 10, HiddenFormat::F16); }, "row of 11 candidates");
  json hrep = {{"op", "ok"}, {"id", 1}, {"h", bin(std::vector<uint8_t>(3))}};
  expect_refused([&] { decode_reply(mp(hrep), false, 1, 0, 8, 10, HiddenFormat::F16); }, "hidden states of 3 bytes");
  expect_refused([&] { decode_reply(mp({{"op", "err"}, {"id", 1}, {"code", 0}}), true, 1, 0, 8, 10, HiddenFormat::F16); },
                 "code 0");
}

TEST(StageProtocol, TopCandidatesOrderLikeTheSampler) {
  const std::vector<float> row = {1, 5, 3, 5, -2, 4};
  std::vector<int32_t> ids;
  std::vector<float> vals;
  top_candidates(row.data(), 6, 3, ids, vals);
  EXPECT_EQ(ids, (std::vector<int32_t>{1, 3, 5}));  // ties: the lower id first
  EXPECT_EQ(vals, (std::vector<float>{5, 5, 4}));
  ids.clear();
  vals.clear();
  top_candidates(row.data(), 6, 1, ids, vals);
  EXPECT_EQ(ids, (std::vector<int32_t>{1}));
}

NodeId node(uint8_t b) {
  NodeId n;
  n.bytes.fill(b);
  return n;
}

TEST(FindRoute, FewestStagesThenLowestRttThenLowestId) {
  std::vector<StageCandidate> c = {
      {node(1), 2, 4, 5.0}, {node(2), 4, 8, 1.0}, {node(3), 2, 8, 9.0}, {node(4), 2, 8, 3.0}, {node(5), 2, 8, 3.0}};
  auto r = find_route(c, 2, 8);
  ASSERT_TRUE(r);
  ASSERT_EQ(r->size(), 1u);
  EXPECT_EQ((*r)[0].node, node(4));  // one hop; RTT 3 beats 9; id 4 beats 5
  r = find_route(c, 2, 8, {node(3), node(4), node(5)});
  ASSERT_TRUE(r);
  ASSERT_EQ(r->size(), 2u);
  EXPECT_EQ((*r)[0].node, node(1));
  EXPECT_EQ((*r)[1].node, node(2));
  EXPECT_FALSE(find_route(c, 2, 8, {node(1), node(3), node(4), node(5)}));
  EXPECT_FALSE(find_route({{node(1), 2, 4}, {node(2), 5, 8}}, 2, 8));  // a gap at layer 4
  EXPECT_FALSE(find_route({{node(1), 2, 9}}, 2, 8));                  // past the model's end
}

}  // namespace
}  // namespace llmesh::mesh::stages
