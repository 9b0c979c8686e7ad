// llmesh_fault_relay: the fault-injecting TCP relay as a program, for tests in any language.
//
//   llmesh_fault_relay [--bind ADDR] [--control PORT] [--seed N] [--link NAME:LISTEN:HOST:PORT]...
//
// Prints "control PORT" (when --control is given) and "link NAME port P" for each --link, then
// reads commands from stdin, one per line, answering each with one line ("ok ..." or
// "error: reason"). The same commands are served on the control port. Exits on `shutdown`,
// SIGINT/SIGTERM, or end of stdin when there is no control port.
// Lives in its own directory so the test glob (tests/<area>/<part>/*.cpp) never links this main
// into llmesh_relay_tests. Protocol: docs/testing-mesh.md.
#include <poll.h>
#include <unistd.h>

#include <csignal>
#include <cstring>
#include <iostream>
#include <string>

#include "../relay.h"

namespace {
volatile std::sig_atomic_t g_stop = 0;
void on_signal(int) { g_stop = 1; }

int usage(const char* argv0) {
  std::cerr << "usage: " << argv0
            << " [--bind ADDR] [--control PORT] [--seed N] [--link NAME:LISTEN_PORT:TARGET_HOST:TARGET_PORT]...\n"
               "Commands on stdin (and on the control port): link add NAME LISTEN_PORT HOST PORT | link del NAME |\n"
               "  link list | fault NAME [up|down|both] latency=MS jitter=MS loss=P rate=BYTES_PER_S stall=MIN-MAX |\n"
               "  cut NAME | reset NAME | blackhole NAME on|off | restore NAME | stats NAME | show NAME | ping |\n"
               "  shutdown\n";
  return 2;
}
}  // namespace

int main(int argc, char** argv) {
  std::string bind = "127.0.0.1";
  int control = -1;
  uint64_t seed = 0;
  std::vector<std::string> links;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::cerr << a << " needs a value\n";
        std::exit(2);
      }
      return argv[++i];
    };
    try {
      if (a == "--bind") bind = value();
      else if (a == "--control") control = std::stoi(value());
      else if (a == "--seed") seed = std::stoull(value());
      else if (a == "--link") links.push_back(value());
      else if (a == "-h" || a == "--help") return usage(argv[0]), 0;
      else return usage(argv[0]);
    } catch (const std::exception&) {
      return usage(argv[0]);
    }
  }
  std::signal(SIGINT, on_signal);
  std::signal(SIGTERM, on_signal);
  std::signal(SIGPIPE, SIG_IGN);

  try {
    llmesh::relay::FaultRelay relay(bind, seed);
    if (control >= 0) std::cout << "control " << relay.start_control(uint16_t(control)) << std::endl;
    for (const auto& spec : links) {
      std::string line = spec;
      for (char& c : line)
        if (c == ':') c = ' ';
      std::string reply = relay.command("link add " + line);
      if (reply.rfind("ok", 0) != 0) {
        std::cerr << "--link " << spec << ": " << reply << "\n";
        return 1;
      }
      std::cout << "link " << spec.substr(0, spec.find(':')) << " " << reply.substr(3) << std::endl;
    }
    bool stdin_open = true;
    std::string pending;
    while (!g_stop && !relay.shutdown_requested()) {
      if (!stdin_open) {
        if (control < 0) break;
        ::usleep(100 * 1000);
        continue;
      }
      pollfd p{0, POLLIN, 0};
      int r = ::poll(&p, 1, 100);
      if (r <= 0) continue;
      char buf[4096];
      ssize_t n = ::read(0, buf, sizeof buf);
      if (n <= 0) {
        stdin_open = false;
        continue;
      }
      pending.append(buf, size_t(n));
      size_t nl;
      while ((nl = pending.find('\n')) != std::string::npos) {
        std::string line = pending.substr(0, nl);
        pending.erase(0, nl + 1);
        std::string reply = relay.command(line);
        if (!reply.empty()) std::cout << reply << std::endl;
      }
    }
  } catch (const std::exception& e) {
    std::cerr << "llmesh_fault_relay: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
