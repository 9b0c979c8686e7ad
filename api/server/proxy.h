// Answering a request for a model served elsewhere: pick a node, forward the exchange, stream
// the answer back as it arrives; if the node fails before the first byte, try the next one.
#pragma once
#include <httplib.h>

#include "server/request_flow.h"
#include "server/router.h"

namespace llmesh::api {

void proxy_request(const ApiContext& ctx, ModelRouter& router, const std::string& model,
                   const nlohmann::json& body, const httplib::Request& req, httplib::Response& res,
                   ApiFlavor flavor);

// The same over a given order of nodes, where nullptr stands for this node: returns false when
// the turn comes to this node (the local handler answers), true when a node answered.
bool proxy_in_order(const ApiContext& ctx, const std::vector<std::shared_ptr<Upstream>>& nodes,
                    const std::string& model, const httplib::Request& req, httplib::Response& res);

}  // namespace llmesh::api
