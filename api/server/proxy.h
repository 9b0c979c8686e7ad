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

}  // namespace llmesh::api
