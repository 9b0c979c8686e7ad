#include "routing/stream_upstream.h"

#include <fmt/format.h>

#include <algorithm>
#include <atomic>
#include <mutex>

#include "routing/request_format.h"

namespace llmesh::mesh {

using routing::describe_reset;

namespace {

std::string why_ended(const Stream& s, Stream::Status st) {
  switch (st) {
    case Stream::Status::RESET: {
      auto code = s.reset_code();
      return "stream reset: " + describe_reset(code.value_or(0));
    }
    case Stream::Status::CLOSED: return "connection closed";
    case Stream::Status::TIMEOUT: return "timed out";
    case Stream::Status::END: return "ended without an answer";
    case Stream::Status::TOO_LARGE: return "message too large";
    case Stream::Status::ENDED: return "stream already ended";
    case Stream::Status::OK: break;
  }
  return "";
}

class StreamResponse : public api::UpstreamResponse {
 public:
  explicit StreamResponse(std::shared_ptr<Stream> s) : stream_(std::move(s)) {}
  ~StreamResponse() override {
    // Abandoned before the end: the serving node must stop (reset is a no-op once finished).
    if (!stream_->finished()) stream_->reset(ResetCode::CANCEL);
  }

  bool read(std::string& chunk) override {
    for (;;) {
      if (cancelled_) return false;
      auto r = stream_->read();
      switch (r.status) {
        case Stream::Status::OK:
          if (r.message.empty()) continue;
          chunk.assign(reinterpret_cast<const char*>(r.message.data()), r.message.size());
          return true;
        case Stream::Status::END:
          return false;
        default: {
          std::lock_guard lk(m_);
          if (!cancelled_ && error_.empty()) error_ = why_ended(*stream_, r.status);
          return false;
        }
      }
    }
  }
  void cancel() override {
    cancelled_ = true;
    stream_->reset(ResetCode::CANCEL);
  }
  std::string failed() const override {
    std::lock_guard lk(m_);
    return error_;
  }

 private:
  std::shared_ptr<Stream> stream_;
  std::atomic<bool> cancelled_{false};
  mutable std::mutex m_;
  std::string error_;
};

}  // namespace

StreamUpstream::StreamUpstream(Transport& transport, NodeId peer, std::string describe, StreamUpstreamOptions opt)
    : transport_(transport), peer_(peer), describe_(std::move(describe)), opt_(opt) {}

std::unique_ptr<api::UpstreamResponse> StreamUpstream::send(const api::ProxiedRequest& req) {
  routing::RequestHead head;
  head.method = req.method;
  head.path = req.path;
  head.content_type = req.content_type.substr(0, routing::kMaxContentType);
  head.headers = req.headers;
  head.body_length = req.body.size();
  head.origin = transport_.id().hex();
  std::vector<uint8_t> header;
  try {
    header = routing::encode_request_head(head);
  } catch (const routing::FormatError& e) {
    throw api::UpstreamUnavailable(e.what());
  }
  auto stream = transport_.open_stream(peer_, std::move(header));
  if (!stream) throw api::UpstreamUnavailable("not connected");
  auto fail = [&](const std::string& why) {
    stream->reset(ResetCode::CANCEL);
    throw api::UpstreamUnavailable(why);
  };

  const auto* body = reinterpret_cast<const uint8_t*>(req.body.data());
  for (size_t off = 0; off < req.body.size(); off += routing::kMaxBodyMessage) {
    size_t n = std::min(routing::kMaxBodyMessage, req.body.size() - off);
    auto st = stream->write(std::span<const uint8_t>(body + off, n), opt_.write_timeout);
    if (st != Stream::Status::OK) fail("sending the request: " + why_ended(*stream, st));
  }
  stream->end();

  // The head; interim heads (1xx) say the node is still working and restart the wait.
  for (;;) {
    auto r = stream->read(opt_.head_timeout);
    if (r.status == Stream::Status::TIMEOUT)
      fail(fmt::format("no answer within {} s", opt_.head_timeout.count() / 1000.0));
    if (r.status != Stream::Status::OK) fail(why_ended(*stream, r.status));
    routing::ResponseHead h;
    try {
      h = routing::decode_response_head(r.message);
    } catch (const routing::FormatError& e) {
      stream->reset(ResetCode::PROTOCOL_ERROR);
      throw api::UpstreamUnavailable(e.what());
    }
    if (h.interim()) continue;
    auto resp = std::make_unique<StreamResponse>(stream);
    resp->status = static_cast<int>(h.status);
    resp->content_type = h.content_type;
    return resp;
  }
}

}  // namespace llmesh::mesh
