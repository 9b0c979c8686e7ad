// A plain GGUF file (not a layer package) used by a pipeline stage without downloading all of
// it (docs/fetching.md, "A plain GGUF by byte ranges"): the header is read first, then only the
// byte ranges of the tensors a layer range needs, into a sparse local copy of the file under
// the cache. The copy has the remote file's size and layout, so the engine memory-maps and
// loads it like any GGUF and never touches the holes. A later run with another range fetches
// only the ranges still missing; an interrupted fetch resumes at the last 8 MiB written.
//
//   auto g = fetch_gguf_layers("https://host/models/tinyllama-q4_0.gguf", {0, 11}, opts);
//   auto model = Model::load(g.path.string(), {{0, 11}});
//
// A plain GGUF carries no hashes of its parts: sizes and the header are checked, the bytes are
// trusted to the transport (https). A layer package is the verified form (layer-packages.md).
#pragma once
#include <cstdint>
#include <filesystem>
#include <string>
#include <utility>
#include <vector>

#include "fetch/package_fetch.h"
#include "model/model.h"

namespace llmesh::mesh {

struct FetchedGguf {
  std::filesystem::path path;       // the sparse local copy (model.gguf)
  uint64_t file_bytes = 0;          // the remote file's size (of which most may be holes)
  uint64_t header_bytes = 0;        // bytes read for the header
  uint64_t bytes_fetched = 0;       // tensor bytes transferred this time
  uint64_t bytes_cached = 0;        // tensor bytes of the range already present
  int n_layer = 0;
};

// True for an http(s) URL whose path ends in ".gguf" (a plain GGUF, not a package's base URL).
bool is_gguf_url(const std::string& spec);

// Fetches what layers [first, last) (last -1: through the end) of the GGUF at `url` need:
// header, the layers' tensors, the embeddings when first == 0 (or the head is tied), the output
// norm and head when last reaches the end, and any other non-layer tensor. Uses the options'
// cache root (namespace "gguf/<hash of the URL>") and progress. With options.experts (an expert
// shard: per absolute layer, the experts held) only the held experts' weights of the range are
// fetched: their contiguous slices of merged blk.N.ffn_*_exps tensors, their per-expert
// blk.N.ffn_*.E.weight tensors; the rest of the layer (attention, norms, router, shared
// experts) always. Throws FetchError (source unreachable, short file), GgufError (not a GGUF),
// std::invalid_argument (bad range, bad expert lists).
FetchedGguf fetch_gguf_layers(const std::string& url, LayerRange layers, const PackageFetchOptions& options = {});
// The same for an expert shard: `experts` replaces options.experts.
FetchedGguf fetch_gguf_layers(const std::string& url, LayerRange layers, const std::vector<std::vector<int>>& experts,
                              const PackageFetchOptions& options = {});

// The byte ranges [begin, end) of the file a layer range (and expert shard; empty: every
// expert) needs, sorted and merged across small gaps, never across the bytes of an expert not
// held; from the file's header: exposed for tests.
std::vector<std::pair<uint64_t, uint64_t>> gguf_ranges_for_layers(const GgufFile& header, LayerRange layers,
                                                                   const std::vector<std::vector<int>>& experts = {});

}  // namespace llmesh::mesh
