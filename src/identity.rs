//! Certificate -> agency. The rule lives here and nowhere else: an agency is
//! the URI SAN `spiffe://<trust_domain>/agency/<agency_code>` of the client
//! certificate that completed the mutual-TLS handshake, and the code must be
//! one the config knows. Whether the certificate still verifies under the
//! trust in force (CRLs, the agency's own CA), and the cache of verdicts, are
//! the snapshot's (`snapshot.rs`).

use x509_parser::{certificate::X509Certificate, extensions::GeneralName, prelude::FromDer};

use crate::error::{reason, RequestError};

/// The calling agency's code, as proven by its certificate.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct AgencyId(String);

impl AgencyId {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for AgencyId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The SPIFFE URIs of a DER certificate's subject alternative names.
pub fn spiffe_uris(cert_der: &[u8]) -> Result<Vec<String>, String> {
    Ok(uri_sans(cert_der)?
        .into_iter()
        .filter(|u| u.to_ascii_lowercase().starts_with("spiffe://"))
        .collect())
}

/// Every URI SAN of a DER certificate.
fn uri_sans(cert_der: &[u8]) -> Result<Vec<String>, String> {
    let (_, cert) = X509Certificate::from_der(cert_der)
        .map_err(|e| format!("client certificate could not be parsed: {e}"))?;
    let mut uris = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            if let GeneralName::URI(uri) = name {
                uris.push((*uri).to_owned());
            }
        }
    }
    Ok(uris)
}

/// Resolves the agency of a verified client certificate.
///
/// `is_known` says whether an agency code is configured.
pub fn agency_of(
    cert_der: &[u8],
    trust_domain: &str,
    is_known: impl Fn(&str) -> bool,
) -> Result<AgencyId, RequestError> {
    let unauthenticated =
        |reason, message: String| RequestError::Unauthenticated { reason, message };
    let uris = spiffe_uris(cert_der).map_err(|m| unauthenticated(reason::NO_AGENCY_IDENTITY, m))?;
    let expected = format!("spiffe://{trust_domain}/agency/<agency code>");
    if uris.is_empty() {
        return Err(unauthenticated(
            reason::NO_AGENCY_IDENTITY,
            format!("client certificate has no SPIFFE URI SAN; the gateway expects {expected}"),
        ));
    }
    // An X.509 SVID carries exactly one URI SAN; a certificate naming several
    // identities is refused rather than read as whichever comes first.
    let all = uri_sans(cert_der).map_err(|m| unauthenticated(reason::NO_AGENCY_IDENTITY, m))?;
    if all.len() > 1 {
        return Err(unauthenticated(
            reason::NO_AGENCY_IDENTITY,
            format!(
                "client certificate has {} URI SANs ({}); an agency certificate carries exactly one, {expected}",
                all.len(),
                all.join(", ")
            ),
        ));
    }
    let prefix = format!("spiffe://{trust_domain}/");
    let Some(in_domain) = uris.iter().find(|u| u.starts_with(&prefix)) else {
        return Err(unauthenticated(
            reason::WRONG_TRUST_DOMAIN,
            format!(
                "client certificate names {} but this gateway's trust domain is {trust_domain}; expected {expected}",
                uris.join(", ")
            ),
        ));
    };
    let Some(code) = in_domain[prefix.len()..].strip_prefix("agency/") else {
        return Err(unauthenticated(
            reason::NO_AGENCY_IDENTITY,
            format!("client certificate URI {in_domain} is not of the form {expected}"),
        ));
    };
    if !is_known(code) {
        return Err(unauthenticated(
            reason::UNKNOWN_AGENCY,
            format!("agency {code:?} (from {in_domain}) is not configured on this gateway; ask its operator to add an [[agency]] entry"),
        ));
    }
    Ok(AgencyId(code.to_owned()))
}

/// Whom a call is for: the calling agency itself, or, when a relay (another
/// gateway, `[[agency]] relay = true`) calls on behalf of one of its
/// consumers, that consumer; the relay is then kept beside it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    /// The agency whose grants apply and whom the access log names.
    pub agency: AgencyId,
    /// The relay that carried the call, if any.
    pub relay: Option<AgencyId>,
}

