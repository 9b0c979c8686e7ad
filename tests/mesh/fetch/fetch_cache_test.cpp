#include <fcntl.h>
#include <pty.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <optional>
#include <thread>

#include <gtest/gtest.h>

#include "fetch/artifact_cache.h"
#include "fetch_fixture.h"

namespace llmesh::mesh {
namespace {

using test::FileServer;
using test::read_all;
using test::TempDir;
using test::write_all;
namespace fs = std::filesystem;

ArtifactCacheOptions quick() {
  ArtifactCacheOptions o;
  o.retry_delay = std::chrono::milliseconds(0);
  return o;
}

struct Artifact {
  std::string content;
  ArtifactRef ref;
};

Artifact make_artifact(const std::string& path, size_t n, uint32_t seed) {
  Artifact a;
  a.content = test::random_bytes(n, seed);
  a.ref = {path, n, sha256_hex(a.content)};
  return a;
}

// A source that must not be read.
CallbackSource no_source() {
  return CallbackSource("nothing", [](const std::string& p, uint64_t, uint64_t, const ChunkSink&) {
    ADD_FAILURE() << "the source was read for " << p;
    throw FetchError("no source");
  });
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const FetchError& e) {
    return e.what();
  }
  return "(no error)";
}

TEST(FetchPaths, BadPathsAreRefused) {
  for (const char* bad : {"", "/etc/passwd", "a/../b", "..", "a//b", "a/", "./a", "a\\b",
                          "a/./b", "x.part", "blk/y.sha256", "a\nb"}) {
    EXPECT_THROW(validate_artifact_path(bad), FetchError) << bad;
  }
  EXPECT_THROW(validate_artifact_path(std::string(2000, 'a')), FetchError);
  EXPECT_NO_THROW(validate_artifact_path("blk.0/attn_q.bin"));
  EXPECT_NO_THROW(validate_artifact_path("model-00001-of-00002.safetensors"));
  EXPECT_THROW(validated({"a.bin", 1, "zz"}), FetchError);
  EXPECT_EQ(validated({"a.bin", 1, std::string(64, 'A')}).sha256, std::string(64, 'a'));

  TempDir tmp;
  ArtifactCache cache("m", tmp.path / "cache", quick());
  auto src = no_source();
  std::string err = error_of([&] { cache.ensure({"../escape", 1, std::string(64, '0')}, src); });
  EXPECT_NE(err.find("bad artifact path"), std::string::npos) << err;
  EXPECT_FALSE(fs::exists(tmp.path / "escape"));
  EXPECT_THROW(ArtifactCache("../x", tmp.path), FetchError);
  EXPECT_THROW(ArtifactCache("/abs", tmp.path), FetchError);
}

TEST(FetchPaths, SymlinkInsideCacheIsRefused) {
  TempDir tmp;
  fs::create_directories(tmp.path / "cache");
  fs::create_directories(tmp.path / "outside");
  fs::create_directory_symlink(tmp.path / "outside", tmp.path / "cache" / "m");
  auto a = make_artifact("a.bin", 100, 1);
  TempDir srcdir;
  write_all(srcdir.path / "a.bin", a.content);
  DirectorySource src(srcdir.path);
  ArtifactCache cache("m", tmp.path / "cache", quick());
  std::string err = error_of([&] { cache.ensure(a.ref, src); });
  EXPECT_NE(err.find("symbolic link"), std::string::npos) << err;
  EXPECT_TRUE(fs::is_empty(tmp.path / "outside"));
}

// Sets or unsets an environment variable for one scope.
struct EnvVar {
  std::string name;
  std::optional<std::string> old;
  EnvVar(std::string n, const char* value) : name(std::move(n)) {
    if (const char* o = std::getenv(name.c_str())) old = o;
    if (value) setenv(name.c_str(), value, 1);
    else unsetenv(name.c_str());
  }
  ~EnvVar() {
    if (old) setenv(name.c_str(), old->c_str(), 1);
    else unsetenv(name.c_str());
  }
};

TEST(FetchCacheRoot, FromEnvironment) {
  EnvVar c("LLMESH_CACHE", nullptr), x("XDG_CACHE_HOME", nullptr), h("HOME", nullptr);
  setenv("LLMESH_CACHE", "/tmp/llmesh-c", 1);
  EXPECT_EQ(default_cache_root(), fs::path("/tmp/llmesh-c"));
  unsetenv("LLMESH_CACHE");
  setenv("XDG_CACHE_HOME", "/tmp/xdg", 1);
  EXPECT_EQ(default_cache_root(), fs::path("/tmp/xdg/llmesh"));
  unsetenv("XDG_CACHE_HOME");
  setenv("HOME", "/home/u", 1);
  EXPECT_EQ(default_cache_root(), fs::path("/home/u/.cache/llmesh"));
  unsetenv("HOME");
  EXPECT_THROW(default_cache_root(), FetchError);
}

TEST(FetchSources, MakeSource) {
  TempDir tmp;
  EXPECT_EQ(make_source(tmp.path.string())->describe(), "directory " + tmp.path.string());
  EXPECT_EQ(make_source("https://huggingface.co/Qwen/Qwen3-0.6B/resolve/main")->describe(),
            "https://huggingface.co/Qwen/Qwen3-0.6B/resolve/main/");
  EXPECT_NE(dynamic_cast<HttpSource*>(make_source("http://127.0.0.1:9/x/").get()), nullptr);
  std::string err = error_of([&] { make_source((tmp.path / "missing").string()); });
  EXPECT_NE(err.find("neither an existing directory nor an http"), std::string::npos) << err;
  EXPECT_THROW(make_source("ftp://host/x"), FetchError);
  EXPECT_THROW(make_source("https://"), FetchError);
}

TEST(FetchCache, FromDirectoryThenFromCache) {
  TempDir srcdir, tmp;
  auto a = make_artifact("blk.0/w.bin", 300000, 2);
  auto b = make_artifact("tokenizer.json", 1000, 3);
  write_all(srcdir.path / a.ref.path, a.content);
  write_all(srcdir.path / b.ref.path, b.content);
  DirectorySource src(srcdir.path);
  ArtifactCache cache("model-x", tmp.path, quick());
  EXPECT_FALSE(cache.is_cached(a.ref));
  auto paths = cache.ensure_all({a.ref, b.ref}, src);
  ASSERT_EQ(paths.size(), 2u);
  EXPECT_EQ(paths[0], tmp.path / "model-x" / "blk.0" / "w.bin");
  EXPECT_EQ(read_all(paths[0]), a.content);
  EXPECT_EQ(read_all(paths[1]), b.content);
  EXPECT_TRUE(fs::exists(paths[0].string() + ".sha256"));
  EXPECT_FALSE(fs::exists(paths[0].string() + ".part"));

  // A second cache over the same root: verified by the marker, the source is never read.
  ArtifactCache again("model-x", tmp.path, quick());
  auto none = no_source();
  std::vector<FetchProgress> seen;
  again.ensure(a.ref, none, [&](const FetchProgress& p) { seen.push_back(p); });
  ASSERT_EQ(seen.size(), 1u);
  EXPECT_TRUE(seen[0].from_cache);
  EXPECT_EQ(seen[0].done_bytes, a.ref.bytes);
  EXPECT_TRUE(again.is_cached(b.ref));

  // Missing in the source: a clear error.
  std::string err = error_of([&] { cache.ensure({"nope.bin", 5, std::string(64, '1')}, src); });
  EXPECT_NE(err.find("nope.bin not found in directory"), std::string::npos) << err;
}

TEST(FetchCache, TruncatedOrChangedCachedFileIsRefetched) {
  TempDir tmp;
  FileServer server;
  auto a = make_artifact("a.bin", 200000, 4);
  server.files["a.bin"] = a.content;
  HttpSource src(server.url("files"));
  auto path = ArtifactCache("m", tmp.path, quick()).ensure(a.ref, src);
  EXPECT_EQ(server.served.load(), a.ref.bytes);

  fs::resize_file(path, 1000);  // truncated
  EXPECT_EQ(ArtifactCache("m", tmp.path, quick()).ensure(a.ref, src), path);
  EXPECT_EQ(read_all(path), a.content);
  EXPECT_EQ(server.served.load(), 2 * a.ref.bytes);

  std::string changed = a.content;  // same size, different bytes: the marker's mtime is stale
  changed[5] ^= 1;
  std::this_thread::sleep_for(std::chrono::milliseconds(5));
  write_all(path, changed);
  EXPECT_FALSE(ArtifactCache("m", tmp.path, quick()).is_cached(a.ref));
  ArtifactCache("m", tmp.path, quick()).ensure(a.ref, src);
  EXPECT_EQ(read_all(path), a.content);
  EXPECT_EQ(server.served.load(), 3 * a.ref.bytes);
}

TEST(FetchHttp, FetchWithProgress) {
  TempDir tmp;
  FileServer server;
  auto a = make_artifact("blk.3/ffn up.bin", 1 << 20, 5);  // a space: percent-encoded
  server.files["blk.3/ffn up.bin"] = a.content;
  HttpSource src(server.url("slow"));
  ArtifactCacheOptions o = quick();
  o.progress_interval = std::chrono::milliseconds(20);
  ArtifactCache cache("m", tmp.path, o);
  std::vector<FetchProgress> seen;
  auto path = cache.ensure(a.ref, src, [&](const FetchProgress& p) { seen.push_back(p); });
  EXPECT_EQ(read_all(path), a.content);
  ASSERT_GE(seen.size(), 3u);
  for (size_t i = 1; i < seen.size(); ++i) {
    EXPECT_GE(seen[i].done_bytes, seen[i - 1].done_bytes);
    EXPECT_EQ(seen[i].total_bytes, a.ref.bytes);
    EXPECT_FALSE(seen[i].from_cache);
  }
  EXPECT_EQ(seen.front().done_bytes, 0u);
  EXPECT_EQ(seen.back().done_bytes, a.ref.bytes);
  EXPECT_TRUE(seen.back().finished);
  EXPECT_GT(seen.back().bytes_per_second, 0);
  // At most ~one call per progress_interval (plus first and last).
  EXPECT_LT(seen.size(), 200u);
}

TEST(FetchHttp, ResumeTransfersOnlyTheRest) {
  TempDir tmp;
  FileServer server;
  auto a = make_artifact("a.bin", 400000, 6);
  server.files["a.bin"] = a.content;
  ArtifactCache cache("m", tmp.path, quick());
  write_all(tmp.path / "m" / "a.bin.part", a.content.substr(0, 150000));
  HttpSource src(server.url("files"));
  std::vector<FetchProgress> seen;
  auto path = cache.ensure(a.ref, src, [&](const FetchProgress& p) { seen.push_back(p); });
  EXPECT_EQ(read_all(path), a.content);
  EXPECT_EQ(server.served.load(), 400000u - 150000u);
  ASSERT_FALSE(seen.empty());
  EXPECT_EQ(seen.front().done_bytes, 150000u);
  EXPECT_EQ(seen.back().done_bytes, 400000u);
}

TEST(FetchHttp, ServerIgnoringRangeIsSkippedOver) {
  TempDir tmp;
  FileServer server;
  auto a = make_artifact("a.bin", 300000, 7);
  server.files["a.bin"] = a.content;
  ArtifactCache cache("m", tmp.path, quick());
  write_all(tmp.path / "m" / "a.bin.part", a.content.substr(0, 100000));
  HttpSource src(server.url("norange"));
  auto path = cache.ensure(a.ref, src);
  EXPECT_EQ(read_all(path), a.content);
  EXPECT_EQ(server.served.load(), 300000u);  // it sent everything; the prefix was skipped
}

TEST(FetchHttp, DroppedConnectionResumes) {
  TempDir tmp;
  FileServer server;
  auto a = make_artifact("a.bin", 500000, 8);
  server.files["a.bin"] = a.content;
  {  // drops once: the cache resumes by itself
    ArtifactCache cache("m1", tmp.path, quick());
    HttpSource src(server.url("droponce"));
    auto path = cache.ensure(a.ref, src);
    EXPECT_EQ(read_all(path), a.content);
    EXPECT_EQ(server.served.load(), 500000u);  // half, then the other half
    EXPECT_EQ(server.requests.load(), 2);
  }
  server.served = 0;
  {  // always drops at half: an error that keeps the half, and a later run resumes from it
    ArtifactCache cache("m2", tmp.path, quick());
    HttpSource drop(server.url("drop"));
    std::string err = error_of([&] { cache.ensure(a.ref, drop); });
    EXPECT_NE(err.find("fetching a.bin from " + server.url("drop")), std::string::npos) << err;
    EXPECT_NE(err.find("connection dropped"), std::string::npos) << err;
    EXPECT_NE(err.find("250000 of 500000 bytes are kept in"), std::string::npos) << err;
    EXPECT_EQ(fs::file_size(tmp.path / "m2" / "a.bin.part"), 250000u);
    EXPECT_FALSE(fs::exists(tmp.path / "m2" / "a.bin"));
    server.served = 0;
    HttpSource good(server.url("files"));
    auto path = cache.ensure(a.ref, good);
    EXPECT_EQ(read_all(path), a.content);
    EXPECT_EQ(server.served.load(), 250000u);
  }
}

TEST(FetchHttp, Redirects) {
  TempDir tmp;
  FileServer server;
  auto a = make_artifact("d/a.bin", 50000, 9);
  server.files["d/a.bin"] = a.content;
  ArtifactCache cache("m", tmp.path, quick());
  HttpSource src(server.url("redir"));
  EXPECT_EQ(read_all(cache.ensure(a.ref, src)), a.content);
  HttpSource loop(server.url("loop"));
  ArtifactCache other("m2", tmp.path, quick());
  std::string err = error_of([&] { other.ensure(a.ref, loop); });
  EXPECT_NE(err.find("more than 10 redirects"), std::string::npos) << err;
}

TEST(FetchHttp, HttpErrorsAreClear) {
  TempDir tmp;
  FileServer server;
  auto a = make_artifact("a.bin", 1000, 10);
  ArtifactCache cache("m", tmp.path, quick());
  HttpSource s404(server.url("e404")), s500(server.url("e500"));
  std::string err = error_of([&] { cache.ensure(a.ref, s404); });
  EXPECT_NE(err.find("fetching a.bin"), std::string::npos) << err;
  EXPECT_NE(err.find("/e404/a.bin: HTTP 404: Entry not found"), std::string::npos) << err;
  err = error_of([&] { cache.ensure(a.ref, s500); });
  EXPECT_NE(err.find("HTTP 500"), std::string::npos) << err;
  EXPECT_FALSE(fs::exists(tmp.path / "m" / "a.bin"));
  EXPECT_FALSE(fs::exists(tmp.path / "m" / "a.bin.part"));  // nothing came: no litter

  // Nobody listening: a connection error.
  HttpSource closed("http://127.0.0.1:1/x/");
  err = error_of([&] { cache.ensure(a.ref, closed); });
  EXPECT_NE(err.find("127.0.0.1:1/x/a.bin: cannot connect"), std::string::npos) << err;
}

TEST(FetchHttp, WrongBytesRetryOnceThenFail) {
  TempDir tmp;
  FileServer server;
  auto a = make_artifact("w.bin", 100000, 11);
  server.files["w.bin"] = a.content;
  ArtifactCache cache("m", tmp.path, quick());
  HttpSource src(server.url("wrong"));
  std::string err = error_of([&] { cache.ensure(a.ref, src); });
  std::string got = sha256_hex([&] {
    std::string w = a.content;
    for (size_t i = 0; i < w.size(); i += 1000) w[i] ^= 0x5a;
    return w;
  }());
  EXPECT_NE(err.find("w.bin"), std::string::npos) << err;
  EXPECT_NE(err.find("sha256 mismatch"), std::string::npos) << err;
  EXPECT_NE(err.find("expected " + a.ref.sha256), std::string::npos) << err;
  EXPECT_NE(err.find("got " + got), std::string::npos) << err;
  EXPECT_EQ(server.served.load(), 200000u);  // downloaded twice
  EXPECT_FALSE(fs::exists(tmp.path / "m" / "w.bin"));
  EXPECT_FALSE(fs::exists(tmp.path / "m" / "w.bin.part"));

  // A stale .part prefix is cured by the from-scratch retry.
  write_all(tmp.path / "m" / "w.bin.part", std::string(30000, 'x'));
  HttpSource good(server.url("files"));
  EXPECT_EQ(read_all(cache.ensure(a.ref, good)), a.content);
}

TEST(FetchHttp, SizeMismatchIsAnError) {
  TempDir tmp;
  FileServer server;
  auto a = make_artifact("a.bin", 10000, 12);
  server.files["a.bin"] = a.content;
  HttpSource src(server.url("files"));
  ArtifactCache cache("m", tmp.path, quick());
  ArtifactRef longer = a.ref;
  longer.bytes = 20000;
  std::string err = error_of([&] { cache.ensure(longer, src); });
  EXPECT_NE(err.find("ended after 10000 of the expected 20000 bytes"), std::string::npos) << err;
  ArtifactCache cache2("m2", tmp.path, quick());
  ArtifactRef shorter = a.ref;
  shorter.bytes = 5000;
  err = error_of([&] { cache2.ensure(shorter, src); });
  EXPECT_NE(err.find("more than the expected 5000 bytes"), std::string::npos) << err;
  EXPECT_FALSE(fs::exists(tmp.path / "m2" / "a.bin.part"));
}

TEST(FetchCache, ConcurrentCachesShareOneDownload) {
  TempDir tmp;
  FileServer server;
  auto a = make_artifact("big.bin", 1 << 20, 13);
  server.files["big.bin"] = a.content;
  fs::path p1, p2;
  std::string e1, e2;
  auto run = [&](fs::path& out, std::string& err) {
    try {
      HttpSource src(server.url("slow"));
      out = ArtifactCache("m", tmp.path, quick()).ensure(a.ref, src);
    } catch (const std::exception& e) {
      err = e.what();
    }
  };
  std::thread t1([&] { run(p1, e1); });
  std::thread t2([&] { run(p2, e2); });
  t1.join();
  t2.join();
  EXPECT_EQ(e1, "");
  EXPECT_EQ(e2, "");
  EXPECT_EQ(p1, p2);
  EXPECT_EQ(read_all(p1), a.content);
  EXPECT_EQ(server.served.load(), a.ref.bytes);  // one download, the other waited on the lock
  EXPECT_FALSE(fs::exists(p1.string() + ".part"));
}

TEST(FetchCache, CallbackSourceAndStderrPrinter) {
  TempDir tmp;
  auto a = make_artifact("cb.bin", 100000, 14);
  CallbackSource src("test callback", [&](const std::string& path, uint64_t off, uint64_t len,
                                          const ChunkSink& sink) {
    EXPECT_EQ(path, "cb.bin");
    EXPECT_EQ(off + len, a.ref.bytes);
    for (uint64_t p = off; p < a.content.size(); p += 7000)
      sink(a.content.data() + p, std::min<size_t>(7000, a.content.size() - p));
  });
  std::FILE* f = std::tmpfile();
  ArtifactCacheOptions o = quick();
  o.progress_interval = std::chrono::milliseconds(0);
  ArtifactCache cache("m", tmp.path, o);
  EXPECT_EQ(read_all(cache.ensure(a.ref, src, stderr_progress(f))), a.content);
  cache.ensure(a.ref, src, stderr_progress(f));
  std::rewind(f);
  std::string out;
  char buf[4096];
  while (size_t n = std::fread(buf, 1, sizeof buf, f)) out.append(buf, n);
  std::fclose(f);
  int lines = 0;
  for (char c : out) lines += c == '\n';
  EXPECT_GE(lines, 11);  // 0%, 10%, ... 100%, and the cached line
  EXPECT_LE(lines, 13) << out;
  EXPECT_NE(out.find("cb.bin  100.0%"), std::string::npos) << out;
  EXPECT_NE(out.find("cached"), std::string::npos) << out;
}

TEST(FetchProgressPrinter, TerminalGetsOneUpdatingLine) {
  int master = -1, slave = -1;
  if (::openpty(&master, &slave, nullptr, nullptr, nullptr) != 0) GTEST_SKIP() << "no pty";
  std::FILE* out = ::fdopen(slave, "w");
  ASSERT_NE(out, nullptr);
  auto print = stderr_progress(out);
  FetchProgress p{"blk.0/w.bin", 0, 2000000, 0, false, false};
  print(p);
  p.done_bytes = 1000000;
  p.bytes_per_second = 35e6;
  print(p);
  p.done_bytes = 2000000;
  p.finished = true;
  print(p);
  std::fclose(out);
  ::fcntl(master, F_SETFL, O_NONBLOCK);
  std::string got;
  char buf[1024];
  for (ssize_t n; (n = ::read(master, buf, sizeof buf)) > 0;) got.append(buf, static_cast<size_t>(n));
  ::close(master);
  EXPECT_NE(got.find("\rblk.0/w.bin   50.0%  1.0 MB / 2.0 MB  35.0 MB/s"), std::string::npos) << got;
  EXPECT_NE(got.find("100.0%"), std::string::npos) << got;
  size_t newlines = 0;
  for (char c : got) newlines += c == '\n';
  EXPECT_EQ(newlines, 1u) << got;  // only the finished line ends the line
}

}  // namespace
}  // namespace llmesh::mesh
