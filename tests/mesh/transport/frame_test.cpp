#include "transport/frame.h"

#include <gtest/gtest.h>

#include <random>

#include "transport/protocol.h"

using namespace llmesh::mesh;

namespace {

std::vector<uint8_t> bytes_of(size_t n, uint8_t seed) {
  std::vector<uint8_t> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = static_cast<uint8_t>(seed + i * 7);
  return v;
}

}  // namespace

TEST(Frame, HeaderLayoutIsBigEndian) {
  std::vector<uint8_t> payload = {0xAA, 0xBB};
  auto f = encode_frame(FrameType::DATA, frame_flags::MORE, 0x01020304, payload);
  std::vector<uint8_t> want = {0, 0, 0, 8, 0x06, 0x01, 1, 2, 3, 4, 0xAA, 0xBB};
  EXPECT_EQ(f, want);
}

TEST(Frame, RoundTripsWholeAndByteByByte) {
  std::vector<uint8_t> wire;
  struct Want {
    FrameType t;
    uint8_t flags;
    uint32_t sid;
    size_t n;
  };
  std::vector<Want> wants = {{FrameType::HELLO, 0, 0, 40},       {FrameType::PING, 0, 0, 8},
                             {FrameType::MSG, frame_flags::MORE, 0, 0}, {FrameType::DATA, 0, 7, 70000},
                             {FrameType::GOAWAY, 0, 0, 4},       {FrameType::WINDOW, 0, 0xFFFFFFFF, 4}};
  for (size_t i = 0; i < wants.size(); ++i)
    encode_frame(wire, wants[i].t, wants[i].flags, wants[i].sid, bytes_of(wants[i].n, static_cast<uint8_t>(i)));
  for (size_t chunk : {wire.size(), size_t(1), size_t(3), size_t(4096)}) {
    FrameDecoder dec;
    std::vector<Frame> got;
    for (size_t off = 0; off < wire.size(); off += chunk) {
      dec.feed(std::span<const uint8_t>(wire).subspan(off, std::min(chunk, wire.size() - off)));
      while (auto f = dec.next()) got.push_back(std::move(*f));
    }
    ASSERT_FALSE(dec.failed()) << dec.error();
    ASSERT_EQ(got.size(), wants.size());
    for (size_t i = 0; i < wants.size(); ++i) {
      EXPECT_EQ(got[i].kind(), wants[i].t);
      EXPECT_EQ(got[i].flags, wants[i].flags);
      EXPECT_EQ(got[i].stream_id, wants[i].sid);
      EXPECT_EQ(got[i].payload, bytes_of(wants[i].n, static_cast<uint8_t>(i)));
    }
    EXPECT_EQ(dec.buffered(), 0u);
  }
}

TEST(Frame, TruncatedInputWaitsWithoutError) {
  auto f = encode_frame(FrameType::DATA, 0, 3, bytes_of(100, 1));
  FrameDecoder dec;
  dec.feed(std::span<const uint8_t>(f).first(f.size() - 1));
  EXPECT_FALSE(dec.next());
  EXPECT_FALSE(dec.failed());
  dec.feed(std::span<const uint8_t>(f).last(1));
  auto got = dec.next();
  ASSERT_TRUE(got);
  EXPECT_EQ(got->payload.size(), 100u);
}

TEST(Frame, LengthBelowHeaderIsMalformed) {
  for (uint32_t len : {0u, 1u, 5u}) {
    std::vector<uint8_t> wire;
    put_u32(wire, len);
    wire.resize(wire.size() + 6);
    FrameDecoder dec;
    dec.feed(wire);
    EXPECT_FALSE(dec.next());
    EXPECT_TRUE(dec.failed());
    EXPECT_FALSE(dec.oversize());
    EXPECT_NE(dec.error().find("smaller than"), std::string::npos) << dec.error();
    // Stays failed.
    dec.feed(encode_frame(FrameType::PING, 0, 0, bytes_of(8, 0)));
    EXPECT_FALSE(dec.next());
  }
}

TEST(Frame, OversizeIsRefusedBeforeThePayloadArrives) {
  FrameDecoder dec(4096);
  std::vector<uint8_t> wire;
  put_u32(wire, 6 + 4097);
  dec.feed(wire);  // only the length field
  EXPECT_FALSE(dec.next());
  EXPECT_TRUE(dec.failed());
  EXPECT_TRUE(dec.oversize());
  EXPECT_NE(dec.error().find("exceeds"), std::string::npos);

  FrameDecoder exact(4096);
  exact.feed(encode_frame(FrameType::DATA, 0, 1, bytes_of(4096, 0)));
  EXPECT_TRUE(exact.next());

  FrameDecoder huge;  // 4 GiB length
  huge.feed(std::vector<uint8_t>{0xFF, 0xFF, 0xFF, 0xFF, 1, 0});
  EXPECT_FALSE(huge.next());
  EXPECT_TRUE(huge.oversize());
  // The configurable ceiling is 16 MiB.
  EXPECT_EQ(FrameDecoder(1u << 30).max_payload(), kMaxMaxPayload);
}

