//! Signed receipts: proof, for the agency that received an answer, of what
//! it received and that the call was recorded. Every answered data call
//! carries, in the trailing metadata [`RECEIPT_TRAILER`], a JWS in compact
//! serialization (RFC 7515) signed with the access log's Ed25519 key
//! (`alg` `EdDSA`, `kid` the key's fingerprint, see [`key_id`]) over
//! [`Claims`]: the access record's facts and the SHA-256 of the response
//! message bytes exactly as sent.
//!
//! [`Core::call`](crate::service::Core::call) decides that a call gets a
//! receipt (its access record is durable and it answered OK) and attaches
//! its [`Claims`] to the response; [`ReceiptLayer`], around every service,
//! hashes the message bytes as they leave and adds the signed receipt to
//! the trailers, the only place a unary answer's hash can be known and still
//! be sent. [`verify`] checks one, as `interop-gateway receipt verify` does.

use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{ready, Context, Poll},
};

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use http_body::{Body as HttpBody, Frame, SizeHint};
use ring::digest;
use serde::{Deserialize, Serialize};
use tonic::{body::Body, codegen::Bytes, Status};

use crate::audit::{verify_signature, AuditRecord, Signer};

/// Trailing metadata key of the receipt.
pub const RECEIPT_TRAILER: &str = "x-interop-receipt";

/// Length of the gRPC message prefix (compressed flag, u32 length) that
/// precedes the message bytes in the response body.
const GRPC_PREFIX_LEN: usize = 5;

/// What a receipt asserts. Field names and order are the published format.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Request id: the access record's, and the `x-request-id` header's.
    pub rid: String,
    /// When the call arrived, Unix seconds.
    pub iat: i64,
    /// The agency the call was for.
    pub agency: String,
    /// Full method name.
    pub method: String,
    pub procedure: String,
    pub dossier: String,
    /// Whose records the answer concerns.
    pub subjects: Vec<String>,
    /// Field paths the answer discloses.
    pub fields: Vec<String>,
    /// gRPC status code name (`OK`).
    pub outcome: String,
    /// base64url SHA-256 of the response message bytes as sent (the gRPC
    /// message payload, before any compression).
    pub sha256: String,
}

impl Claims {
    /// The claims of a recorded call; `sha256` is filled in when the
    /// response leaves.
    pub fn of(record: &AuditRecord) -> Claims {
        Claims {
            rid: record.request_id.clone(),
            iat: record.time_unix_ms.div_euclid(1000),
            agency: record.agency_code.clone(),
            method: record.method.clone(),
            procedure: record.procedure_code.clone(),
            dossier: record.dossier_id.clone(),
            subjects: record.subjects.clone(),
            fields: record.fields.clone(),
            outcome: record.outcome.clone(),
            sha256: String::new(),
        }
    }
}

/// The `kid` of a key: lowercase hex SHA-256 of its DER
/// SubjectPublicKeyInfo, the bytes of `audit.pub`'s PEM body
/// (`openssl pkey -pubin -in audit.pub -outform DER | sha256sum`).
pub fn key_id(public_key: &[u8; 32]) -> String {
    crate::audit::signer::fingerprint(public_key)
}

/// base64url SHA-256 of `bytes`, as [`Claims::sha256`] holds it.
pub fn body_hash(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(digest::digest(&digest::SHA256, bytes))
}

#[derive(Serialize, Deserialize)]
struct Header {
    alg: String,
    kid: String,
}

/// Signs receipts with the access log's key.
pub struct ReceiptSigner {
    signer: Signer,
    /// The encoded protected header, the same for every receipt.
    header: String,
}

impl std::fmt::Debug for ReceiptSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReceiptSigner")
            .field("signer", &self.signer)
            .finish()
    }
}

impl ReceiptSigner {
    pub fn new(signer: Signer) -> Self {
        let header = Header {
            alg: "EdDSA".into(),
            kid: key_id(&signer.public_key()),
        };
        // Two plain strings always serialise.
        let json = serde_json::to_vec(&header).unwrap_or_default();
        ReceiptSigner {
            signer,
            header: URL_SAFE_NO_PAD.encode(json),
        }
    }

    /// The compact JWS of `claims`.
    pub fn sign(&self, claims: &Claims) -> String {
        // Strings and string lists always serialise.
        let payload = serde_json::to_vec(claims).unwrap_or_default();
        let mut jws = String::with_capacity(self.header.len() + payload.len() * 4 / 3 + 100);
        jws.push_str(&self.header);
        jws.push('.');
        URL_SAFE_NO_PAD.encode_string(payload, &mut jws);
        let signature = self.signer.sign(jws.as_bytes());
        jws.push('.');
        URL_SAFE_NO_PAD.encode_string(signature, &mut jws);
        jws
    }
}

