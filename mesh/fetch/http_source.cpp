// HttpSource over cpp-httplib (Debian's build has CPPHTTPLIB_OPENSSL_SUPPORT, so https:// works
// through the same client). Redirects are followed here, not by httplib, to bound them, refuse
// https -> http and keep the bearer token to the base URL's own host.
#include <httplib.h>

#include <cctype>
#include <cstdlib>
#include <exception>

#include <fmt/format.h>

#include "fetch/fetch_source.h"

namespace llmesh::mesh {

namespace {

struct Url {
  std::string scheme;  // "http" or "https"
  std::string host;    // as written (IPv6 in brackets)
  int port = 0;
  std::string target;  // path and query, starts with '/'
  std::string origin() const { return fmt::format("{}://{}:{}", scheme, host, port); }
};

Url parse_url(const std::string& url) {
  Url u;
  size_t p = url.find("://");
  if (p == std::string::npos) throw FetchError(fmt::format("bad URL \"{}\": no scheme", url));
  u.scheme = url.substr(0, p);
  for (char& c : u.scheme) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (u.scheme != "http" && u.scheme != "https")
    throw FetchError(fmt::format("bad URL \"{}\": only http:// and https:// are fetched", url));
  size_t host_start = p + 3;
  size_t path_start = url.find_first_of("/?#", host_start);
  std::string authority = url.substr(host_start, path_start == std::string::npos
                                                     ? std::string::npos
                                                     : path_start - host_start);
  if (authority.find('@') != std::string::npos)
    throw FetchError(fmt::format("bad URL \"{}\": user info is not supported", url));
  u.port = u.scheme == "https" ? 443 : 80;
  size_t colon = authority.rfind(':');
  size_t bracket = authority.rfind(']');
  if (colon != std::string::npos && (bracket == std::string::npos || colon > bracket)) {
    std::string port = authority.substr(colon + 1);
    authority.resize(colon);
    if (port.empty() || port.size() > 5 ||
        port.find_first_not_of("0123456789") != std::string::npos || std::stoi(port) == 0 ||
        std::stoi(port) > 65535)
      throw FetchError(fmt::format("bad URL \"{}\": bad port", url));
    u.port = std::stoi(port);
  }
  if (authority.empty()) throw FetchError(fmt::format("bad URL \"{}\": no host", url));
  u.host = authority;
  u.target = path_start == std::string::npos ? "/" : url.substr(path_start);
  if (u.target[0] != '/') u.target = "/" + u.target;
  if (size_t hash = u.target.find('#'); hash != std::string::npos) u.target.resize(hash);
  return u;
}

// Resolves a Location header against the URL it came from.
Url resolve_location(const Url& from, const std::string& loc) {
  if (loc.find("://") != std::string::npos && loc.find("://") < loc.find_first_of("/?"))
    return parse_url(loc);
  Url u = from;
  if (loc.rfind("//", 0) == 0) return parse_url(from.scheme + ":" + loc);
  if (!loc.empty() && loc[0] == '/') {
    u.target = loc;
  } else {
    std::string base = from.target.substr(0, from.target.find('?'));
    base = base.substr(0, base.rfind('/') + 1);
    u.target = base + loc;
  }
  return u;
}

std::string percent_encode_path(const std::string& path) {
  static const char* hex = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : path) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~' || c == '/') {
      out.push_back(static_cast<char>(c));
    } else {
      out.push_back('%');
      out.push_back(hex[c >> 4]);
      out.push_back(hex[c & 15]);
    }
  }
  return out;
}

// "bytes START-END/TOTAL" -> START, or -1.
long long content_range_start(const std::string& v) {
  size_t p = v.find("bytes");
  if (p == std::string::npos) return -1;
  p += 5;
  while (p < v.size() && v[p] == ' ') ++p;
  size_t dash = v.find('-', p);
  if (dash == std::string::npos || dash == p) return -1;
  std::string num = v.substr(p, dash - p);
  if (num.find_first_not_of("0123456789") != std::string::npos || num.size() > 19) return -1;
  return std::stoll(num);
}

std::string describe_error(httplib::Error e) {
  switch (e) {
    case httplib::Error::Connection: return "cannot connect";
    case httplib::Error::ConnectionTimeout: return "connection timed out";
    case httplib::Error::Read: return "connection dropped or timed out while reading";
    case httplib::Error::Write: return "connection dropped while sending the request";
    case httplib::Error::SSLConnection: return "TLS handshake failed";
    case httplib::Error::SSLLoadingCerts: return "cannot load the CA certificates";
    case httplib::Error::SSLServerVerification:
      return "certificate verification failed (the server's certificate is not trusted)";
    default: return httplib::to_string(e);
  }
}

std::string shown_url(const Url& u) {
  // Signed CDN URLs carry credentials in the query: never print it.
  std::string path = u.target.substr(0, u.target.find('?'));
  bool default_port = (u.scheme == "https" && u.port == 443) || (u.scheme == "http" && u.port == 80);
  return default_port ? fmt::format("{}://{}{}", u.scheme, u.host, path)
                      : fmt::format("{}://{}:{}{}", u.scheme, u.host, u.port, path);
}

}  // namespace

HttpSource::HttpSource(std::string base_url, HttpSourceOptions options)
    : base_url_(std::move(base_url)), options_(std::move(options)) {
  Url u = parse_url(base_url_);  // throws on a bad URL
  if (u.target.find('?') != std::string::npos)
    throw FetchError(fmt::format("bad base URL \"{}\": a query is not supported", base_url_));
  if (base_url_.back() != '/') base_url_.push_back('/');
  if (options_.bearer_token.empty() && options_.token_from_env) {
    if (const char* t = std::getenv("HF_TOKEN"); t && *t) options_.bearer_token = t;
  }
}