/// Decides whom a call from `caller` is for, given the value of its
/// `x-interop-on-behalf-of` header (`None`: absent; `Some(Err(why))`: present
/// but unusable). Only a relay may name another agency, and only a configured
/// one; a relay without the header is itself.
pub fn principal(
    caller: AgencyId,
    on_behalf_of: Option<Result<&str, &'static str>>,
    is_relay: impl Fn(&str) -> bool,
    is_known: impl Fn(&str) -> bool,
) -> Result<Principal, RequestError> {
    let Some(named) = on_behalf_of else {
        return Ok(Principal {
            agency: caller,
            relay: None,
        });
    };
    if !is_relay(caller.as_str()) {
        return Err(RequestError::PermissionDenied {
            reason: reason::RELAY_NOT_ALLOWED,
            message: format!(
                "agency {caller} may not call on behalf of another agency (x-interop-on-behalf-of); only agencies configured with relay = true may"
            ),
            metadata: vec![("agency".to_owned(), caller.to_string())],
        });
    }
    let code = named.map_err(|why| RequestError::Unauthenticated {
        reason: reason::UNKNOWN_AGENCY,
        message: why.into(),
    })?;
    if !is_known(code) {
        return Err(RequestError::Unauthenticated {
            reason: reason::UNKNOWN_AGENCY,
            message: format!(
                "agency {code:?} (from x-interop-on-behalf-of, relayed by {caller}) is not configured on this gateway; ask its operator to add an [[agency]] entry"
            ),
        });
    }
    if code == caller.as_str() {
        return Ok(Principal {
            agency: caller,
            relay: None,
        });
    }
    Ok(Principal {
        agency: AgencyId(code.to_owned()),
        relay: Some(caller),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::{Ca, Validity};
    use rustls_pki_types::{pem::PemObject, CertificateDer};

    fn der(pem: &str) -> Vec<u8> {
        CertificateDer::from_pem_slice(pem.as_bytes())
            .unwrap()
            .to_vec()
    }

    /// A certificate of `code` in the `interop.example.vn` trust domain, DER.
    fn agency_der(ca: &Ca, code: &str) -> Vec<u8> {
        let cert = ca
            .issue_agency("interop.example.vn", code, Validity::days_from_now(1))
            .unwrap();
        der(&cert.cert_pem)
    }

    #[test]
    fn agency_from_spiffe_uri() {
        let ca = Ca::generate("test").unwrap();
        let d = agency_der(&ca, "000.00.20.H13");
        let id = agency_of(&d, "interop.example.vn", |c| c == "000.00.20.H13").unwrap();
        assert_eq!(id.as_str(), "000.00.20.H13");
        let err = agency_of(&d, "other.vn", |_| true).unwrap_err();
        assert!(matches!(
            err,
            RequestError::Unauthenticated {
                reason: reason::WRONG_TRUST_DOMAIN,
                ..
            }
        ));
        let err = agency_of(&d, "interop.example.vn", |_| false).unwrap_err();
        assert!(matches!(
            err,
            RequestError::Unauthenticated {
                reason: reason::UNKNOWN_AGENCY,
                ..
            }
        ));
        let plain = ca
            .issue_client("x", None, Validity::days_from_now(1))
            .unwrap();
        let err = agency_of(&der(&plain.cert_pem), "interop.example.vn", |_| true).unwrap_err();
        assert!(matches!(
            err,
            RequestError::Unauthenticated {
                reason: reason::NO_AGENCY_IDENTITY,
                ..
            }
        ));
    }

    #[test]
    fn certificate_naming_two_identities_is_refused() {
        use rcgen::{CertificateParams, KeyPair, SanType};
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::default();
        params.subject_alt_names = ["000.00.20.H13", "000.00.12.H13"]
            .iter()
            .map(|c| {
                SanType::URI(
                    format!("spiffe://interop.example.vn/agency/{c}")
                        .try_into()
                        .unwrap(),
                )
            })
            .collect();
        let cert = params.self_signed(&key).unwrap();
        let err = agency_of(cert.der(), "interop.example.vn", |_| true).unwrap_err();
        assert!(matches!(
            err,
            RequestError::Unauthenticated {
                reason: reason::NO_AGENCY_IDENTITY,
                ..
            }
        ));
    }

    #[test]
    fn only_relays_call_on_behalf_of_configured_agencies() {
        let id = |c: &str| AgencyId(c.to_owned());
        let relay = |c: &str| c == "000.00.00.H99";
        let known = |c: &str| c != "000.00.00.X00";
        let me = |c: &str| principal(id(c), None, relay, known).unwrap();
        assert_eq!(me("000.00.20.H13").agency, id("000.00.20.H13"));
        assert_eq!(me("000.00.00.H99").relay, None);

        let relayed =
            principal(id("000.00.00.H99"), Some(Ok("000.00.20.H13")), relay, known).unwrap();
        assert_eq!(relayed.agency, id("000.00.20.H13"));
        assert_eq!(relayed.relay, Some(id("000.00.00.H99")));

        let reason_of = |r: Result<Principal, RequestError>| match r.unwrap_err() {
            RequestError::PermissionDenied { reason, .. }
            | RequestError::Unauthenticated { reason, .. } => reason,
            other => panic!("{other:?}"),
        };
        let not_relay = principal(id("000.00.20.H13"), Some(Ok("000.00.12.H13")), relay, known);
        assert_eq!(reason_of(not_relay), reason::RELAY_NOT_ALLOWED);
        let unknown = principal(id("000.00.00.H99"), Some(Ok("000.00.00.X00")), relay, known);
        assert_eq!(reason_of(unknown), reason::UNKNOWN_AGENCY);
        let garbled = principal(
            id("000.00.00.H99"),
            Some(Err("x-interop-on-behalf-of is not an agency code")),
            relay,
            known,
        );
        assert_eq!(reason_of(garbled), reason::UNKNOWN_AGENCY);
    }
}
