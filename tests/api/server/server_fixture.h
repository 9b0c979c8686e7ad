// An in-process API server for tests: the real engine on stories260K, or the scripted model
// with Qwen3's tokenizer and chat template, on a free loopback port.
#pragma once
#include <arpa/inet.h>
#include <httplib.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <memory>
#include <string>
#include <thread>

#include "gguf/gguf.h"
#include "kernels/thread_pool.h"
#include "model/forward.h"
#include "model/kv_cache.h"
#include "model/model.h"
#include "scheduler/scheduler.h"
#include "scripted_model.h"
#include "server/api_server.h"
#include "test_paths.h"
#include "tokenizer/tokenizer.h"

namespace llmesh::test {

struct ServerSetup {
  int parallel = 2;
  int max_queue = 4;
  int ctx = 256;
  std::string api_key;
  size_t max_body_bytes = 1u << 20;
  std::vector<ScriptRule> script;  // non-empty: scripted model with Qwen3's tokenizer
};

class TestServer {
 public:
  explicit TestServer(const ServerSetup& s) {
    if (s.script.empty()) {
      model_ = Model::load(model_path("stories260K-f32.gguf"));
      KvCacheOptions kv;
      kv.n_ctx = s.ctx;
      kv.n_seq = s.parallel;
      kv.type = DType::F32;
      cache_ = std::make_unique<KvCache>(model_->config(), model_->first_layer(), model_->last_layer(), kv);
      pool_ = std::make_unique<ThreadPool>(1);
      fwd_ = std::make_unique<Forward>(*model_, *cache_, *pool_);
      batch_ = std::make_unique<LocalBatchModel>(*fwd_);
      tok_ = Tokenizer::from_gguf(model_->file());
      sm_.id = "stories260K";
    } else {
      file_ = GgufFile::open(model_path("qwen3-tiny-q8_0.gguf"));
      tok_ = Tokenizer::from_gguf(*file_);
      batch_ = std::make_unique<ScriptedBatchModel>(*tok_, s.script, s.ctx, s.parallel);
      sm_.id = "scripted";
      sm_.chat_template = api::ChatTemplate::parse(*file_->opt_string("tokenizer.chat_template"));
    }
    SchedulerOptions so;
    so.n_parallel = s.parallel;
    so.max_queue = s.max_queue;
    sched_ = std::make_unique<Scheduler>(*batch_, so);
    sm_.tokenizer = tok_.get();
    sm_.scheduler = sched_.get();
    sm_.describe_from_template();
    opt_.port = 0;
    opt_.api_key = s.api_key;
    opt_.max_queue = s.max_queue;
    opt_.max_body_bytes = s.max_body_bytes;
    opt_.keepalive = std::chrono::milliseconds(100);
    opt_.log_requests = false;
    server_ = std::make_unique<api::ApiServer>(sm_, opt_);
    server_->bind();
    thread_ = std::thread([this] { server_->run(); });
  }
  ~TestServer() {
    server_->stop();
    thread_.join();
  }
  int port() const { return server_->port(); }
  httplib::Client client() const {
    httplib::Client c("127.0.0.1", port());
    c.set_read_timeout(60);
    return c;
  }
  Scheduler& scheduler() { return *sched_; }
  const Tokenizer& tokenizer() { return *tok_; }
  api::ServedModel& served() { return sm_; }
  api::ApiServer& server() { return *server_; }

 private:
  std::unique_ptr<GgufFile> file_;
  std::unique_ptr<Model> model_;
  std::unique_ptr<KvCache> cache_;
  std::unique_ptr<ThreadPool> pool_;
  std::unique_ptr<Forward> fwd_;
  std::unique_ptr<BatchModel> batch_;
  std::unique_ptr<Tokenizer> tok_;
  std::unique_ptr<Scheduler> sched_;
  api::ServedModel sm_;
  api::ServerOptions opt_;
  std::unique_ptr<api::ApiServer> server_;
  std::thread thread_;
};

// A raw TCP connection, for requests no well-behaved client would send.
class RawConnection {
 public:
  explicit RawConnection(int port) {
    fd_ = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<uint16_t>(port));
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
      close(fd_);
      fd_ = -1;
    }
  }
  ~RawConnection() { shut(); }
  bool ok() const { return fd_ >= 0; }
  bool send_all(const std::string& s) {
    size_t off = 0;
    while (off < s.size()) {
      ssize_t n = ::send(fd_, s.data() + off, s.size() - off, MSG_NOSIGNAL);
      if (n <= 0) return false;
      off += static_cast<size_t>(n);
    }
    return true;
  }
  // Reads until `needle` appears or the peer closes or `seconds` pass.
  std::string read_until(const std::string& needle, double seconds = 10) {
    std::string got;
    timeval tv{0, 100000};
    setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    auto end = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
    char buf[4096];
    while (std::chrono::steady_clock::now() < end && got.find(needle) == std::string::npos) {
      ssize_t n = recv(fd_, buf, sizeof buf, 0);
      if (n == 0) break;
      if (n > 0) got.append(buf, static_cast<size_t>(n));
    }
    return got;
  }
  void shut() {
    if (fd_ >= 0) close(fd_);
    fd_ = -1;
  }

 private:
  int fd_ = -1;
};

// Polls the scheduler until `done(stats)` holds or `seconds` pass; returns the last stats.
template <class Pred>
SchedulerStats wait_for_stats(Scheduler& s, Pred done, double seconds = 5) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
  SchedulerStats st = s.stats();
  while (!done(st) && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
    st = s.stats();
  }
  return st;
}
inline bool idle(const SchedulerStats& st) { return st.active == 0; }
inline bool busy(const SchedulerStats& st) { return st.active > 0; }

inline std::string http_post(const std::string& path, const std::string& body,
                             const std::string& extra_headers = "") {
  return "POST " + path + " HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n" + extra_headers +
         "Content-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body;
}

}  // namespace llmesh::test
