//! The Rust client side: one place that sets up an mTLS channel to a gateway
//! with an agency certificate, used by the `call` command, the tests and any
//! Rust caller.

use std::{path::Path, time::Duration};

use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use crate::proto::{
    audit::v1::access_log_service_client::AccessLogServiceClient,
    business::v1::business_registry_service_client::BusinessRegistryServiceClient,
    catalog::v1::catalog_service_client::CatalogServiceClient,
    citizen::v1::citizen_registry_service_client::CitizenRegistryServiceClient,
    land::v1::land_registry_service_client::LandRegistryServiceClient,
};

/// An agency's credentials: the CA that issued the gateway's certificate and
/// the agency's own certificate chain and key, all PEM.
#[derive(Clone, Debug)]
pub struct AgencyIdentity {
    pub ca_pem: Vec<u8>,
    pub cert_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
}

/// A client-side failure before any call was made.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("{path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Endpoint(String),
    #[error("cannot connect to {endpoint}: {message}")]
    Connect { endpoint: String, message: String },
}

impl AgencyIdentity {
    /// Reads the three PEM files.
    pub fn from_files(ca: &Path, cert: &Path, key: &Path) -> Result<Self, ClientError> {
        let read = |p: &Path| {
            std::fs::read(p).map_err(|source| ClientError::Read {
                path: p.display().to_string(),
                source,
            })
        };
        Ok(Self {
            ca_pem: read(ca)?,
            cert_pem: read(cert)?,
            key_pem: read(key)?,
        })
    }
}

/// Stubs for every registry service over one mTLS channel.
#[derive(Clone, Debug)]
pub struct Client {
    pub channel: Channel,
    pub citizen: CitizenRegistryServiceClient<Channel>,
    pub land: LandRegistryServiceClient<Channel>,
    pub business: BusinessRegistryServiceClient<Channel>,
    pub access_log: AccessLogServiceClient<Channel>,
    pub catalog: CatalogServiceClient<Channel>,
}

/// Builds an endpoint (`https://host:port` or `host:port`) with mTLS.
pub fn endpoint(address: &str, identity: &AgencyIdentity) -> Result<Endpoint, ClientError> {
    let uri = if address.contains("://") {
        address.to_owned()
    } else {
        format!("https://{address}")
    };
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&identity.ca_pem))
        .identity(Identity::from_pem(&identity.cert_pem, &identity.key_pem));
    Endpoint::from_shared(uri.clone())
        .map_err(|e| ClientError::Endpoint(format!("{uri}: {e}")))?
        .tls_config(tls)
        .map_err(|e| ClientError::Endpoint(format!("{uri}: {e}")))
        .map(|e| e.connect_timeout(Duration::from_secs(10)).tcp_nodelay(true))
}

impl Client {
    /// Connects (handshake included) to the gateway at `address`.
    pub async fn connect(address: &str, identity: &AgencyIdentity) -> Result<Client, ClientError> {
        let ep = endpoint(address, identity)?;
        let channel = ep.connect().await.map_err(|e| ClientError::Connect {
            endpoint: address.to_owned(),
            message: error_chain(&e),
        })?;
        Ok(Client::from_channel(channel))
    }

    pub fn from_channel(channel: Channel) -> Client {
        Client {
            citizen: CitizenRegistryServiceClient::new(channel.clone()),
            land: LandRegistryServiceClient::new(channel.clone()),
            business: BusinessRegistryServiceClient::new(channel.clone()),
            access_log: AccessLogServiceClient::new(channel.clone()),
            catalog: CatalogServiceClient::new(channel.clone()),
            channel,
        }
    }
}

/// An error with all its sources, `a: b: c`.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        let msg = inner.to_string();
        if !s.contains(&msg) {
            s.push_str(": ");
            s.push_str(&msg);
        }
        source = inner.source();
    }
    s
}
