#!/usr/bin/env python3
"""Writes pretokenizer_cases.json: how each pre-tokenizer regex splits a set of strings,
computed with Python's `regex` module (which knows \\p{..}), for pretokenizer_test.cpp.

Usage: python3 tests/engine/tokenizer/gen_pretokenizer_cases.py \\
         > tests/engine/tokenizer/pretokenizer_cases.json
Avoids characters where engines disagree (U+0085/U+FEFF/U+001C..U+001F as spaces, U+017F and
U+212A under (?i), code points newer than Unicode 14).
"""
import json
import random
import sys

import regex

C = r"'s|'t|'re|'ve|'m|'ll|'d"
U = r"[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]"
L = r"[\p{Ll}\p{Lm}\p{Lo}\p{M}]"
REGEXES = {
    "gpt2": C + r"| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+",
    "llama3": r"(?i:" + C + r")|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+",
    "qwen2": r"(?i:" + C + r")|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+",
    "gpt-4o": rf"[^\r\n\p{{L}}\p{{N}}]?{U}*{L}+(?i:{C})?|[^\r\n\p{{L}}\p{{N}}]?{U}+{L}*(?i:{C})?|\p{{N}}{{1,3}}| ?[^\s\p{{L}}\p{{N}}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+",
    "tekken": rf"[^\r\n\p{{L}}\p{{N}}]?{U}*{L}+|[^\r\n\p{{L}}\p{{N}}]?{U}+{L}*|\p{{N}}| ?[^\s\p{{L}}\p{{N}}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+",
}


def split(pattern: str, text: str) -> list:
    """Matches and the gaps between them, in order (Hugging Face's "Isolated" split)."""
    out, pos = [], 0
    for m in regex.finditer(pattern, text):
        if m.start() > pos:
            out.append(text[pos:m.start()])
        if m.end() > m.start():
            out.append(m.group())
        pos = m.end()
    if pos < len(text):
        out.append(text[pos:])
    return out


def split_digits_then_gpt2(text: str) -> list:
    out = []
    for part in split(r"\p{N}", text):
        out.extend(split(REGEXES["gpt2"], part))
    return out


STRINGS = [
    "Hello world", " Hello world", "Hello, world!", "hello   world", "a\tb", "a\nb", "a \n b",
    "  \n\n  x", "x  ", "   ", "\n", "\r\n\r\n", " \r\n ", "line1\r\nline2\r\n", "\t\tindented",
    "I'm", "I'M", "you're", "YOU'RE", "we've", "she'll", "SHE'LL", "he'd", "don'T", "'s", "''s",
    " 'll", "'x", "O'Neil's", "rock'n'roll", "y'all'd've", "it's 5 o'clock",
    "0", "42", "1234", "1234567", "3.14159", "1,000,000", " 123", "  456", "a1b2c3", "x=1;y=22",
    "٣٤٥", "१२३", "½¼", "Ⅻ", "①②", "99 bottles",
    "HTTPServer", "ABCdef", "abcDEF", "McDonald's", "HELLO'S", "camelCaseName", "snake_case",
    "x/y\n/", "a//b", "path/to/file\n", "!!!", "...", "?!\n\n", " (x)", "[a]", "{b}", "<c>",
    "é", "e\u0301", "e\u0301\u0301x", "\u0301a", " \u0301", "naïve café", "Straße", "Ærø",
    "नमस्ते दुनिया", "हिन्दी", "தமிழ்", "ภาษาไทย", "Tiếng Việt", "مرحبا بالعالم", "שלום",
    "你好世界", "我爱北京。", "こんにちは", "カタカナ", "안녕하세요", "ｆｕｌｌ", "ＡＢＣ１２３",
    "🦙", "🦙🦙 x", "👍🏽", "👨‍👩‍👧", "🇺🇸", "❤️", "★☆", "→←", "∑∫", "€£¥",
    "def f(x):\n    return x\n", "int main() {\n  return 0;\n}", "a != b && c", "x <<= 2;",
    "SELECT * FROM t;", "<div>x</div>", "{\"k\": [1, 2]}", "    \n    \n", "\t\n\t\n",
    "\u00a0nbsp", "a\u2003b", "x\u3000y", "\u2028", "\x0b\x0c", "\x00\x01\x02", "\x7f",
    "ǅungla", "ʰa", "ǅǅ", "ⅰⅱ",
]


def main() -> None:
    random.seed(11)
    pieces = ["Hello", " world", "你好", "🦙", " 123", "\n", "\t", "  ", "'s", "'LL", "!?", "مرحبا",
              "नमस्ते", "x=1", "{}", " 🚀", "Ünï", "4567", "—", "é", "e\u0301", "\r\n", "...", "/",
              "ABC", "aBc", "ǅ", " ", "1"]
    strings = list(STRINGS)
    for _ in range(80):
        strings.append("".join(random.choice(pieces) for _ in range(random.randint(1, 9))))
    cases = []
    for s in strings:
        for kind, pattern in REGEXES.items():
            cases.append({"kind": kind, "text": s, "pieces": split(pattern, s)})
        cases.append({"kind": "gpt2-split-digits", "text": s, "pieces": split_digits_then_gpt2(s)})
    json.dump(cases, sys.stdout, ensure_ascii=False, indent=0)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
