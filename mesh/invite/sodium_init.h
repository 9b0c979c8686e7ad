// Internal: libsodium is initialised once, on first use (thread-safe).
#pragma once

namespace llmesh::invite {
void ensure_sodium();
}
