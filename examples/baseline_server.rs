//! The benchmark baseline: a bare tonic server answering the same lookups
//! from the same embedded store over the same mutual TLS as the gateway, with
//! no identity mapping, no grants, no field filtering and no access log. It
//! is the cost floor of gRPC + TLS + lookup on a machine, and the upstream
//! the nginx proxy of `bench/side-by-side` forwards to (over `--plaintext`).
//!
//! ```text
//! cargo run --release --example baseline_server -- --store data/registry.sqlite \
//!     --cert certs/gateway.pem --key certs/gateway.key --client-ca certs/ca.pem \
//!     --listen 127.0.0.1:0 --plaintext 127.0.0.1:0
//! ```
//!
//! Prints `serving addr=... plaintext=...` once both listeners are bound and
//! exits 0 on SIGTERM or Ctrl-C.

use std::{io::Write, net::SocketAddr, path::PathBuf};

use clap::Parser;
use prost::Message;
use tokio::{net::TcpListener, sync::watch};
use tonic::{transport::Server, Request, Response, Status};

use interop_gateway::{
    proto::{
        audit::v1::{
            access_log_service_server::{AccessLogService, AccessLogServiceServer},
            ListAccessRecordsRequest, ListAccessRecordsResponse,
        },
        business::v1::{
            business_registry_service_server::{
                BusinessRegistryService, BusinessRegistryServiceServer,
            },
            Enterprise, GetEnterpriseRequest, GetEnterpriseResponse,
        },
        citizen::v1::{
            citizen_registry_service_server::{
                CitizenRegistryService, CitizenRegistryServiceServer,
            },
            Citizen, GetCitizenRequest, GetCitizenResponse, VerifyCitizenRequest,
            VerifyCitizenResponse,
        },
        land::v1::{
            land_registry_service_server::{LandRegistryService, LandRegistryServiceServer},
            GetParcelRequest, GetParcelResponse, ListParcelsByHolderRequest,
            ListParcelsByHolderResponse, Parcel,
        },
    },
    registry::{ParcelKey, Store},
    server, tls,
};

#[derive(Debug, Parser)]
#[command(about = "Bare tonic server over the gateway's store: the benchmark baseline")]
struct Args {
    /// The registry store (as built by `interop-gateway import`).
    #[arg(long)]
    store: PathBuf,
    /// Server certificate chain, PEM.
    #[arg(long)]
    cert: PathBuf,
    /// Server private key, PEM.
    #[arg(long)]
    key: PathBuf,
    /// CA bundle client certificates must chain to.
    #[arg(long)]
    client_ca: PathBuf,
    /// mTLS listen address.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Also serve plaintext HTTP/2 here (for a TLS-terminating proxy in front).
    #[arg(long)]
    plaintext: Option<SocketAddr>,
}

#[derive(Clone)]
struct Bare {
    store: Store,
}

fn internal(e: impl std::fmt::Display) -> Status {
    Status::internal(e.to_string())
}

fn decode<M: Message + Default>(record: Option<Vec<u8>>, what: &str) -> Result<M, Status> {
    let bytes = record.ok_or_else(|| Status::not_found(format!("{what} not found")))?;
    M::decode(bytes.as_slice()).map_err(internal)
}

#[tonic::async_trait]
impl CitizenRegistryService for Bare {
    async fn get_citizen(
        &self,
        request: Request<GetCitizenRequest>,
    ) -> Result<Response<GetCitizenResponse>, Status> {
        let id = request.into_inner().personal_id;
        let record = self
            .store
            .citizen(&id)
            .await
            .map_err(internal)?
            .map(|s| s.record);
        let citizen: Citizen = decode(record, "citizen")?;
        Ok(Response::new(GetCitizenResponse {
            citizen: Some(citizen),
            provenance: None,
        }))
    }

    async fn verify_citizen(
        &self,
        request: Request<VerifyCitizenRequest>,
    ) -> Result<Response<VerifyCitizenResponse>, Status> {
        let req = request.into_inner();
        let record = self
            .store
            .citizen(&req.personal_id)
            .await
            .map_err(internal)?
            .map(|s| s.record);
        let citizen: Citizen = decode(record, "citizen")?;
        let mut mismatched_fields = Vec::new();
        if !req.full_name.is_empty() && req.full_name != citizen.full_name {
            mismatched_fields.push("full_name".to_owned());
        }
        if req.date_of_birth.is_some() && req.date_of_birth != citizen.date_of_birth {
            mismatched_fields.push("date_of_birth".to_owned());
        }
        Ok(Response::new(VerifyCitizenResponse {
            r#match: mismatched_fields.is_empty(),
            mismatched_fields,
        }))
    }
}

