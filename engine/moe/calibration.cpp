#include "moe/calibration.h"

#include <fstream>
#include <sstream>
#include <stdexcept>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

namespace llmesh::moe {

const std::vector<std::string>& builtin_calibration_texts() {
  static const std::vector<std::string> texts = {
      "Once upon a time, there was a little girl named Lily. She loved to play outside in the park with her dog, "
      "Max. One day, Lily saw a big red ball under a tree. She ran to get it, but Max got there first. They "
      "laughed and played together until the sun went down, and then they walked home happy.",
      "Tom had a small boat. Every morning he went to the lake and looked at the fish. One day the wind was very "
      "strong and the boat began to rock. Tom was scared, but his mom said, \"Hold on tight, we will be fine.\" "
      "Soon the wind stopped and they saw a rainbow over the water.",
      "User: Can you help me plan a birthday party for my son? He is turning seven.\nAssistant: Of course! Pick a "
      "theme he loves, such as dinosaurs or space. Invite a few friends, plan two or three simple games, and "
      "order a cake early. Keep the party to about two hours so nobody gets too tired.",
      "To make a cup of tea, boil fresh water, warm the pot, and add one spoon of tea leaves for each cup. Pour "
      "the water over the leaves and let them steep for three to five minutes. Strain the tea into a cup and "
      "add milk or lemon if you like.",
      "The sun is a star at the center of the solar system. It is about 150 million kilometres from the Earth, "
      "and its light takes a little more than eight minutes to reach us. Plants use sunlight to make food from "
      "water and carbon dioxide, a process called photosynthesis.",
      "def fibonacci(n):\n    \"\"\"Return the first n Fibonacci numbers.\"\"\"\n    a, b = 0, 1\n    out = []\n    "
      "for _ in range(n):\n        out.append(a)\n        a, b = b, a + b\n    return out\n\nprint(fibonacci(10))\n",
      "#include <stdio.h>\n\nint main(void) {\n  int total = 0;\n  for (int i = 1; i <= 100; ++i) total += i;\n  "
      "printf(\"%d\\n\", total);\n  return 0;\n}\n",
      "If a train leaves at 3 pm and travels 120 kilometres at 60 kilometres per hour, it arrives at 5 pm. Twelve "
      "apples shared equally among four children gives each child three apples. The square of nine is "
      "eighty-one, and half of one hundred is fifty.",
      "Dear Sam, thank you for the lovely gift. The book you sent is wonderful and I have already read the first "
      "three chapters. I hope you can visit us in the summer; the garden is full of flowers and the children "
      "would love to see you. With love, Anna.",
      "The little cat was hungry. It looked in the kitchen, but the bowl was empty. Then it saw a bird outside "
      "the window. The cat wanted to play with the bird, but the bird flew away. The cat sat down and waited "
      "for its friend Ben to come home with some milk.",
      "Steps to fix a flat bicycle tyre: remove the wheel, take the tyre off with two levers, find the hole by "
      "pumping some air into the tube and listening, patch it, check the inside of the tyre for glass, and put "
      "everything back together. Pump the tyre to the pressure written on its side.",
      "Question: Why is the sky blue?\nAnswer: Sunlight contains every colour. Air molecules scatter short "
      "blue wavelengths much more than long red ones, so blue light reaches our eyes from every direction of "
      "the sky. At sunset the light travels through more air and the sky turns orange and red.",
      "Ben and Mia went to the beach. They built a big sandcastle with a tall tower. A wave came and knocked the "
      "tower down. Mia was sad, but Ben said, \"Let's build it again, even bigger!\" They worked together and "
      "made the best castle on the beach.",
      "SELECT name, COUNT(*) AS orders FROM customers JOIN orders ON orders.customer_id = customers.id WHERE "
      "orders.created_at > '2024-01-01' GROUP BY name ORDER BY orders DESC LIMIT 10;",
      "The history of the bicycle began in the early nineteenth century with a wooden machine pushed along by "
      "the feet. Pedals came later, then the chain drive and air-filled tyres. Today bicycles are used all over "
      "the world for transport, sport and fun.",
      "One day, a big bear found a jar of honey in the forest. He wanted to eat it all by himself. But then he "
      "saw a small rabbit who looked very hungry. The bear smiled and shared the honey with the rabbit. They "
      "became good friends and played together every day.",
  };
  return texts;
}

std::vector<std::string> read_prompts_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error(fmt::format("cannot read the prompts file {}", path));
  std::vector<std::string> out;
  const bool jsonl = path.size() >= 6 && path.compare(path.size() - 6, 6, ".jsonl") == 0;
  std::string line, para;
  int lineno = 0;
  while (std::getline(in, line)) {
    ++lineno;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (jsonl) {
      if (line.find_first_not_of(" \t") == std::string::npos) continue;
      auto j = nlohmann::json::parse(line, nullptr, false);
      std::string text;
      if (j.is_object() && j.contains("text") && j["text"].is_string()) text = j["text"];
      else if (j.is_object() && j.contains("prompt") && j["prompt"].is_string()) text = j["prompt"];
      else
        throw std::runtime_error(fmt::format("{}:{}: expected a JSON object with a \"text\" or \"prompt\" string",
                                             path, lineno));
      if (!text.empty()) out.push_back(std::move(text));
      continue;
    }
    if (line.find_first_not_of(" \t") == std::string::npos) {
      if (!para.empty()) out.push_back(std::move(para));
      para.clear();
    } else {
      if (!para.empty()) para += '\n';
      para += line;
    }
  }
  if (!para.empty()) out.push_back(std::move(para));
  if (out.empty()) throw std::runtime_error(fmt::format("the prompts file {} holds no prompt", path));
  return out;
}

int64_t CalibrationSet::tokens() const {
  int64_t n = 0;
  for (const auto& s : sequences) n += static_cast<int64_t>(s.size());
  return n;
}

CalibrationSet tokenize_calibration(const Tokenizer& tok, const std::vector<std::string>& texts, int max_seq_tokens,
                                    int64_t max_tokens) {
  if (max_seq_tokens < 2) throw std::invalid_argument("calibration sequences need at least 2 tokens");
  CalibrationSet set;
  int64_t total = 0;
  for (const auto& text : texts) {
    std::vector<int32_t> ids = tok.encode(text, /*add_special=*/false, /*parse_special=*/false);
    const bool bos = tok.add_bos() && tok.bos() >= 0;
    const size_t body = static_cast<size_t>(max_seq_tokens - (bos ? 1 : 0));
    for (size_t at = 0; at < ids.size() && total + (bos ? 1 : 0) < max_tokens; at += body) {
      std::vector<int32_t> seq;
      if (bos) seq.push_back(tok.bos());
      const size_t n = std::min({body, ids.size() - at, static_cast<size_t>(max_tokens - total - (bos ? 1 : 0))});
      seq.insert(seq.end(), ids.begin() + static_cast<ptrdiff_t>(at), ids.begin() + static_cast<ptrdiff_t>(at + n));
      if (seq.size() < 2) continue;
      total += static_cast<int64_t>(seq.size());
      set.sequences.push_back(std::move(seq));
    }
    if (total >= max_tokens) break;
  }
  return set;
}

std::pair<CalibrationSet, CalibrationSet> split_calibration(const CalibrationSet& all) {
  if (all.sequences.size() < 2) return {all, all};
  CalibrationSet a, b;
  for (size_t i = 0; i < all.sequences.size(); ++i) (i % 2 == 0 ? a : b).sequences.push_back(all.sequences[i]);
  return {std::move(a), std::move(b)};
}

}  // namespace llmesh::moe