/// Why a receipt does not verify.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReceiptError {
    /// Not three base64url parts with a JSON header and payload.
    #[error("not a compact JWS receipt: {0}")]
    Malformed(String),
    /// `alg` is not `EdDSA`.
    #[error("receipt algorithm is {0:?}; gateway receipts are EdDSA")]
    Algorithm(String),
    /// Signed by another key than the one given.
    #[error("receipt was signed by key {kid}, not by the given key {expected}")]
    OtherKey { kid: String, expected: String },
    /// The signature does not match header and payload.
    #[error(
        "receipt signature does not verify: header or payload altered, or not signed by this key"
    )]
    Signature,
    /// The response bytes are not the ones the receipt names.
    #[error(
        "response does not match the receipt: its SHA-256 is {actual}, the receipt names {claimed}"
    )]
    ResponseMismatch { claimed: String, actual: String },
}

/// Checks `jws` against the access log's public key and, when given, the
/// response message bytes; returns what it asserts.
pub fn verify(
    public_key: &[u8; 32],
    jws: &str,
    response: Option<&[u8]>,
) -> Result<Claims, ReceiptError> {
    let malformed = |what: &str| ReceiptError::Malformed(what.to_owned());
    let jws = jws.trim();
    let mut parts = jws.split('.');
    let (Some(header_b64), Some(payload_b64), Some(sig_b64), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(malformed("expected three '.'-separated parts"));
    };
    let decode = |part: &str, what: &str| {
        URL_SAFE_NO_PAD
            .decode(part)
            .map_err(|e| ReceiptError::Malformed(format!("{what} is not base64url: {e}")))
    };
    let header: Header = serde_json::from_slice(&decode(header_b64, "header")?)
        .map_err(|e| ReceiptError::Malformed(format!("header: {e}")))?;
    if header.alg != "EdDSA" {
        return Err(ReceiptError::Algorithm(header.alg));
    }
    let expected = key_id(public_key);
    if header.kid != expected {
        return Err(ReceiptError::OtherKey {
            kid: header.kid,
            expected,
        });
    }
    let signature = decode(sig_b64, "signature")?;
    let signed = &jws[..header_b64.len() + 1 + payload_b64.len()];
    if !verify_signature(public_key, signed.as_bytes(), &signature) {
        return Err(ReceiptError::Signature);
    }
    let claims: Claims = serde_json::from_slice(&decode(payload_b64, "payload")?)
        .map_err(|e| ReceiptError::Malformed(format!("payload: {e}")))?;
    if let Some(bytes) = response {
        let actual = body_hash(bytes);
        if actual != claims.sha256 {
            return Err(ReceiptError::ResponseMismatch {
                claimed: claims.sha256,
                actual,
            });
        }
    }
    Ok(claims)
}

/// Adds receipts to the responses that carry [`Claims`].
#[derive(Clone, Debug)]
pub struct ReceiptLayer {
    signer: Arc<ReceiptSigner>,
}

impl ReceiptLayer {
    pub fn new(signer: Arc<ReceiptSigner>) -> Self {
        ReceiptLayer { signer }
    }
}

impl<S> tower::Layer<S> for ReceiptLayer {
    type Service = ReceiptService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        ReceiptService {
            inner,
            signer: Arc::clone(&self.signer),
        }
    }
}

/// See [`ReceiptLayer`].
#[derive(Clone, Debug)]
pub struct ReceiptService<S> {
    inner: S,
    signer: Arc<ReceiptSigner>,
}

impl<S, B> tower::Service<http::Request<B>> for ReceiptService<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<Body>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let response = self.inner.call(request);
        let signer = Arc::clone(&self.signer);
        Box::pin(async move {
            let response = response.await?;
            let (mut parts, body) = response.into_parts();
            let body = match parts.extensions.remove::<Claims>() {
                None => body,
                Some(claims) => Body::new(ReceiptBody {
                    inner: body,
                    claims: Some(claims),
                    signer,
                    hash: digest::Context::new(&digest::SHA256),
                    prefix_seen: 0,
                    compressed: false,
                }),
            };
            Ok(http::Response::from_parts(parts, body))
        })
    }
}

/// A response body that hashes the message bytes it passes on and adds the
/// signed receipt to its trailers.
struct ReceiptBody {
    inner: Body,
    claims: Option<Claims>,
    signer: Arc<ReceiptSigner>,
    hash: digest::Context,
    /// Bytes of the gRPC message prefix passed so far (they are not hashed).
    prefix_seen: usize,
    /// The message was sent compressed: the receipt could not name the
    /// uncompressed bytes, so none is sent (this gateway never compresses).
    compressed: bool,
}

impl ReceiptBody {
    fn hash_data(&mut self, mut data: &[u8]) {
        if self.prefix_seen < GRPC_PREFIX_LEN {
            let take = (GRPC_PREFIX_LEN - self.prefix_seen).min(data.len());
            if self.prefix_seen == 0 && take > 0 && data[0] != 0 {
                self.compressed = true;
            }
            self.prefix_seen += take;
            data = &data[take..];
        }
        self.hash.update(data);
    }