#[tonic::async_trait]
impl LandRegistryService for Bare {
    async fn get_parcel(
        &self,
        request: Request<GetParcelRequest>,
    ) -> Result<Response<GetParcelResponse>, Status> {
        let r = request
            .into_inner()
            .parcel
            .ok_or_else(|| Status::invalid_argument("parcel is required"))?;
        let key = ParcelKey {
            commune_code: r.commune_code,
            map_sheet: r.map_sheet,
            parcel_number: r.parcel_number,
        };
        let record = self
            .store
            .parcel(&key)
            .await
            .map_err(internal)?
            .map(|s| s.record);
        let parcel: Parcel = decode(record, "parcel")?;
        Ok(Response::new(GetParcelResponse {
            parcel: Some(parcel),
            provenance: None,
        }))
    }

    async fn list_parcels_by_holder(
        &self,
        request: Request<ListParcelsByHolderRequest>,
    ) -> Result<Response<ListParcelsByHolderResponse>, Status> {
        let req = request.into_inner();
        let limit = match req.page_size {
            n if n <= 0 => 20,
            n => n.min(100) as usize,
        };
        let rows = self
            .store
            .parcels_by_holder(&req.holder_id, None, limit)
            .await
            .map_err(internal)?;
        let parcels = rows
            .into_iter()
            .map(|(_, stored)| Parcel::decode(stored.record.as_slice()).map_err(internal))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Response::new(ListParcelsByHolderResponse {
            parcels,
            next_page_token: String::new(),
            provenance: None,
        }))
    }
}

#[tonic::async_trait]
impl BusinessRegistryService for Bare {
    async fn get_enterprise(
        &self,
        request: Request<GetEnterpriseRequest>,
    ) -> Result<Response<GetEnterpriseResponse>, Status> {
        let code = request.into_inner().enterprise_code;
        let record = self
            .store
            .enterprise(&code)
            .await
            .map_err(internal)?
            .map(|s| s.record);
        let enterprise: Enterprise = decode(record, "enterprise")?;
        Ok(Response::new(GetEnterpriseResponse {
            enterprise: Some(enterprise),
            provenance: None,
        }))
    }
}

#[tonic::async_trait]
impl AccessLogService for Bare {
    type WatchAccessRecordsStream = tokio_stream::Empty<
        Result<interop_gateway::proto::audit::v1::WatchAccessRecordsResponse, Status>,
    >;

    async fn watch_access_records(
        &self,
        _request: Request<interop_gateway::proto::audit::v1::WatchAccessRecordsRequest>,
    ) -> Result<Response<Self::WatchAccessRecordsStream>, Status> {
        Err(Status::unimplemented("the baseline keeps no access log"))
    }

    async fn list_access_records(
        &self,
        _request: Request<ListAccessRecordsRequest>,
    ) -> Result<Response<ListAccessRecordsResponse>, Status> {
        Err(Status::unimplemented("the baseline keeps no access log"))
    }
}

fn router(bare: &Bare) -> tonic::transport::server::Router {
    Server::builder()
        .add_service(CitizenRegistryServiceServer::new(bare.clone()))
        .add_service(LandRegistryServiceServer::new(bare.clone()))
        .add_service(BusinessRegistryServiceServer::new(bare.clone()))
        .add_service(AccessLogServiceServer::new(bare.clone()))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let stop_signal = server::termination_signal();
    let tls_config = tls::server_config(&interop_gateway::config::TlsFiles {
        cert: args.cert,
        key: args.key,
        client_ca: args.client_ca,
        crls: Vec::new(),
        require_client_auth_eku: true,
    })?;
    let bare = Bare {
        store: Store::open(&args.store)?,
    };
    let listener = TcpListener::bind(args.listen).await?;
    let addr = listener.local_addr()?;
    let (stop_tx, stop_rx) = watch::channel(false);
    // Connection limits as the gateway's, but no agency check and no idle
    // timeout: calls are not counted here.
    let admission = interop_gateway::connections::Admission::new(Default::default(), None);
    let incoming = server::tls_incoming(listener, tls_config, admission, stop_rx.clone());
    let mut tasks = tokio::task::JoinSet::new();
    let mut stop = stop_rx.clone();
    let tls_router = router(&bare);
    tasks.spawn(async move {
        tls_router
            .serve_with_incoming_shutdown(incoming, async move {
                let _ = stop.wait_for(|s| *s).await;
            })
            .await
    });
    let mut line = format!("serving addr={addr}");
    if let Some(plain) = args.plaintext {
        let listener = TcpListener::bind(plain).await?;
        line.push_str(&format!(" plaintext={}", listener.local_addr()?));
        // As the mTLS listener does: no Nagle delay on small gRPC frames.
        let incoming = tokio_stream::StreamExt::map(
            tokio_stream::wrappers::TcpListenerStream::new(listener),
            |conn| {
                if let Ok(tcp) = &conn {
                    let _ = tcp.set_nodelay(true);
                }
                conn
            },
        );
        let mut stop = stop_rx.clone();
        let plain_router = router(&bare);
        tasks.spawn(async move {
            plain_router
                .serve_with_incoming_shutdown(incoming, async move {
                    let _ = stop.wait_for(|s| *s).await;
                })
                .await
        });
    }
    println!("{line}");
    std::io::stdout().flush()?;
    stop_signal.await;
    let _ = stop_tx.send(true);
    while let Some(done) = tasks.join_next().await {
        done??;
    }
    Ok(())
}
