//! `interop.catalog.v1.CatalogService`: what this gateway serves (from the
//! proto contract, see [`crate::catalog`]) and what the calling agency may
//! read through it. Any configured agency may call it without a grant; an
//! answer only ever describes the caller's own grants. It discloses no
//! registry data, so it writes no access record.

use tonic::{Request, Response, Status};

use super::Core;
use crate::{
    catalog,
    error::RequestError,
    identity::Principal,
    policy,
    proto::catalog::v1::{
        catalog_service_server::CatalogService, FieldDescription, Limit, ListMyGrantsRequest,
        ListMyGrantsResponse, ListServicesRequest, ListServicesResponse, MethodDescription,
        MethodGrant, ServiceDescription, ServiceSource,
    },
    service::page_token::MAX_PAGE_SIZE,
    snapshot::Snapshot,
};

/// Whom a call is for: the same identity rules as every data call
/// (certificate, configured agency, relay header), without a grant.
fn principal<T>(snapshot: &Snapshot, request: &Request<T>) -> Result<Principal, RequestError> {
    let caller = snapshot.agency_of_peer(request.peer_certs().as_deref().map(Vec::as_slice))?;
    snapshot.principal_of(caller, super::on_behalf_of(request.metadata()))
}

impl Snapshot {
    fn source_of(&self, service: &str) -> Option<ServiceSource> {
        let entry = self.config.registry(service);
        Some(ServiceSource {
            owner_agency: entry.map(|r| r.owner.clone()).unwrap_or_default(),
            forwarded: entry.is_some_and(|r| r.upstream.is_some()),
        })
    }

    /// The limits that apply to `agency`'s calls of `method`: the method's
    /// own, the agency's share of the gateway (`[[agency]]`), and what any
    /// call may send and take (`[limits]`).
    fn limits_of(&self, agency: &str, method: policy::MethodSpec) -> Vec<Limit> {
        let limits = &self.config.limits;
        let exact = |name: &str, exact_value: f64, description: &str| Limit {
            name: name.to_owned(),
            value: exact_value.floor() as u64,
            description: description.to_owned(),
            exact_value,
        };
        let limit =
            |name: &str, value: u64, description: &str| exact(name, value as f64, description);
        let mut out = self.method_limits(method, &limit);
        if let Some(own) = self.config.agencies.get(agency).map(|a| &a.limits) {
            if let Some(rate) = own.rate {
                out.push(exact(
                    "rate_per_second",
                    rate.per_second,
                    "calls per second of your agency, over all methods, sustained (a token bucket); past it, calls are RESOURCE_EXHAUSTED RATE_LIMITED with a RetryInfo",
                ));
                out.push(limit(
                    "burst",
                    u64::from(rate.burst),
                    "calls of your agency at once above rate_per_second (the bucket's size)",
                ));
            }
            if let Some(n) = own.max_in_flight {
                out.push(limit(
                    "max_in_flight",
                    n as u64,
                    "calls of your agency being served at once, over all methods; past it, calls are RESOURCE_EXHAUSTED TOO_MANY_IN_FLIGHT with a RetryInfo",
                ));
            }
        }
        out.push(limit(
            "max_request_bytes",
            limits.max_request_bytes as u64,
            "bytes of a request message at most; larger is RESOURCE_EXHAUSTED REQUEST_TOO_LARGE",
        ));
        out.push(limit(
            "max_call_ms",
            u64::try_from(limits.max_call.as_millis()).unwrap_or(u64::MAX),
            "milliseconds a call may take at most, whatever its grpc-timeout asks; past it, DEADLINE_EXCEEDED",
        ));
        out
    }

