#include "template/chat_template.h"

#include "template/jinja_builtins.h"
#include "template/jinja_eval.h"
#include "template/jinja_parser.h"

namespace llmesh::api {

namespace {

// The fallback for models without a template. Content may be a string or OpenAI content
// parts (their text parts are concatenated).
constexpr const char* kChatMLSource =
    "{%- for message in messages -%}\n"
    "{{- '<|im_start|>' + message.role + '\\n' -}}\n"
    "{%- if message.content is string -%}\n"
    "{{- message.content -}}\n"
    "{%- elif message.content is iterable -%}\n"
    "{%- for part in message.content if part.type == 'text' -%}{{- part.text -}}{%- endfor -%}\n"
    "{%- endif -%}\n"
    "{{- '<|im_end|>\\n' -}}\n"
    "{%- endfor -%}\n"
    "{%- if add_generation_prompt -%}\n"
    "{{- '<|im_start|>assistant\\n' -}}\n"
    "{%- endif -%}\n";

std::string describe(const std::string& name, const jinja::JinjaError& e, const char* stage) {
  std::string msg = "chat template '" + name + "'";
  if (e.line > 0) msg += ", line " + std::to_string(e.line) + ", column " + std::to_string(e.column);
  msg += ": ";
  msg += stage;
  msg += e.what();
  return msg;
}

}  // namespace

struct ChatTemplate::Impl {
  std::string source, name;
  std::unique_ptr<jinja::Program> program;
};

ChatTemplate ChatTemplate::parse(const std::string& source, const std::string& name) {
  auto impl = std::make_shared<Impl>();
  impl->source = source;
  impl->name = name;
  try {
    impl->program = jinja::parse_template(source);
  } catch (const jinja::JinjaError& e) {
    throw TemplateError(describe(name, e, "syntax error: "));
  }
  ChatTemplate t;
  t.impl_ = std::move(impl);
  return t;
}

ChatTemplate ChatTemplate::chatml() {
  static const ChatTemplate cached = parse(kChatMLSource, "chatml");
  return cached;
}

std::string ChatTemplate::render(const ChatInputs& in) const {
  jinja::Renderer r(*impl_->program, jinja::RenderLimits{});
  try {
    jinja::install_globals(r);
    // The variables Hugging Face's apply_chat_template passes.
    r.set_global("messages", jinja::Value::from_json(in.messages));
    r.set_global("tools", in.tools.is_null() ? jinja::Value::none() : jinja::Value::from_json(in.tools));
    r.set_global("add_generation_prompt", jinja::Value::boolean(in.add_generation_prompt));
    r.set_global("bos_token", jinja::Value::string(in.bos_token));
    r.set_global("eos_token", jinja::Value::string(in.eos_token));
    if (in.extra.is_object())
      for (auto it = in.extra.begin(); it != in.extra.end(); ++it)
        r.set_global(it.key(), jinja::Value::from_json(it.value()));
    return r.render();
  } catch (const jinja::TemplateRaised& e) {
    throw TemplateError(describe(impl_->name, e, "raise_exception: "));
  } catch (const jinja::JinjaError& e) {
    throw TemplateError(describe(impl_->name, e, ""));
  }
}

const std::string& ChatTemplate::source() const { return impl_->source; }
const std::string& ChatTemplate::name() const { return impl_->name; }

}  // namespace llmesh::api
