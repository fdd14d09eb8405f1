//! Health and server reflection on the gateway's port, over mTLS: enough for
//! grpcurl-style tools to discover every method and its imports.

mod support;

use prost::Message;
use support::*;
use tonic_health::pb::{
    health_check_response::ServingStatus, health_client::HealthClient, HealthCheckRequest,
};
use tonic_reflection::pb::v1::{
    server_reflection_client::ServerReflectionClient, server_reflection_request::MessageRequest,
    server_reflection_response::MessageResponse, ServerReflectionRequest,
};

#[tokio::test]
async fn health_reports_each_registry_service_serving() {
    let gw = Gateway::start().await;
    let c = gw.client(PORTAL).await;
    let mut health = HealthClient::new(c.channel.clone());
    for service in [
        "interop.citizen.v1.CitizenRegistryService",
        "interop.land.v1.LandRegistryService",
        "interop.business.v1.BusinessRegistryService",
        "",
    ] {
        let r = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(r.status(), ServingStatus::Serving, "{service:?}");
    }
    gw.stop().await;
}

async fn reflect(
    c: &mut ServerReflectionClient<tonic::transport::Channel>,
    req: MessageRequest,
) -> MessageResponse {
    let stream = tokio_stream::iter(vec![ServerReflectionRequest {
        host: String::new(),
        message_request: Some(req),
    }]);
    let mut resp = c.server_reflection_info(stream).await.unwrap().into_inner();
    resp.message()
        .await
        .unwrap()
        .unwrap()
        .message_response
        .unwrap()
}

#[tokio::test]
async fn reflection_lists_services_and_resolves_imports() {
    let gw = Gateway::start().await;
    let c = gw.client(PORTAL).await;
    let mut r = ServerReflectionClient::new(c.channel.clone());
    let MessageResponse::ListServicesResponse(list) =
        reflect(&mut r, MessageRequest::ListServices(String::new())).await
    else {
        panic!("expected a service list");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for expected in [
        "interop.citizen.v1.CitizenRegistryService",
        "interop.land.v1.LandRegistryService",
        "interop.business.v1.BusinessRegistryService",
        "grpc.health.v1.Health",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} missing from {names:?}"
        );
    }
    let MessageResponse::FileDescriptorResponse(files) = reflect(
        &mut r,
        MessageRequest::FileContainingSymbol("interop.citizen.v1.CitizenRegistryService".into()),
    )
    .await
    else {
        panic!("expected file descriptors");
    };
    let decoded: Vec<prost_types::FileDescriptorProto> = files
        .file_descriptor_proto
        .iter()
        .map(|b| prost_types::FileDescriptorProto::decode(b.as_slice()).unwrap())
        .collect();
    let file_names: Vec<&str> = decoded.iter().map(|f| f.name()).collect();
    assert!(
        file_names.contains(&"interop/citizen/v1/citizen.proto"),
        "{file_names:?}"
    );
    // The well-known import must be resolvable by name.
    let MessageResponse::FileDescriptorResponse(fm) = reflect(
        &mut r,
        MessageRequest::FileByFilename("google/protobuf/field_mask.proto".into()),
    )
    .await
    else {
        panic!("field_mask.proto must be served");
    };
    assert_eq!(fm.file_descriptor_proto.len(), 1);
    gw.stop().await;
}
