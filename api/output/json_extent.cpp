#include "output/json_extent.h"

namespace llmesh::api {

namespace {
bool is_json_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }
}  // namespace

void JsonExtentScanner::reset(std::string_view openers) {
  *this = JsonExtentScanner();
  openers_ = openers;
}

JsonExtentScanner::State JsonExtentScanner::scan(std::string_view text) {
  for (; state_ == State::Open && scanned_ < text.size(); ++scanned_) {
    const char c = text[scanned_];
    if (!started_) {
      if (is_json_space(c)) continue;
      if (openers_.find(c) == std::string_view::npos) {
        state_ = State::Invalid;
        end_ = scanned_;
        break;
      }
      started_ = true;
      begin_ = scanned_;
    }
    if (in_string_) {
      if (escape_) escape_ = false;
      else if (c == '\\') escape_ = true;
      else if (c == '"') in_string_ = false;
      continue;
    }
    if ((expect_key_ || expect_object_) && !is_json_space(c)) {
      const bool ok = expect_key_ ? (c == '"' || c == '}') : (c == '{' || c == ']');
      expect_key_ = expect_object_ = false;
      if (!ok) {
        state_ = State::Invalid;
        end_ = scanned_;
        break;
      }
    }
    switch (c) {
      case '"': in_string_ = true; break;
      case '{':
      case '[':
        if (++depth_ > kMaxJsonDepth) {
          state_ = State::Invalid;
          end_ = scanned_;
        }
        expect_key_ = c == '{';
        expect_object_ = c == '[' && depth_ == 1;
        break;
      case '}':
      case ']':
        if (--depth_ == 0) {
          state_ = State::Complete;
          end_ = scanned_ + 1;
        }
        break;
      default: break;
    }
  }
  return state_;
}

bool json_depth_within(std::string_view text, int max_depth) {
  int depth = 0;
  bool in_string = false, escape = false;
  for (char c : text) {
    if (in_string) {
      if (escape) escape = false;
      else if (c == '\\') escape = true;
      else if (c == '"') in_string = false;
    } else if (c == '"') {
      in_string = true;
    } else if (c == '{' || c == '[') {
      if (++depth > max_depth) return false;
    } else if (c == '}' || c == ']') {
      --depth;
    }
  }
  return true;
}

}  // namespace llmesh::api