    /// The limits of `method` itself.
    fn method_limits(
        &self,
        method: policy::MethodSpec,
        limit: &dyn Fn(&str, u64, &str) -> Limit,
    ) -> Vec<Limit> {
        let limits = &self.config.limits;
        if method == policy::VERIFY_CITIZEN {
            vec![
                limit(
                    "verify_failures_per_subject",
                    u64::from(limits.verify_failures_per_subject.get()),
                    "failed verifications about one personal id within verify_window_hours; past it, calls about that id are RESOURCE_EXHAUSTED until the window slides",
                ),
                limit(
                    "verify_window_hours",
                    limits.verify_window.as_secs() / 3600,
                    "the sliding window of verify_failures_per_subject, in hours",
                ),
                limit(
                    "verify_failures_per_agency_hour",
                    u64::from(limits.verify_failures_per_agency_hour.get()),
                    "failed verifications in any hour, over all subjects; past it, every verification is RESOURCE_EXHAUSTED until the hour slides",
                ),
            ]
        } else if method == policy::LIST_PARCELS_BY_HOLDER || method == policy::LIST_ACCESS_RECORDS
        {
            vec![limit(
                "max_page_size",
                MAX_PAGE_SIZE as u64,
                "records per page at most; a larger page_size is served as this many",
            )]
        } else {
            Vec::new()
        }
    }
}

fn log_catalog_call(rpc: &str, who: &Result<Principal, RequestError>) {
    let agency = match who {
        Ok(p) => p.agency.to_string(),
        Err(_) => "-".to_owned(),
    };
    let code = match who {
        Ok(_) => tonic::Code::Ok,
        Err(e) => e.code(),
    };
    tracing::info!(target: "interop_gateway::access", agency = %agency, method = rpc, code = crate::error::code_name(code), "catalog call");
}

#[tonic::async_trait]
impl CatalogService for Core {
    async fn list_services(
        &self,
        request: Request<ListServicesRequest>,
    ) -> Result<Response<ListServicesResponse>, Status> {
        let snapshot = self.live.snapshot();
        let who = principal(&snapshot, &request);
        log_catalog_call("interop.catalog.v1.CatalogService/ListServices", &who);
        who?;
        let services = catalog::gateway()
            .iter()
            .map(|s| ServiceDescription {
                name: s.name.to_owned(),
                description: s.description.clone(),
                source: snapshot.source_of(s.name),
                methods: s
                    .methods
                    .iter()
                    .map(|m| MethodDescription {
                        name: m.spec.name.to_owned(),
                        description: m.description.clone(),
                        request_type: m.request_type.clone(),
                        response_type: m.response_type.clone(),
                        record_type: m.spec.record.unwrap_or_default().to_owned(),
                        fields: m
                            .fields
                            .iter()
                            .map(|f| FieldDescription {
                                path: f.path.clone(),
                                description: f.description.clone(),
                                r#type: f.type_name.clone(),
                                repeated: f.repeated,
                            })
                            .collect(),
                    })
                    .collect(),
            })
            .collect();
        Ok(Response::new(ListServicesResponse { services }))
    }

    async fn list_my_grants(
        &self,
        request: Request<ListMyGrantsRequest>,
    ) -> Result<Response<ListMyGrantsResponse>, Status> {
        let snapshot = self.live.snapshot();
        let who = principal(&snapshot, &request);
        log_catalog_call("interop.catalog.v1.CatalogService/ListMyGrants", &who);
        let agency = who?.agency;
        let grants = snapshot
            .config
            .policy
            .grants_of(agency.as_str())
            .into_iter()
            .map(|g| MethodGrant {
                method: g.method.name.to_owned(),
                procedures: g.procedures.clone(),
                fields: g.fields.to_strings(),
                limits: snapshot.limits_of(agency.as_str(), g.method),
                source: snapshot.source_of(g.method.service()),
            })
            .collect();
        Ok(Response::new(ListMyGrantsResponse {
            agency_name: snapshot
                .config
                .agencies
                .get(agency.as_str())
                .map(|a| a.name.clone())
                .unwrap_or_default(),
            agency_code: agency.to_string(),
            grants,
        }))
    }
}
