// A C++ client of the gateway, built on gRPC C++ (Debian's libgrpc++-dev):
// one GetCitizen call over mutual TLS with a read mask. Prints the citizen as
// proto3 JSON, or the status and its google.rpc details (ErrorInfo,
// BadRequest, ResourceInfo) when the gateway refuses.
//
//   citizen_client ADDR CA_PEM CERT_PEM KEY_PEM PERSONAL_ID [FIELD_PATH...]
//
// Exit code: 0 on an answer, 1 on a gRPC error, 2 on a usage or file problem.
// See docs/clients.md (C++) for generating the code it includes.

#include <fstream>
#include <chrono>
#include <iostream>
#include <map>
#include <sstream>
#include <string>

#include <google/protobuf/util/json_util.h>
#include <grpcpp/grpcpp.h>

#include "google/rpc/error_details.pb.h"
#include "google/rpc/status.pb.h"
#include "interop/citizen/v1/citizen.grpc.pb.h"

namespace {

bool ReadFile(const std::string& path, std::string* out) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return false;
  std::ostringstream text;
  text << in.rdbuf();
  *out = text.str();
  return true;
}

const char* CodeName(grpc::StatusCode code) {
  static const char* const kNames[] = {
      "OK",                 "CANCELLED",          "UNKNOWN",
      "INVALID_ARGUMENT",   "DEADLINE_EXCEEDED",  "NOT_FOUND",
      "ALREADY_EXISTS",     "PERMISSION_DENIED",  "RESOURCE_EXHAUSTED",
      "FAILED_PRECONDITION", "ABORTED",           "OUT_OF_RANGE",
      "UNIMPLEMENTED",      "INTERNAL",           "UNAVAILABLE",
      "DATA_LOSS",          "UNAUTHENTICATED"};
  int i = static_cast<int>(code);
  return i >= 0 && i < 17 ? kNames[i] : "UNKNOWN";
}

// Prints the status, then every detail of the google.rpc.Status the gateway
// sends in the grpc-status-details-bin trailer.
void PrintError(const grpc::Status& status) {
  std::cout << "code=" << CodeName(status.error_code())
            << " message=" << status.error_message() << "\n";
  google::rpc::Status rich;
  if (status.error_details().empty() ||
      !rich.ParseFromString(status.error_details())) {
    std::cout << "(no google.rpc.Status details)\n";
    return;
  }
  for (const auto& any : rich.details()) {
    google::rpc::ErrorInfo info;
    google::rpc::BadRequest bad;
    google::rpc::ResourceInfo resource;
    if (any.UnpackTo(&info)) {
      std::cout << "ErrorInfo reason=" << info.reason()
                << " domain=" << info.domain() << "\n";
      // A protobuf map has no order; print the keys sorted.
      std::map<std::string, std::string> metadata(info.metadata().begin(),
                                                  info.metadata().end());
      for (const auto& [key, value] : metadata) {
        std::cout << "  metadata " << key << "=" << value << "\n";
      }
    } else if (any.UnpackTo(&bad)) {
      for (const auto& v : bad.field_violations()) {
        std::cout << "BadRequest field=" << v.field()
                  << " description=" << v.description() << "\n";
      }
    } else if (any.UnpackTo(&resource)) {
      std::cout << "ResourceInfo type=" << resource.resource_type()
                << " name=" << resource.resource_name() << "\n";
    } else {
      std::cout << "detail " << any.type_url() << "\n";
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 6) {
    std::cerr << "usage: " << argv[0]
              << " ADDR CA_PEM CERT_PEM KEY_PEM PERSONAL_ID [FIELD_PATH...]\n";
    return 2;
  }
  grpc::SslCredentialsOptions tls;
  const std::string files[] = {argv[2], argv[3], argv[4]};
  std::string* slots[] = {&tls.pem_root_certs, &tls.pem_cert_chain,
                          &tls.pem_private_key};
  for (int i = 0; i < 3; ++i) {
    if (!ReadFile(files[i], slots[i])) {
      std::cerr << files[i] << ": cannot read\n";
      return 2;
    }
  }
  auto channel = grpc::CreateChannel(argv[1], grpc::SslCredentials(tls));
  auto stub = interop::citizen::v1::CitizenRegistryService::NewStub(channel);

  interop::citizen::v1::GetCitizenRequest request;
  request.mutable_context()->set_procedure_code("1.004227");
  request.mutable_context()->set_dossier_id("000.00.20.H13-241205-0001");
  request.set_personal_id(argv[5]);
  for (int i = 6; i < argc; ++i) request.mutable_read_mask()->add_paths(argv[i]);

  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() +
                       std::chrono::seconds(10));
  interop::citizen::v1::GetCitizenResponse response;
  grpc::Status status = stub->GetCitizen(&context, request, &response);
  if (!status.ok()) {
    PrintError(status);
    return 1;
  }
  auto request_id = context.GetServerInitialMetadata().find("x-request-id");
  if (request_id != context.GetServerInitialMetadata().end()) {
    std::cout << "x-request-id "
              << std::string(request_id->second.data(),
                             request_id->second.size())
              << "\n";
  }
  std::string json;
  google::protobuf::util::MessageToJsonString(response.citizen(), &json);
  std::cout << json << "\n";
  return 0;
}
