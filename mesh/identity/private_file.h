// Files only their owner may read (keys, the mesh secret, the node's control key): written
// atomically with mode 0600, in a directory created with mode 0700.
#pragma once
#include <filesystem>
#include <stdexcept>
#include <string_view>

namespace llmesh::mesh {

class PrivateFileError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Writes `text` to a temporary file in the same directory (mode 0600 whatever the umask),
// fsyncs it, renames it over `path` and fsyncs the directory, so a crash leaves either the old
// or the new file. Creates the directory (mode 0700) when missing. Throws PrivateFileError
// naming the file and the system's reason.
void write_private_file(const std::filesystem::path& path, std::string_view text);

}  // namespace llmesh::mesh
