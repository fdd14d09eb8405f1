//! `interop-gateway call`: a small operator client. Takes the request as
//! proto3 JSON, prints the response as proto3 JSON, or the error with its
//! `google.rpc` details as JSON (and exits 1).

use serde::{de::DeserializeOwned, Serialize};
use serde_json::{json, Value};
use tonic_types::StatusExt;

use super::{
    load_config, mask_paths, runtime, ConfigArg, Failure, TargetArgs, EXIT_CONFIG, EXIT_FAILED,
};
use crate::{
    client::{error_chain, explain_failure, is_transport_failure, Client, IdentityFiles},
    error::code_name,
    policy::{self, METHODS},
};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub config: ConfigArg,
    #[command(flatten)]
    pub target: TargetArgs,
    /// Full method name (`interop.citizen.v1.CitizenRegistryService/GetCitizen`) or
    /// just the method (`GetCitizen`).
    pub method: String,
    /// The request as proto3 JSON, e.g. '{"context": {...}, "personalId": "..."}'
    /// (`{}` or nothing for the catalogue's `ListServices` and `ListMyGrants`).
    #[arg(default_value = "")]
    pub request: String,
}

/// A status and its `google.rpc` details as JSON.
pub fn status_json(status: &tonic::Status) -> Value {
    let details = status.get_error_details();
    let mut out = serde_json::Map::new();
    if let Some(info) = details.error_info() {
        out.insert(
            "errorInfo".into(),
            json!({"reason": info.reason, "domain": info.domain, "metadata": info.metadata}),
        );
    }
    if let Some(bad) = details.bad_request() {
        let v: Vec<Value> = bad
            .field_violations
            .iter()
            .map(|f| json!({"field": f.field, "description": f.description}))
            .collect();
        out.insert("badRequest".into(), json!({ "fieldViolations": v }));
    }
    if let Some(r) = details.resource_info() {
        out.insert(
            "resourceInfo".into(),
            json!({"resourceType": r.resource_type, "resourceName": r.resource_name, "description": r.description}),
        );
    }
    if let Some(delay) = details.retry_info().and_then(|r| r.retry_delay) {
        // proto3 JSON of a google.protobuf.Duration: seconds with an `s`.
        let text = if delay.subsec_nanos() == 0 {
            format!("{}s", delay.as_secs())
        } else {
            format!("{}.{:09}s", delay.as_secs(), delay.subsec_nanos())
        };
        out.insert("retryInfo".into(), json!({ "retryDelay": text }));
    }
    json!({
        "code": code_name(status.code()),
        "message": status.message(),
        "details": Value::Object(out),
    })
}

/// Accepts `readMask` in its canonical proto3-JSON form, a string of
/// comma-separated lowerCamelCase paths (`"fullName,permanentAddress.provinceCode"`),
/// as well as the `{"paths": [...]}` object form.
fn canonical_read_mask(request: &mut Value) {
    for key in ["readMask", "read_mask"] {
        if let Some(Value::String(mask)) = request.get(key) {
            let paths = mask_paths(mask);
            request[key] = json!({ "paths": paths });
        }
    }
}

fn parse<T: DeserializeOwned>(text: &str, method: &str) -> Result<T, Failure> {
    let invalid = |e: serde_json::Error| {
        Failure::new(
            EXIT_CONFIG,
            format!("request is not a valid {method} request: {e}"),
        )
    };
    let mut value: Value = serde_json::from_str(text).map_err(invalid)?;
    canonical_read_mask(&mut value);
    serde_json::from_value(value).map_err(invalid)
}

fn show<T: Serialize>(
    r: Result<tonic::Response<T>, tonic::Status>,
) -> Result<Value, tonic::Status> {
    r.map(|resp| serde_json::to_value(resp.into_inner()).unwrap_or(Value::Null))
}

/// The catalogue's methods, which any configured agency may call without a
/// grant (so they are not among the grantable [`METHODS`]).
const CATALOG_METHODS: &[&str] = &[
    "interop.catalog.v1.CatalogService/ListServices",
    "interop.catalog.v1.CatalogService/ListMyGrants",
];

