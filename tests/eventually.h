// Polling for a condition that no callback signals, with a deadline (a condition, never a
// sleep of a guessed length: tests must not depend on timing).
#pragma once
#include <chrono>
#include <thread>

namespace llmesh::test {

// True once pred() is; false when `timeout` passed first. Polls every `poll`.
template <typename P>
bool eventually(P pred, std::chrono::milliseconds timeout = std::chrono::milliseconds(8000),
                std::chrono::milliseconds poll = std::chrono::milliseconds(10)) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!pred()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(poll);
  }
  return true;
}

}  // namespace llmesh::test
