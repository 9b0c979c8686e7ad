// Python str operations on UTF-8 text, as the string methods and filters need them.
// Case mapping covers ASCII, Latin-1/Extended-A, Greek, Cyrillic and fullwidth Latin.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "template/jinja_value.h"

namespace llmesh::api::jinja {

// str.strip/lstrip/rstrip; `chars` null means whitespace.
std::string py_strip(const std::string& s, const std::string* chars, bool left, bool right);
std::vector<std::string> py_split_whitespace(const std::string& s, int64_t maxsplit, bool from_right);
std::vector<std::string> py_split(const std::string& s, const std::string& sep, int64_t maxsplit, bool from_right);
std::vector<std::string> py_splitlines(const std::string& s, bool keepends);
uint32_t to_upper_cp(uint32_t c);
uint32_t to_lower_cp(uint32_t c);
bool is_cased(uint32_t c);
std::string py_upper(const std::string& s);
std::string py_lower(const std::string& s);
std::string py_title(const std::string& s);       // str.title()
std::string py_capitalize(const std::string& s);  // str.capitalize()
std::string py_replace(const std::string& s, const std::string& old, const std::string& with, int64_t count);
// "...".format(*args, **kwargs)
std::string brace_format(Renderer& r, const std::string& fmt, const CallArgs& a);

}  // namespace llmesh::api::jinja