fn catalog_method(name: &str) -> Option<&'static str> {
    CATALOG_METHODS
        .iter()
        .copied()
        .find(|m| *m == name || m.rsplit('/').next() == Some(name))
}

/// Calls a catalogue method; the request may be `{}` or empty.
async fn call_catalog(
    client: &mut Client,
    method: &'static str,
    text: &str,
) -> Result<Result<Value, tonic::Status>, Failure> {
    let text = if text.trim().is_empty() { "{}" } else { text };
    Ok(if method.ends_with("/ListServices") {
        show(
            client
                .catalog
                .list_services(parse::<crate::proto::catalog::v1::ListServicesRequest>(
                    text, method,
                )?)
                .await,
        )
    } else {
        show(
            client
                .catalog
                .list_my_grants(parse::<crate::proto::catalog::v1::ListMyGrantsRequest>(
                    text, method,
                )?)
                .await,
        )
    })
}

/// Follows `WatchAccessRecords`, printing each event as one line of JSON as
/// it arrives, until the stream ends; returns the status it ended with.
async fn watch(client: &mut Client, text: &str) -> Result<tonic::Status, Failure> {
    use std::io::Write;
    let method = policy::WATCH_ACCESS_RECORDS.name;
    let request = parse::<crate::proto::audit::v1::WatchAccessRecordsRequest>(text, method)?;
    let mut stream = match client.access_log.watch_access_records(request).await {
        Ok(response) => response.into_inner(),
        Err(status) => return Ok(status),
    };
    let mut out = super::Stdout;
    loop {
        match stream.message().await {
            Ok(Some(event)) => {
                let line = serde_json::to_string(&event).unwrap_or_default();
                match writeln!(out, "{line}").and_then(|()| out.flush()) {
                    Ok(()) => {}
                    // The reader went away (`| head`): the watch is over.
                    Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
                        return Ok(tonic::Status::ok("the output was closed"))
                    }
                    // Said once already, by `Stdout`.
                    Err(_) => return Err(Failure::new(EXIT_FAILED, "the watch's output failed")),
                }
            }
            Ok(None) => return Ok(tonic::Status::ok("the stream ended")),
            Err(status) => return Ok(status),
        }
    }
}

