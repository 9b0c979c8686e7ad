#include "transport/stream.h"

#include <algorithm>

#include "transport/connection.h"
#include "transport/frame.h"

namespace llmesh::mesh {

namespace {
constexpr size_t kMaxQueuedMessages = 4096;  // bounds a flood of empty messages
}

Stream::Stream(std::weak_ptr<PeerConnection> conn, NodeId peer, uint32_t id, bool local, std::vector<uint8_t> header,
               uint32_t send_window, uint32_t recv_window, uint32_t max_payload)
    : conn_(std::move(conn)),
      peer_(peer),
      id_(id),
      local_(local),
      header_(std::move(header)),
      send_window_(send_window),
      max_payload_(max_payload),
      recv_allowed_(recv_window),
      send_credit_(send_window) {}

Stream::~Stream() = default;

void Stream::post_frames(std::vector<uint8_t> bytes) {
  if (auto c = conn_.lock()) c->send_from_any_thread(std::move(bytes), id_);
}

Stream::ReadResult Stream::read(std::chrono::milliseconds timeout) {
  std::unique_lock lk(m_);
  auto ready = [&] { return !inbox_.empty() || recv_ended_ || reset_ || closed_; };
  if (timeout.count() < 0)
    cv_.wait(lk, ready);
  else if (!cv_.wait_for(lk, timeout, ready))
    return {Status::TIMEOUT, {}};
  if (!inbox_.empty()) {
    ReadResult r{Status::OK, std::move(inbox_.front())};
    inbox_.pop_front();
    // The bytes are out of our buffers: the peer may send as many again.
    if (!r.message.empty() && !reset_ && !closed_) {
      recv_allowed_ += r.message.size();
      std::vector<uint8_t> credit;
      put_u32(credit, static_cast<uint32_t>(r.message.size()));
      post_frames(encode_frame(FrameType::WINDOW, 0, id_, credit));
    }
    return r;
  }
  if (reset_) return {Status::RESET, {}};
  if (closed_) return {Status::CLOSED, {}};
  return {Status::END, {}};
}

Stream::Status Stream::write(std::span<const uint8_t> message, std::chrono::milliseconds timeout) {
  if (message.size() > send_window_) return Status::TOO_LARGE;
  std::unique_lock lk(m_);
  auto ready = [&] { return send_credit_ >= message.size() || reset_ || closed_ || send_ended_; };
  if (timeout.count() < 0)
    cv_.wait(lk, ready);
  else if (!cv_.wait_for(lk, timeout, ready))
    return Status::TIMEOUT;
  if (reset_) return Status::RESET;
  if (closed_) return Status::CLOSED;
  if (send_ended_) return Status::ENDED;
  send_credit_ -= message.size();
  std::vector<uint8_t> frames;
  size_t off = 0;
  do {
    size_t n = std::min<size_t>(max_payload_, message.size() - off);
    bool last = off + n == message.size();
    encode_frame(frames, FrameType::DATA, last ? 0 : frame_flags::MORE, id_, message.subspan(off, n));
    off += n;
  } while (off < message.size());
  post_frames(std::move(frames));
  return Status::OK;
}

void Stream::end() {
  std::lock_guard lk(m_);
  if (send_ended_ || reset_ || closed_) return;
  send_ended_ = true;
  post_frames(encode_frame(FrameType::END, 0, id_, {}));
  cv_.notify_all();
}

void Stream::reset(ResetCode code) {
  std::lock_guard lk(m_);
  if (reset_ || closed_ || (send_ended_ && recv_ended_)) return;
  reset_ = static_cast<uint32_t>(code);
  inbox_.clear();
  partial_.clear();
  std::vector<uint8_t> payload;
  put_u32(payload, static_cast<uint32_t>(code));
  post_frames(encode_frame(FrameType::RESET, 0, id_, payload));
  cv_.notify_all();
}

std::optional<uint32_t> Stream::reset_code() const {
  std::lock_guard lk(m_);
  return reset_;
}

bool Stream::finished() const {
  std::lock_guard lk(m_);
  return done_locked();
}

bool Stream::done_locked() const { return reset_ || closed_ || (send_ended_ && recv_ended_); }

bool Stream::done() const { return finished(); }

Stream::Verdict Stream::on_data(std::span<const uint8_t> bytes, bool more) {
  std::lock_guard lk(m_);
  if (reset_ || closed_) return Verdict::OK;  // in flight when we reset: dropped
  if (recv_ended_) return Verdict::RESET_PROTOCOL;
  if (bytes.size() > recv_allowed_) return Verdict::FLOW_CONTROL;
  recv_allowed_ -= bytes.size();
  partial_.insert(partial_.end(), bytes.begin(), bytes.end());
  if (!more) {
    if (inbox_.size() >= kMaxQueuedMessages) return Verdict::RESET_TOO_MANY;
    inbox_.push_back(std::move(partial_));
    partial_.clear();
    cv_.notify_all();
  }
  return Verdict::OK;
}

Stream::Verdict Stream::on_end() {
  std::lock_guard lk(m_);
  if (reset_ || closed_) return Verdict::OK;
  if (recv_ended_ || !partial_.empty()) return Verdict::RESET_PROTOCOL;  // END inside a message
  recv_ended_ = true;
  cv_.notify_all();
  return Verdict::OK;
}

void Stream::on_window(uint32_t credit) {
  std::lock_guard lk(m_);
  // Never more than the window in flight: a peer granting more is only trusted up to it.
  send_credit_ = std::min<uint64_t>(send_credit_ + credit, send_window_);
  cv_.notify_all();
}

void Stream::on_reset(uint32_t code) {
  std::lock_guard lk(m_);
  if (reset_ || closed_) return;
  reset_ = code;
  inbox_.clear();
  partial_.clear();
  cv_.notify_all();
}

void Stream::on_closed() {
  std::lock_guard lk(m_);
  closed_ = true;
  cv_.notify_all();
}

}  // namespace llmesh::mesh