TEST(Frame, UnknownTypesDecode) {
  FrameDecoder dec;
  dec.feed(encode_frame(static_cast<FrameType>(0x7F), 0xFF, 9, bytes_of(5, 0)));
  auto f = dec.next();
  ASSERT_TRUE(f);
  EXPECT_EQ(f->type, 0x7F);
  EXPECT_FALSE(is_known_frame_type(f->type));
  EXPECT_STREQ(frame_type_name(f->type), "UNKNOWN");
  EXPECT_STREQ(frame_type_name(0x06), "DATA");
}

TEST(Frame, RandomBytesNeverCrash) {
  std::mt19937 rng(1234);
  for (int round = 0; round < 2000; ++round) {
    size_t n = rng() % 300;
    std::vector<uint8_t> junk(n);
    for (auto& b : junk) b = static_cast<uint8_t>(rng());
    // Small length fields now and then, so some junk parses as frames.
    if (n >= 4 && rng() % 2) {
      junk[0] = junk[1] = 0;
      junk[2] = static_cast<uint8_t>(rng() % 2);
    }
    FrameDecoder dec(1024);
    size_t off = 0;
    size_t frames = 0;
    while (off < n) {
      size_t k = 1 + rng() % 40;
      k = std::min(k, n - off);
      dec.feed(std::span<const uint8_t>(junk).subspan(off, k));
      off += k;
      while (auto f = dec.next()) {
        ++frames;
        ASSERT_LE(f->payload.size(), 1024u);
      }
    }
    EXPECT_LE(dec.buffered(), n);
    (void)frames;
  }
}

TEST(Hello, RoundTripAndUnknownKeysIgnored) {
  Hello h;
  h.version_min = 1;
  h.version_max = 3;
  h.id = NodeIdentity::generate().id();
  h.software = "llmesh/9";
  h.capabilities = {{"gpu", true}, {"models", {"a", "b"}}};
  h.max_payload = 1 << 20;
  h.stream_window = 1 << 22;
  h.session = 0x1234567890ULL;
  auto bytes = encode_hello(h);
  std::string err;
  auto back = decode_hello(bytes, &err);
  ASSERT_TRUE(back) << err;
  EXPECT_EQ(back->id, h.id);
  EXPECT_EQ(back->version_max, 3u);
  EXPECT_EQ(back->software, "llmesh/9");
  EXPECT_EQ(back->capabilities["models"][1], "b");
  EXPECT_EQ(back->session, h.session);
  EXPECT_EQ(back->stream_window, 1u << 22);

  auto j = nlohmann::json::from_msgpack(bytes);
  j["future_key"] = {{"x", 1}};
  auto extended = nlohmann::json::to_msgpack(j);
  EXPECT_TRUE(decode_hello(extended, &err)) << err;
}

TEST(Hello, MalformedPayloadsAreErrors) {
  std::string err;
  EXPECT_FALSE(decode_hello(std::vector<uint8_t>{}, &err));
  EXPECT_FALSE(decode_hello(std::vector<uint8_t>{0xC1}, &err));  // never-used msgpack byte
  EXPECT_FALSE(decode_hello(nlohmann::json::to_msgpack(nlohmann::json::array({1, 2})), &err));
  Hello h;
  h.max_payload = h.stream_window = 1 << 20;
  auto j = nlohmann::json::from_msgpack(encode_hello(h));
  auto without = [&](const char* key) {
    auto k = j;
    k.erase(key);
    return nlohmann::json::to_msgpack(k);
  };
  for (const char* key : {"vmin", "vmax", "id", "maxp", "win"}) {
    err.clear();
    EXPECT_FALSE(decode_hello(without(key), &err)) << key;
    EXPECT_FALSE(err.empty());
  }
  auto k = j;
  k["id"] = nlohmann::json::binary({1, 2, 3});
  EXPECT_FALSE(decode_hello(nlohmann::json::to_msgpack(k), &err));
  k = j;
  k["vmin"] = 5;
  k["vmax"] = 4;
  EXPECT_FALSE(decode_hello(nlohmann::json::to_msgpack(k), &err));
  k = j;
  k["vmin"] = -1;
  EXPECT_FALSE(decode_hello(nlohmann::json::to_msgpack(k), &err));
  k = j;
  k["maxp"] = 10;
  EXPECT_FALSE(decode_hello(nlohmann::json::to_msgpack(k), &err));
  // Truncations of a good HELLO never crash.
  auto good = encode_hello(h);
  for (size_t n = 0; n < good.size(); ++n) decode_hello(std::span<const uint8_t>(good).first(n), &err);
}

TEST(Hello, VersionNegotiationPicksHighestCommon) {
  EXPECT_EQ(negotiate_version(1, 1, 1, 1), 1u);
  EXPECT_EQ(negotiate_version(1, 3, 2, 5), 3u);
  EXPECT_EQ(negotiate_version(2, 5, 1, 3), 3u);
  EXPECT_FALSE(negotiate_version(1, 1, 2, 3));
  EXPECT_FALSE(negotiate_version(4, 6, 1, 3));
}
