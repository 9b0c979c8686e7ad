// A local HTTP server for the fetch tests: files from a map, served with Range support
// (/files/), ignoring Range (/norange/), dropping the connection at half the file (/drop/,
// /droponce/ only the first time), redirecting (/redir/ -> /files/, /loop/ -> itself),
// failing (/e404/, /e500/), serving wrong bytes (/wrong/), slowly (/slow/).
// Counts the artifact bytes it sends.
#pragma once
#include <httplib.h>
#include <gtest/gtest.h>
#include <stdlib.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "temp_dir.h"

namespace llmesh::mesh::test {

inline std::string random_bytes(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::string s(n, '\0');
  for (auto& c : s) c = static_cast<char>(rng() & 0xff);
  return s;
}

inline std::string read_all(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

inline void write_all(const std::filesystem::path& p, const std::string& data) {
  std::filesystem::create_directories(p.parent_path());
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  out.write(data.data(), static_cast<std::streamsize>(data.size()));
}

using llmesh::test::TempDir;

template <class ServerT = httplib::Server>
class FileServerT {
 public:
  std::map<std::string, std::string> files;  // path -> content
  std::atomic<uint64_t> served{0};           // artifact bytes written to clients
  std::atomic<int> requests{0};
  std::atomic<int> drop_once_count{0};
  std::mutex mu;
  std::vector<std::string> authorization;  // Authorization header of each request ("" if none)

  template <class... Args>
  explicit FileServerT(Args&&... args) : svr_(std::forward<Args>(args)...) {
    auto find = [this](const httplib::Request& req, httplib::Response& res) -> const std::string* {
      ++requests;
      {
        std::lock_guard<std::mutex> lock(mu);
        authorization.push_back(req.get_header_value("Authorization"));
      }
      auto it = files.find(req.matches[1]);
      if (it == files.end()) {
        res.status = 404;
        res.set_content("Entry not found", "text/plain");
        return nullptr;
      }
      return &it->second;
    };
    auto serve = [this](const std::string* content, httplib::Response& res, size_t limit,
                        int delay_ms) {
      res.set_content_provider(
          content->size(), "application/octet-stream",
          [this, content, limit, delay_ms](size_t off, size_t len, httplib::DataSink& sink) {
            if (off >= limit) return false;  // drop the connection
            size_t n = std::min({len, limit - off, size_t{4096}});
            if (delay_ms) std::this_thread::sleep_for(std::chrono::milliseconds(delay_ms));
            served += n;
            return sink.write(content->data() + off, n);
          });
    };
    svr_.Get("/files/(.*)", [=, this](const httplib::Request& req, httplib::Response& res) {
      if (auto* c = find(req, res)) serve(c, res, c->size(), 0);
    });
    svr_.Get("/slow/(.*)", [=, this](const httplib::Request& req, httplib::Response& res) {
      if (auto* c = find(req, res)) serve(c, res, c->size(), 1);
    });
    svr_.Get("/drop/(.*)", [=, this](const httplib::Request& req, httplib::Response& res) {
      if (auto* c = find(req, res)) serve(c, res, c->size() / 2, 0);
    });
    svr_.Get("/droponce/(.*)", [=, this](const httplib::Request& req, httplib::Response& res) {
      if (auto* c = find(req, res))
        serve(c, res, drop_once_count++ == 0 ? c->size() / 2 : c->size(), 0);
    });
    svr_.Get("/norange/(.*)", [=, this](const httplib::Request& req, httplib::Response& res) {
      auto* c = find(req, res);
      if (!c) return;
      res.status = 200;  // a chunked answer: httplib applies no Range to it
      res.set_chunked_content_provider(
          "application/octet-stream", [this, c](size_t off, httplib::DataSink& sink) {
            if (off >= c->size()) {
              sink.done();
              return true;
            }
            size_t n = std::min(c->size() - off, size_t{4096});
            served += n;
            return sink.write(c->data() + off, n);
          });
    });
    svr_.Get("/wrong/(.*)", [=, this](const httplib::Request& req, httplib::Response& res) {
      auto* c = find(req, res);
      if (!c) return;
      wrong_ = *c;
      for (size_t i = 0; i < wrong_.size(); i += 1000) wrong_[i] ^= 0x5a;
      serve(&wrong_, res, wrong_.size(), 0);
    });
    svr_.Get("/redir/(.*)", [this](const httplib::Request& req, httplib::Response& res) {
      res.set_redirect("/files/" + req.matches[1].str());
    });
    svr_.Get("/redir-abs/(.*)", [this](const httplib::Request& req, httplib::Response& res) {
      res.set_redirect(redirect_origin + "/files/" + req.matches[1].str());
    });
    svr_.Get("/loop/(.*)", [](const httplib::Request& req, httplib::Response& res) {
      res.set_redirect(req.path);
    });
    svr_.Get("/e404/(.*)", [](const httplib::Request&, httplib::Response& res) {
      res.status = 404;
      res.set_content("Entry not found", "text/plain");
    });
    svr_.Get("/e500/(.*)", [](const httplib::Request&, httplib::Response& res) {
      res.status = 500;
      res.set_content("Internal Error", "text/plain");
    });
    port_ = svr_.bind_to_any_port("127.0.0.1");
    thread_ = std::thread([this] { svr_.listen_after_bind(); });
    for (int i = 0; i < 500 && !svr_.is_running(); ++i)
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  ~FileServerT() {
    svr_.stop();
    thread_.join();
  }
  int port() const { return port_; }
  std::string url(const std::string& route, const char* scheme = "http") const {
    return std::string(scheme) + "://127.0.0.1:" + std::to_string(port_) + "/" + route + "/";
  }
  std::string redirect_origin;  // for /redir-abs/

 private:
  ServerT svr_;
  std::string wrong_;
  int port_ = 0;
  std::thread thread_;
};

using FileServer = FileServerT<httplib::Server>;

// Serves the files of a directory (read into memory) under /pkg/, with Range support, and
// records the paths requested.
class PackageServer {
 public:
  std::map<std::string, std::string> files;
  explicit PackageServer(const std::filesystem::path& dir) {
    for (auto& e : std::filesystem::recursive_directory_iterator(dir))
      if (e.is_regular_file()) files[std::filesystem::relative(e.path(), dir).generic_string()] = read_all(e.path());
    svr_.Get("/pkg/(.*)", [this](const httplib::Request& req, httplib::Response& res) {
      std::string path = req.matches[1];
      {
        std::lock_guard<std::mutex> lock(mu_);
        requested_.push_back(path);
      }
      auto it = files.find(path);
      if (it == files.end()) {
        res.status = 404;
        res.set_content("Entry not found", "text/plain");
        return;
      }
      res.set_content(it->second, "application/octet-stream");
    });
    port_ = svr_.bind_to_any_port("127.0.0.1");
    thread_ = std::thread([this] { svr_.listen_after_bind(); });
    for (int i = 0; i < 500 && !svr_.is_running(); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  ~PackageServer() {
    svr_.stop();
    thread_.join();
  }
  std::string url() const { return "http://127.0.0.1:" + std::to_string(port_) + "/pkg/"; }
  std::set<std::string> take_requested() {
    std::lock_guard<std::mutex> lock(mu_);
    std::set<std::string> s(requested_.begin(), requested_.end());
    requested_.clear();
    return s;
  }

 private:
  httplib::Server svr_;
  std::mutex mu_;
  std::vector<std::string> requested_;
  int port_ = 0;
  std::thread thread_;
};

}  // namespace llmesh::mesh::test
