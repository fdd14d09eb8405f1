//! Hostile input: oversized messages, truncated frames, malformed protobuf
//! (bad varints, wrong wire types, invalid UTF-8, deep nesting), absurd
//! field masks, megabyte-long identifiers and metadata. Every case ends in
//! its documented status (see docs/security.md) or a refused stream; a
//! well-behaved agency is answered throughout, nothing panics, and the
//! access log verifies afterwards.

mod support;

use interop_gateway::proto::citizen::v1::GetCitizenRequest;
use prost::Message;
use support::{raw::*, *};
use tonic::Code;

const GET_CITIZEN: &str = "/interop.citizen.v1.CitizenRegistryService/GetCitizen";

fn encoded(req: &GetCitizenRequest) -> Vec<u8> {
    grpc_frame(&req.encode_to_vec())
}

fn assert_status(outcome: Outcome, code: Code, reason_: &str, case: &str) {
    let status = outcome.status();
    assert_eq!(status.code(), code, "{case}: {status:?}");
    assert_eq!(reason(&status), reason_, "{case}: {status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_end_in_their_documented_status() {
    count_panics();
    let gw = Gateway::start().await;
    let land = gw.pki.agency(LAND_OFFICE);
    let mut good = gw.client(LAND_OFFICE).await;
    let valid = citizen_request().encode_to_vec();

    // Size: a megabyte message is refused before it is read.
    let mut big = citizen_request();
    big.personal_id = "9".repeat(1 << 20);
    let out = raw_call(&gw, &land, GET_CITIZEN, &[], encoded(&big)).await;
    assert_status(
        out,
        Code::ResourceExhausted,
        "REQUEST_TOO_LARGE",
        "1 MiB identifier",
    );
    // A frame header claiming 1 GiB: refused on the header alone.
    let mut claim = vec![0u8];
    claim.extend_from_slice(&(1u32 << 30).to_be_bytes());
    claim.extend_from_slice(&valid);
    let out = raw_call(&gw, &land, GET_CITIZEN, &[], claim).await;
    assert_status(
        out,
        Code::ResourceExhausted,
        "REQUEST_TOO_LARGE",
        "1 GiB claimed",
    );

    // Framing and protobuf: each is MALFORMED_REQUEST naming the problem.
    let mut truncated = grpc_frame(&valid);
    truncated.truncate(truncated.len() - 3);
    let bad_varint = grpc_frame(&[
        0x12, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    ]);
    // Field 1 (a message) sent as a varint.
    let wrong_wire_type = grpc_frame(&[0x08, 0x01]);
    // personal_id (field 2, a string) that is not UTF-8.
    let not_utf8 = grpc_frame(&[0x12, 0x02, 0xff, 0xfe]);
    // An unknown field of 500 nested groups (start-group of field 15).
    let mut nested = vec![0x7b; 500];
    nested.extend(std::iter::repeat_n(0x7c, 500));
    let deep = grpc_frame(&nested);
    // A length prefix running past the message.
    let overrun = grpc_frame(&[0x12, 0x7f, b'0']);
    // A valid message marked compressed, with no grpc-encoding.
    let mut compressed = grpc_frame(&valid);
    compressed[0] = 1;
    for (case, body) in [
        ("compressed flag", compressed),
        ("truncated frame", truncated),
        ("bad varint", bad_varint),
        ("wrong wire type", wrong_wire_type),
        ("invalid UTF-8", not_utf8),
        ("deep nesting", deep),
        ("length overrun", overrun),
    ] {
        let out = raw_call(&gw, &land, GET_CITIZEN, &[], body).await;
        assert_status(out, Code::InvalidArgument, "MALFORMED_REQUEST", case);
    }

    // Absurd field masks: INVALID_ARGUMENT, whatever their shape.
    let masks: [(&str, Vec<String>); 3] = [
        ("5,000 paths", (0..5000).map(|i| format!("f{i}")).collect()),
        ("a 50 KB path", vec!["a".repeat(50_000)]),
        (
            "a path 5,000 levels deep",
            vec![vec!["permanent_address"; 2500].join(".")],
        ),
    ];
    for (case, paths) in masks {
        let mut req = citizen_request();
        req.read_mask = Some(pbjson_types::FieldMask { paths });
        let status = good.citizen.get_citizen(req).await.unwrap_err();
        assert!(
            matches!(
                status.code(),
                Code::InvalidArgument | Code::ResourceExhausted
            ),
            "{case}: {status:?}"
        );
        assert!(
            [
                "INVALID_FIELD_MASK",
                "REQUEST_TOO_LARGE",
                "INVALID_ARGUMENT"
            ]
            .contains(&reason(&status).as_str()),
            "{case}: {status:?}"
        );
    }

    // Long identifiers under the size limit: refused for what they are.
    let mut req = citizen_request();
    req.personal_id = "0".repeat(60_000);
    let status = good.citizen.get_citizen(req).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    let mut req = citizen_request();
    if let Some(c) = req.context.as_mut() {
        c.officer_id = "x".repeat(60_000);
        c.dossier_id = "y".repeat(1000);
    }
    let status = good.citizen.get_citizen(req).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");

    // Metadata: a megabyte header is refused at the HTTP/2 layer (no
    // handler runs); a long relay header from a non-relay is refused.
    let huge = "a".repeat(1 << 20);
    let out = raw_call(
        &gw,
        &land,
        GET_CITIZEN,
        &[("x-padding", huge.as_str())],
        grpc_frame(&valid),
    )
    .await;
    assert!(matches!(&out, Outcome::Refused(_)), "{out:?}");
    let long = "9".repeat(8000);
    let out = raw_call(
        &gw,
        &land,
        GET_CITIZEN,
        &[("x-interop-on-behalf-of", long.as_str())],
        grpc_frame(&valid),
    )
    .await;
    assert_status(
        out,
        Code::PermissionDenied,
        "RELAY_NOT_ALLOWED",
        "relay header",
    );

    // Through it all, the well-behaved agency is answered.
    good.citizen.get_citizen(citizen_request()).await.unwrap();
    let dir = gw.stop_and_keep().await;
    interop_gateway::audit::verify_file(&dir.path().join("data/audit"), None)
        .expect("the access log verifies");
    assert_eq!(panics(), 0);
}