    fn add_receipt(&mut self, trailers: &mut http::HeaderMap) {
        let Some(mut claims) = self.claims.take() else {
            return;
        };
        // Only an answer that ended OK is receipted.
        if trailers.get("grpc-status").map(|v| v.as_bytes()) != Some(b"0") || self.compressed {
            return;
        }
        let hash = std::mem::replace(&mut self.hash, digest::Context::new(&digest::SHA256));
        claims.sha256 = URL_SAFE_NO_PAD.encode(hash.finish());
        match http::HeaderValue::try_from(self.signer.sign(&claims)) {
            Ok(v) => {
                trailers.insert(RECEIPT_TRAILER, v);
            }
            Err(e) => tracing::error!(error = %e, "receipt is not a header value"),
        }
    }
}

impl HttpBody for ReceiptBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let this = &mut *self;
        let mut frame = match ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
            Some(Ok(frame)) => frame,
            other => return Poll::Ready(other),
        };
        if let Some(data) = frame.data_ref() {
            this.hash_data(data);
        } else if let Some(trailers) = frame.trailers_mut() {
            this.add_receipt(trailers);
        }
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims() -> Claims {
        Claims {
            rid: "0123456789abcdef0123456789abcdef".into(),
            iat: 1_764_000_000,
            agency: "000.00.20.H13".into(),
            method: "interop.citizen.v1.CitizenRegistryService/GetCitizen".into(),
            procedure: "1.004227".into(),
            dossier: "000.00.20.H13-241205-0001".into(),
            subjects: vec!["092085000123".into()],
            fields: vec!["full_name".into()],
            outcome: "OK".into(),
            sha256: body_hash(b"response"),
        }
    }

    fn signer(dir: &std::path::Path, name: &str) -> ReceiptSigner {
        ReceiptSigner::new(Signer::load_or_create(&dir.join(name)).unwrap())
    }

    #[test]
    fn a_receipt_verifies_with_its_key_and_response_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let a = signer(dir.path(), "a");
        let b = signer(dir.path(), "b");
        let jws = a.sign(&claims());
        let key = a.signer.public_key();
        assert_eq!(verify(&key, &jws, Some(b"response")), Ok(claims()));
        assert_eq!(verify(&key, &jws, None), Ok(claims()));
        assert!(matches!(
            verify(&key, &jws, Some(b"responsE")),
            Err(ReceiptError::ResponseMismatch { .. })
        ));
        assert!(matches!(
            verify(&b.signer.public_key(), &jws, None),
            Err(ReceiptError::OtherKey { .. })
        ));
        // A payload swapped under the same header and signature.
        let mut other = claims();
        other.fields.push("permanent_address".into());
        let forged_payload = b.sign(&other);
        let parts: Vec<&str> = jws.split('.').collect();
        let forged = format!(
            "{}.{}.{}",
            parts[0],
            forged_payload.split('.').nth(1).unwrap(),
            parts[2]
        );
        assert_eq!(verify(&key, &forged, None), Err(ReceiptError::Signature));
        assert!(matches!(
            verify(&key, "a.b", None),
            Err(ReceiptError::Malformed(_))
        ));
    }

    #[test]
    fn the_header_is_eddsa_with_the_key_fingerprint() {
        let dir = tempfile::tempdir().unwrap();
        let a = signer(dir.path(), "a");
        let jws = a.sign(&claims());
        let header = URL_SAFE_NO_PAD
            .decode(jws.split('.').next().unwrap())
            .unwrap();
        let header: serde_json::Value = serde_json::from_slice(&header).unwrap();
        assert_eq!(header["alg"], "EdDSA");
        let kid = header["kid"].as_str().unwrap();
        assert_eq!(kid.len(), 64);
        assert_eq!(kid, key_id(&a.signer.public_key()));
        // The payload keeps the published field order.
        let payload = URL_SAFE_NO_PAD
            .decode(jws.split('.').nth(1).unwrap())
            .unwrap();
        let text = String::from_utf8(payload).unwrap();
        assert!(text.starts_with(r#"{"rid":"#), "{text}");
        assert!(text.contains(r#""outcome":"OK","sha256":"#), "{text}");
    }

    #[test]
    fn the_message_prefix_is_not_hashed_however_the_body_is_split() {
        let dir = tempfile::tempdir().unwrap();
        let signer = Arc::new(signer(dir.path(), "a"));
        let mut framed = vec![0u8, 0, 0, 0, 8];
        framed.extend_from_slice(b"response");
        for split in 0..framed.len() {
            let mut body = ReceiptBody {
                inner: Body::empty(),
                claims: Some(claims()),
                signer: Arc::clone(&signer),
                hash: digest::Context::new(&digest::SHA256),
                prefix_seen: 0,
                compressed: false,
            };
            body.hash_data(&framed[..split]);
            body.hash_data(&framed[split..]);
            let mut trailers = http::HeaderMap::new();
            trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
            body.add_receipt(&mut trailers);
            let jws = trailers.get(RECEIPT_TRAILER).unwrap().to_str().unwrap();
            verify(&signer.signer.public_key(), jws, Some(b"response")).unwrap();
        }
    }
}
