#include <chrono>
#include <functional>
#include <random>
#include <thread>

#include "output/output_parser.h"

namespace llmesh::api {

namespace {
// One generator per thread (no locking), seeded from the OS, the clock and the thread, so
// ids differ across threads and processes even where random_device is deterministic.
std::mt19937_64& id_generator() {
  thread_local std::mt19937_64 generator = [] {
    std::random_device device;
    const auto now = std::chrono::high_resolution_clock::now().time_since_epoch().count();
    const auto thread = std::hash<std::thread::id>{}(std::this_thread::get_id());
    std::seed_seq seed{device(), device(), device(), device(),
                       static_cast<unsigned>(now), static_cast<unsigned>(now >> 32),
                       static_cast<unsigned>(thread), static_cast<unsigned>(thread >> 32)};
    return std::mt19937_64(seed);
  }();
  return generator;
}
}  // namespace

std::string random_call_id(const char* prefix) {
  static constexpr char kAlphabet[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
  std::uniform_int_distribution<int> pick(0, sizeof(kAlphabet) - 2);
  std::string id = prefix ? prefix : "";
  auto& generator = id_generator();
  for (int i = 0; i < 24; ++i) id += kAlphabet[pick(generator)];
  return id;
}

}  // namespace llmesh::api