pub fn run(args: Args) -> Result<(), Failure> {
    // Another agency's gateway is called with --addr, --ca, --cert and
    // --key alone; without them they come from this gateway's config.
    let config = if args.target.needs_config() {
        Some(load_config(&args.config.config).map_err(|f| {
            Failure::new(
                f.exit_code,
                format!(
                    "{}\n(give --addr, --ca, --cert and --key to call a gateway without its config)",
                    f.message
                ),
            )
        })?)
    } else {
        None
    };
    if let Some(method) = catalog_method(&args.method) {
        let (addr, identity, files) = args.target.resolve(config.as_ref())?;
        let rt = runtime()?;
        let result = rt.block_on(async {
            let mut client = Client::connect(&addr, &identity).await.map_err(|e| {
                Failure::new(EXIT_FAILED, explain_failure(&e.to_string(), &addr, &files))
            })?;
            call_catalog(&mut client, method, &args.request).await
        })?;
        return print_result(result, &addr, &files);
    }
    let method = METHODS
        .iter()
        .copied()
        .find(|m| m.name == args.method || m.name.rsplit('/').next() == Some(args.method.as_str()))
        .ok_or_else(|| {
            let known: Vec<&str> = METHODS
                .iter()
                .map(|m| m.name)
                .chain(CATALOG_METHODS.iter().copied())
                .collect();
            Failure::new(
                EXIT_CONFIG,
                format!(
                    "unknown method {:?}; one of: {}",
                    args.method,
                    known.join(", ")
                ),
            )
        })?;
    let (addr, identity, files) = args.target.resolve(config.as_ref())?;
    let rt = runtime()?;
    if method == policy::WATCH_ACCESS_RECORDS {
        let ended = rt.block_on(async {
            let mut client = Client::connect(&addr, &identity).await.map_err(|e| {
                Failure::new(EXIT_FAILED, explain_failure(&e.to_string(), &addr, &files))
            })?;
            watch(&mut client, &args.request).await
        })?;
        if ended.code() == tonic::Code::Ok {
            return Ok(());
        }
        return print_result(Err(ended), &addr, &files);
    }
    let result = rt.block_on(async {
        let mut client = Client::connect(&addr, &identity).await.map_err(|e| {
            Failure::new(EXIT_FAILED, explain_failure(&e.to_string(), &addr, &files))
        })?;
        let text = args.request.as_str();
        let answer = match method {
            m if m == policy::GET_CITIZEN => show(
                client
                    .citizen
                    .get_citizen(parse::<crate::proto::citizen::v1::GetCitizenRequest>(
                        text, m.name,
                    )?)
                    .await,
            ),
            m if m == policy::VERIFY_CITIZEN => show(
                client
                    .citizen
                    .verify_citizen(parse::<crate::proto::citizen::v1::VerifyCitizenRequest>(
                        text, m.name,
                    )?)
                    .await,
            ),
            m if m == policy::LIST_ACCESS_RECORDS => show(
                client
                    .access_log
                    .list_access_records(
                        parse::<crate::proto::audit::v1::ListAccessRecordsRequest>(text, m.name)?,
                    )
                    .await,
            ),
            m if m == policy::GET_PARCEL => show(
                client
                    .land
                    .get_parcel(parse::<crate::proto::land::v1::GetParcelRequest>(
                        text, m.name,
                    )?)
                    .await,
            ),
            m if m == policy::LIST_PARCELS_BY_HOLDER => show(
                client
                    .land
                    .list_parcels_by_holder(parse::<
                        crate::proto::land::v1::ListParcelsByHolderRequest,
                    >(text, m.name)?)
                    .await,
            ),
            // (WatchAccessRecords streams: handled above.)
            m => show(
                client
                    .business
                    .get_enterprise(parse::<crate::proto::business::v1::GetEnterpriseRequest>(
                        text, m.name,
                    )?)
                    .await,
            ),
        };
        Ok::<_, Failure>(answer)
    })?;
    print_result(result, &addr, &files)
}

/// Prints an answer, or a status with its details (and fails); a failure
/// before any answer is explained in terms of `addr` and `files`.
fn print_result(
    result: Result<Value, tonic::Status>,
    addr: &str,
    files: &IdentityFiles,
) -> Result<(), Failure> {
    match result {
        Ok(v) => {
            outln!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
            Ok(())
        }
        // No answer came: that is no gRPC status, so none is printed.
        Err(status) if is_transport_failure(&status) => Err(Failure::new(
            EXIT_FAILED,
            explain_failure(
                &std::error::Error::source(&status)
                    .map_or_else(|| status.message().to_owned(), error_chain),
                addr,
                files,
            ),
        )),
        Err(status) => {
            outln!(
                "{}",
                serde_json::to_string_pretty(&status_json(&status)).unwrap_or_default()
            );
            Err(Failure::new(
                EXIT_FAILED,
                format!("{}: {}", code_name(status.code()), status.message()),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::status_json;

    #[test]
    fn a_refusal_shows_its_retry_delay() {
        let status = tonic::Status::from(crate::error::RequestError::ResourceExhausted {
            reason: crate::error::reason::VERIFICATION_LIMIT,
            message: "refused".into(),
            metadata: vec![("scope".into(), "subject".into())],
            retry_after: std::time::Duration::from_millis(86_400_500),
        });
        let v = status_json(&status);
        assert_eq!(v["code"], "RESOURCE_EXHAUSTED");
        assert_eq!(v["details"]["errorInfo"]["reason"], "VERIFICATION_LIMIT");
        assert_eq!(v["details"]["errorInfo"]["metadata"]["scope"], "subject");
        assert_eq!(v["details"]["retryInfo"]["retryDelay"], "86400.500000000s");
    }
}