std::string HttpSource::describe() const { return base_url_; }

void HttpSource::read(const std::string& path, uint64_t offset, uint64_t length,
                      const ChunkSink& sink) {
  validate_artifact_path(path);
  const Url base = parse_url(base_url_);
  Url url = parse_url(base_url_ + percent_encode_path(path));
  const Url start = url;

  for (int hop = 0;; ++hop) {
    std::unique_ptr<httplib::Client> cli;
    try {
      cli = std::make_unique<httplib::Client>(url.origin());
    } catch (const std::exception& e) {
      throw FetchError(fmt::format("{}: {}", shown_url(url), e.what()));
    }
    if (!cli->is_valid())
      throw FetchError(fmt::format("{}: cannot make an {} client", shown_url(url), url.scheme));
    cli->set_follow_location(false);
    cli->set_decompress(false);
    cli->set_keep_alive(false);
    cli->set_connection_timeout(options_.connect_timeout);
    cli->set_read_timeout(options_.read_timeout);
    if (url.scheme == "https") {
      cli->enable_server_certificate_verification(true);
      if (!options_.ca_cert_file.empty()) cli->set_ca_cert_path(options_.ca_cert_file);
    }

    httplib::Headers headers{{"User-Agent", options_.user_agent},
                             {"Accept-Encoding", "identity"}};
    if (options_.bounded_ranges && length > 0)
      headers.emplace("Range", fmt::format("bytes={}-{}", offset, offset + length - 1));
    else if (offset > 0)
      headers.emplace("Range", fmt::format("bytes={}-", offset));
    if (!options_.bearer_token.empty() && url.scheme == "https" && url.origin() == base.origin())
      headers.emplace("Authorization", "Bearer " + options_.bearer_token);

    int status = 0;
    std::string location;
    std::string error_body;
    uint64_t skip = 0;  // bytes of a 200 answer that the caller already has
    uint64_t delivered = 0;
    std::exception_ptr sink_error;
    std::string protocol_error;

    auto on_response = [&](const httplib::Response& r) -> bool {
      status = r.status;
      if (status >= 300 && status < 400) {
        location = r.get_header_value("Location");
        return true;
      }
      if (status == 206) {
        long long start = content_range_start(r.get_header_value("Content-Range"));
        if (start < 0 || static_cast<uint64_t>(start) != offset) {
          protocol_error = fmt::format("answered 206 with Content-Range \"{}\" to Range bytes={}-",
                                       r.get_header_value("Content-Range"), offset);
          return false;
        }
      } else if (status == 200) {
        skip = offset;
      }
      return true;
    };
    auto on_content = [&](const char* data, size_t n) -> bool {
      if (status == 200 || status == 206) {
        if (skip > 0) {
          size_t s = static_cast<size_t>(std::min<uint64_t>(skip, n));
          skip -= s;
          data += s;
          n -= s;
          if (n == 0) return true;
        }
        try {
          sink(data, n);
        } catch (...) {
          sink_error = std::current_exception();
          return false;
        }
        delivered += n;
      } else if (error_body.size() < 300) {
        error_body.append(data, std::min<size_t>(n, 300 - error_body.size()));
      }
      return true;
    };

    httplib::Result res = cli->Get(url.target, headers, on_response, on_content);
    if (sink_error) std::rethrow_exception(sink_error);
    if (!protocol_error.empty())
      throw FetchError(fmt::format("{} {}", shown_url(url), protocol_error));
    if (!res) {
      auto err = res.error();
      bool transient = err != httplib::Error::SSLServerVerification &&
                       err != httplib::Error::SSLLoadingCerts;
      std::string what = describe_error(err);
      if (delivered > 0)
        throw FetchError(fmt::format("{}: connection failed after {} bytes: {}", shown_url(url),
                                     offset + delivered, what),
                         transient);
      throw FetchError(fmt::format("{}: {}", shown_url(url), what), transient);
    }

    if (status >= 300 && status < 400 && status != 304) {
      if (location.empty())
        throw FetchError(fmt::format("{}: HTTP {} without a Location", shown_url(url), status));
      if (hop >= options_.max_redirects)
        throw FetchError(fmt::format("{}: more than {} redirects", shown_url(start),
                                     options_.max_redirects));
      Url next = resolve_location(url, location);
      if (url.scheme == "https" && next.scheme == "http")
        throw FetchError(fmt::format("{}: refusing a redirect from https to http ({})",
                                     shown_url(url), shown_url(next)));
      url = next;
      continue;
    }
    if (status == 200 || status == 206) {
      if (status == 200 && skip > 0)
        return;  // the whole artifact is shorter than offset: the caller sees 0 new bytes
      return;
    }
    if (status == 416)
      return;  // Range not satisfiable: nothing at or after offset; the caller sees 0 bytes
    std::string body;
    for (char c : error_body) body.push_back(std::isprint(static_cast<unsigned char>(c)) ? c : ' ');
    while (!body.empty() && body.back() == ' ') body.pop_back();
    std::string hint;
    if (status == 401 || status == 403)
      hint = options_.bearer_token.empty()
                 ? " (a gated or private repository needs a token: set HF_TOKEN)"
                 : " (the token in HF_TOKEN was refused)";
    throw FetchError(fmt::format("{}: HTTP {}{}{}{}", shown_url(url), status, hint,
                                 body.empty() ? "" : ": ", body),
                     status == 408 || status == 429 || status == 502 || status == 503 ||
                         status == 504);
  }
}

}  // namespace llmesh::mesh
