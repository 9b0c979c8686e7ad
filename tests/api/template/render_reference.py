#!/usr/bin/env python3
"""Reference renderer for llmesh's chat-template tests: renders Jinja templates with
Python's jinja2 set up the way Hugging Face transformers' apply_chat_template does
(ImmutableSandboxedEnvironment, trim_blocks, lstrip_blocks, loopcontrols, the generation
tag, raise_exception, strftime_now, and a json.dumps-based tojson without HTML escaping).

Input (stdin or the file named by argv[1]): a JSON list of cases
  {"template": "...", "vars": {...}}
Output (stdout): a JSON list, one entry per case:
  {"ok": true, "output": "..."} or {"ok": false, "error": "..."}
"""
import json
import sys
from datetime import datetime

import jinja2
from jinja2 import nodes
from jinja2.ext import Extension
from jinja2.sandbox import ImmutableSandboxedEnvironment


class GenerationTag(Extension):
    """{% generation %}...{% endgeneration %} renders its body (HF marks assistant spans)."""
    tags = {"generation"}

    def parse(self, parser):
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(["name:endgeneration"], drop_needle=True)
        return nodes.CallBlock(self.call_method("_render", []), [], [], body).set_lineno(lineno)

    def _render(self, caller):
        return caller()


def raise_exception(message):
    raise jinja2.exceptions.TemplateError(message)


def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def strftime_now(fmt):
    return datetime.now().strftime(fmt)


def make_env():
    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[GenerationTag, jinja2.ext.loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    return env


def main():
    src = open(sys.argv[1], encoding="utf-8") if len(sys.argv) > 1 else sys.stdin
    cases = json.load(src)
    env = make_env()
    compiled = {}
    results = []
    for case in cases:
        try:
            text = case["template"]
            if text not in compiled:
                compiled[text] = env.from_string(text)
            out = compiled[text].render(**case.get("vars", {}))
            results.append({"ok": True, "output": out})
        except Exception as e:  # any failure: llmesh must fail too
            results.append({"ok": False, "error": "%s: %s" % (type(e).__name__, e)})
    json.dump(results, sys.stdout, ensure_ascii=False)


if __name__ == "__main__":
    main()
