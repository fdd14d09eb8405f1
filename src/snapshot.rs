//! The configuration in force, as one immutable value: the validated config,
//! the TLS server config built from its files, the client-certificate
//! verifiers (the `client_ca` bundle, each agency's own `ca`, the CRLs), and
//! the caches of decisions made under it.
//!
//! Every call takes one `Arc<Snapshot>` when it starts ([`Live::snapshot`])
//! and uses only that, so a call never sees half of one config and half of
//! another. A reload ([`Live::reload`], on SIGHUP) reads the config file and
//! every file it names, builds and validates a whole new snapshot, and only
//! then swaps it in; a config that does not validate leaves the old one in
//! force. Nothing in a snapshot is mutated after it is built except its
//! caches, and those hold only what its own config decides (so a reload
//! starts them empty: a certificate revoked, or an agency removed, by the new
//! config is looked at again on its next call).

use std::{
    collections::HashMap,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::{SystemTime, UNIX_EPOCH},
};

use arc_swap::ArcSwap;
use rustls::{server::danger::ClientCertVerifier, CertificateError};
use rustls_pki_types::{CertificateDer, UnixTime};

use crate::{
    cache::BoundedCache,
    config::{Config, ConfigError},
    error::{reason, RequestError},
    identity::{self, AgencyId, Principal},
    policy::DisclosureCache,
    tls::{self, Anchors, TlsError},
};

/// Distinct certificates whose verdict a snapshot remembers at most.
const VERDICT_CACHE_ENTRIES: usize = 4096;

/// One immutable view of everything config-derived. See the module docs.
pub struct Snapshot {
    /// The validated config.
    pub config: Config,
    /// 1 for the config the gateway started with, then one more per
    /// successful reload: the "CRL generation" verdicts are cached under.
    pub generation: u64,
    /// What new handshakes are served with: the gateway's certificate and a
    /// client verifier over every trusted CA (`client_ca` and each agency's
    /// `ca`) and the CRLs.
    pub tls: Arc<rustls::ServerConfig>,
    /// Chains to a CA of `tls.client_ca`, with the CRLs: for agencies
    /// without a `ca` of their own.
    shared: Arc<dyn ClientCertVerifier>,
    /// Per agency with `ca`: that file, and a verifier trusting only it.
    per_agency: HashMap<String, (PathBuf, Arc<dyn ClientCertVerifier>)>,
    /// Certificates in the `tls.client_ca` bundle.
    client_cas: usize,
    /// CRLs past their `nextUpdate` (see [`tls::load_crls`]).
    crl_warnings: Vec<String>,
    /// Leaf certificate (DER) -> its agency, once verified under this
    /// snapshot; only successes are kept.
    verdicts: BoundedCache<Vec<u8>, Verdict>,
    /// Grant decisions made under this snapshot's policy.
    pub disclosures: DisclosureCache,
}

impl std::fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Snapshot")
            .field("config", &self.config.path)
            .field("generation", &self.generation)
            .finish_non_exhaustive()
    }
}

/// A certificate found good for an agency, until it expires.
#[derive(Clone, Debug)]
struct Verdict {
    agency: AgencyId,
    /// The certificate's notAfter, seconds since the Unix epoch.
    not_after: i64,
}

fn config_error(config: &Config, e: TlsError) -> ConfigError {
    ConfigError {
        file: config.path.display().to_string(),
        message: e.to_string(),
    }
}

fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

impl Snapshot {
    /// Reads every file `config` names (gateway certificate and key, client
    /// CA bundle, each agency's CA, CRLs) and builds the snapshot; any file
    /// that cannot be used is an error naming the config file, the key and
    /// the file.
    pub fn build(config: Config, generation: u64) -> Result<Snapshot, ConfigError> {
        let fail = |e| config_error(&config, e);
        let files = &config.tls;
        let client_ca = Anchors {
            key: "tls.client_ca",
            path: &files.client_ca,
            certs: tls::load_certs("tls.client_ca", &files.client_ca).map_err(fail)?,
        };
        let client_cas = client_ca.certs.len();
        let (crls, crl_warnings) = tls::load_crls(&files.crls, now_unix()).map_err(fail)?;
        let eku = files.require_client_auth_eku;
        let mut per_agency = HashMap::new();
        let mut every_ca = Vec::new();
        for agency in config.agencies.values() {
            let Some(path) = &agency.ca else { continue };
            let certs = tls::load_certs("agency.ca", path).map_err(|e| ConfigError {
                file: config.path.display().to_string(),
                message: format!(
                    "agency {:?}: ca ({}): {}",
                    agency.code,
                    path.display(),
                    e.message
                ),
            })?;
            let own = Anchors {
                key: "agency.ca",
                path,
                certs,
            };
            let verifier =
                tls::client_verifier(std::slice::from_ref(&own), &crls, eku).map_err(fail)?;
            per_agency.insert(agency.code.clone(), (path.clone(), verifier));
            every_ca.push(own);
        }
        let shared =
            tls::client_verifier(std::slice::from_ref(&client_ca), &crls, eku).map_err(fail)?;
        every_ca.insert(0, client_ca);
        let handshake = tls::client_verifier(&every_ca, &crls, eku).map_err(fail)?;
        let tls = tls::server_config_with(files, handshake).map_err(fail)?;
        drop(every_ca);
        Ok(Snapshot {
            config,
            generation,
            tls,
            shared,
            per_agency,
            client_cas,
            crl_warnings,
            verdicts: BoundedCache::new(VERDICT_CACHE_ENTRIES),
            disclosures: DisclosureCache::default(),
        })
    }

    /// What an operator should fix though the config is usable: with several
    /// trusted CAs, each agency without a `ca` of its own can be vouched for
    /// by any of them.
    pub fn warnings(&self) -> Vec<String> {
        let mut warnings = self.crl_warnings.clone();
        if self.client_cas < 2 {
            return warnings;
        }
        warnings.extend(self.config
            .agencies
            .values()
            .filter(|a| a.ca.is_none())
            .map(|a| {
                format!(
                    "agency {:?} has no `ca`: any of the {} CAs in tls.client_ca ({}) can issue certificates naming it; set [[agency]] ca to the CA that issues its certificates",
                    a.code,
                    self.client_cas,
                    self.config.tls.client_ca.display()
                )
            })
        );
        warnings
    }

    /// The configured agency a client certificate chain (leaf first, as the
    /// peer sent it) names, checked against this snapshot's trust: the
    /// agency must be configured, and the chain must verify (validity, CRLs)
    /// against the agency's own `ca` when it has one, else the `client_ca`
    /// bundle. The handshake checked the chain against the trust of its own
    /// time; this is what makes a reload bite on open connections. A
    /// success is remembered for this snapshot (until the certificate
    /// expires), so steady-state calls cost a lookup.
    pub fn authenticate(&self, chain: &[CertificateDer<'_>]) -> Result<AgencyId, RequestError> {
        let leaf = chain.first().ok_or_else(|| RequestError::Unauthenticated {
            reason: reason::NO_AGENCY_IDENTITY,
            message: "no client certificate on this connection".into(),
        })?;
        let now = now_unix();
        if let Some(hit) = self.verdicts.get(leaf.as_ref()) {
            if now < hit.not_after {
                return Ok(hit.agency);
            }
        }
        let agency = identity::agency_of(leaf, &self.config.trust_domain, |code| {
            self.config.agencies.contains_key(code)
        })?;
        let (verifier, own_ca) = match self.per_agency.get(agency.as_str()) {
            Some((path, verifier)) => (verifier, Some(path)),
            None => (&self.shared, None),
        };
        let intermediates = chain.get(1..).unwrap_or_default();
        if let Err(e) = verifier.verify_client_cert(leaf, intermediates, UnixTime::now()) {
            return Err(self.refusal(&agency, own_ca, e));
        }
        let not_after = x509_parser::parse_x509_certificate(leaf)
            .map_or(0, |(_, c)| c.validity().not_after.timestamp());
        self.verdicts.insert(
            leaf.to_vec(),
            Verdict {
                agency: agency.clone(),
                not_after,
            },
        );
        Ok(agency)
    }

    /// Why a certificate that names `agency` does not verify now.
    fn refusal(
        &self,
        agency: &AgencyId,
        own_ca: Option<&PathBuf>,
        e: rustls::Error,
    ) -> RequestError {
        let unauthenticated =
            |reason, message: String| RequestError::Unauthenticated { reason, message };
        match e {
            rustls::Error::InvalidCertificate(CertificateError::Revoked) => unauthenticated(
                reason::CERTIFICATE_REVOKED,
                format!("this certificate of agency {agency} is revoked by a CRL of this gateway; use a newly issued one"),
            ),
            rustls::Error::InvalidCertificate(
                CertificateError::UnknownIssuer | CertificateError::BadSignature,
            ) => match own_ca {
                Some(ca) => unauthenticated(
                    reason::WRONG_ISSUER,
                    format!(
                        "agency {agency}'s certificates must be issued by its own CA ({}); this one is not",
                        ca.display()
                    ),
                ),
                None => unauthenticated(
                    reason::WRONG_ISSUER,
                    format!(
                        "this certificate of agency {agency} is not issued by a CA of tls.client_ca ({})",
                        self.config.tls.client_ca.display()
                    ),
                ),
            },
            other => unauthenticated(
                reason::CERTIFICATE_INVALID,
                format!("this certificate of agency {agency} is no longer valid: {other}"),
            ),
        }
    }

    /// [`Snapshot::authenticate`] for the peer certificates tonic hands a
    /// call.
    pub fn agency_of_peer(
        &self,
        certs: Option<&[tonic::transport::CertificateDer<'static>]>,
    ) -> Result<AgencyId, RequestError> {
        self.authenticate(certs.unwrap_or_default())
    }

    /// Whom a call from `caller` is for ([`identity::principal`] under this
    /// snapshot's agencies).
    pub fn principal_of(
        &self,
        caller: AgencyId,
        on_behalf_of: Option<Result<&str, &'static str>>,
    ) -> Result<Principal, RequestError> {
        identity::principal(
            caller,
            on_behalf_of,
            |code| self.config.agencies.get(code).is_some_and(|a| a.relay),
            |code| self.config.agencies.contains_key(code),
        )
    }
}

/// What a successful reload changed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReloadSummary {
    /// The new snapshot's generation.
    pub generation: u64,
    pub agencies: usize,
    pub grants: usize,
    pub crl_files: usize,
    /// Keys that differ from the config the process started with but only
    /// take effect at the next start (they shape the listener, the store,
    /// the access log or the forwarding channels).
    pub restart_needed: Vec<&'static str>,
    /// [`Snapshot::warnings`] of the new snapshot.
    pub warnings: Vec<String>,
}

impl ReloadSummary {
    /// `old`: the config the process started with, which is what the
    /// start-only keys still follow (not the previous reload's).
    fn between(old: &Config, new: &Snapshot) -> ReloadSummary {
        let c = &new.config;
        let mut restart_needed = Vec::new();
        let mut changed = |key, differs: bool| {
            if differs {
                restart_needed.push(key);
            }
        };
        changed("listen", old.listen != c.listen);
        changed("data_dir", old.data_dir != c.data_dir);
        changed("dev", old.dev != c.dev);
        changed("log_format", old.log_format != c.log_format);
        changed(
            "audit",
            format!("{:?}", old.audit) != format!("{:?}", c.audit),
        );
        changed(
            "registry",
            format!("{:?}", old.registries) != format!("{:?}", c.registries),
        );
        // Built into the verification budget at start; `max_in_flight`,
        // `max_request_bytes` and `max_call_ms` are read per call.
        let verify = |l: &crate::config::Limits| {
            (
                l.verify_failures_per_subject,
                l.verify_window,
                l.verify_failures_per_agency_hour,
            )
        };
        changed("limits.verify_*", verify(&old.limits) != verify(&c.limits));
        changed(
            "admin.listen",
            old.admin.as_ref().map(|a| a.listen) != c.admin.as_ref().map(|a| a.listen),
        );
        // Built into the connection cap and tonic's HTTP/2 settings at
        // start; the other connection limits apply to the next connection.
        let (o, n) = (&old.connections, &c.connections);
        changed(
            "limits.max_connections",
            o.max_connections != n.max_connections,
        );
        changed("limits.fd_reserve", o.fd_reserve != n.fd_reserve);
        changed(
            "limits.keepalive_interval_ms",
            o.keepalive_interval != n.keepalive_interval,
        );
        changed(
            "limits.keepalive_timeout_ms",
            o.keepalive_timeout != n.keepalive_timeout,
        );
        changed(
            "limits.max_concurrent_streams",
            o.max_concurrent_streams != n.max_concurrent_streams,
        );
        changed(
            "limits.max_header_list_bytes",
            o.max_header_list_bytes != n.max_header_list_bytes,
        );
        changed(
            "limits.max_pending_reset_streams",
            o.max_pending_reset_streams != n.max_pending_reset_streams,
        );
        ReloadSummary {
            generation: new.generation,
            agencies: c.agencies.len(),
            grants: c.policy.grant_count(),
            crl_files: c.tls.crls.len(),
            restart_needed,
            warnings: new.warnings(),
        }
    }
}

/// The snapshot in force, swapped whole by a reload.
pub struct Live {
    current: ArcSwap<Snapshot>,
    /// The config the process started with: what the start-only keys follow.
    started: Arc<Config>,
    /// One reload at a time: two signals in a row build in turn, and the
    /// later file wins.
    reloading: Mutex<()>,
}

impl std::fmt::Debug for Live {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Live")
            .field("current", &self.snapshot())
            .finish_non_exhaustive()
    }
}

impl Live {
    /// The first snapshot, generation 1.
    pub fn new(config: Config) -> Result<Arc<Live>, ConfigError> {
        let started = Arc::new(config.clone());
        Ok(Arc::new(Live {
            current: ArcSwap::from_pointee(Snapshot::build(config, 1)?),
            started,
            reloading: Mutex::new(()),
        }))
    }

    /// The snapshot in force: a call takes it once, at its start.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// Re-reads the config file the current snapshot came from and every
    /// file it names, validates all of it, and swaps the new snapshot in;
    /// on any error nothing changes. Never creates a file (dev mode
    /// included): what is missing is an error.
    pub fn reload(&self) -> Result<ReloadSummary, ConfigError> {
        let _one = self.reloading.lock().unwrap_or_else(|e| e.into_inner());
        let old = self.snapshot();
        let config = Config::load(&old.config.path)?;
        config.check_files()?;
        let snapshot = Snapshot::build(config, old.generation + 1)?;
        let summary = ReloadSummary::between(&self.started, &snapshot);
        self.current.store(Arc::new(snapshot));
        Ok(summary)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::{self, Ca, Validity};
    use rustls_pki_types::pem::PemObject;

    const TD: &str = "interop.example.vn";
    const CODE: &str = "000.00.20.H13";

    fn der(pem: &str) -> CertificateDer<'static> {
        CertificateDer::from_pem_slice(pem.as_bytes()).unwrap()
    }

    /// A config over `dir` trusting `ca` (and `extra` CAs in the bundle),
    /// with one agency and the given agency `ca` line and CRL files.
    fn setup(dir: &std::path::Path, ca: &Ca, extra: &[&Ca], agency_ca: &str, crls: &str) -> Config {
        let server = ca.issue_server(&["localhost"]).unwrap();
        pki::write_issued(&dir.join("gw.pem"), &dir.join("gw.key"), &server).unwrap();
        let mut bundle = ca.cert_pem().to_owned();
        for e in extra {
            bundle.push_str(e.cert_pem());
        }
        std::fs::write(dir.join("ca.pem"), bundle).unwrap();
        let text = format!(
            "listen = \"127.0.0.1:0\"\ntrust_domain = \"{TD}\"\ndata_dir = \"data\"\n[tls]\ncert = \"gw.pem\"\nkey = \"gw.key\"\nclient_ca = \"ca.pem\"\ncrls = [{crls}]\n[[agency]]\ncode = \"{CODE}\"\nname = \"x\"\n{agency_ca}\n"
        );
        let path = dir.join("gateway.toml");
        std::fs::write(&path, text).unwrap();
        Config::load(&path).unwrap()
    }

    fn reason_of(r: Result<AgencyId, RequestError>) -> &'static str {
        match r.unwrap_err() {
            RequestError::Unauthenticated { reason, .. } => reason,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_revoked_certificate_is_refused_under_the_crl_generation_that_lists_it() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::generate("ca").unwrap();
        let cert = ca
            .issue_agency(TD, CODE, Validity::days_from_now(1))
            .unwrap();
        let chain = [der(&cert.cert_pem)];
        let before = Snapshot::build(setup(dir.path(), &ca, &[], "", ""), 1).unwrap();
        assert_eq!(before.authenticate(&chain).unwrap().as_str(), CODE);
        // Cached: the same answer again under the same generation.
        assert_eq!(before.authenticate(&chain).unwrap().as_str(), CODE);
        std::fs::write(
            dir.path().join("crl.pem"),
            ca.crl_pem(&[cert.serial]).unwrap(),
        )
        .unwrap();
        let after = Snapshot::build(setup(dir.path(), &ca, &[], "", "\"crl.pem\""), 2).unwrap();
        assert_eq!(
            reason_of(after.authenticate(&chain)),
            reason::CERTIFICATE_REVOKED
        );
        // The old snapshot, still held by calls in progress, is unchanged.
        assert!(before.authenticate(&chain).is_ok());
    }

    #[test]
    fn an_agency_with_its_own_ca_refuses_certificates_of_other_cas() {
        let dir = tempfile::tempdir().unwrap();
        let (ca, other) = (Ca::generate("ca").unwrap(), Ca::generate("other").unwrap());
        std::fs::write(dir.path().join("own.pem"), other.cert_pem()).unwrap();
        let config = setup(dir.path(), &ca, &[&other], "ca = \"own.pem\"", "");
        let snapshot = Snapshot::build(config, 1).unwrap();
        assert!(snapshot.warnings().is_empty(), "{:?}", snapshot.warnings());
        let wrong = ca
            .issue_agency(TD, CODE, Validity::days_from_now(1))
            .unwrap();
        assert_eq!(
            reason_of(snapshot.authenticate(&[der(&wrong.cert_pem)])),
            reason::WRONG_ISSUER
        );
        let right = other
            .issue_agency(TD, CODE, Validity::days_from_now(1))
            .unwrap();
        assert!(snapshot.authenticate(&[der(&right.cert_pem)]).is_ok());
    }

    #[test]
    fn several_cas_and_an_agency_without_its_own_is_a_warning() {
        let dir = tempfile::tempdir().unwrap();
        let (ca, other) = (Ca::generate("ca").unwrap(), Ca::generate("other").unwrap());
        let snapshot = Snapshot::build(setup(dir.path(), &ca, &[&other], "", ""), 1).unwrap();
        let warnings = snapshot.warnings();
        assert_eq!(warnings.len(), 1);
        assert!(
            warnings[0].contains(CODE) && warnings[0].contains("ca"),
            "{warnings:?}"
        );
    }

    #[test]
    fn a_bad_file_names_the_config_the_key_and_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::generate("ca").unwrap();
        std::fs::write(dir.path().join("crl.pem"), "not a crl").unwrap();
        let config = setup(dir.path(), &ca, &[], "", "\"crl.pem\"");
        let e = Snapshot::build(config, 1).unwrap_err();
        assert!(e.file.ends_with("gateway.toml"), "{e}");
        assert!(
            e.message.starts_with("tls.crls (") && e.message.contains("crl.pem"),
            "{e}"
        );
    }

    /// A CRL that is PEM but not a CRL is named as the CRL file, not as the
    /// CA the verifier is built for; a cut-off one says what is missing.
    #[test]
    fn a_broken_crl_is_named_as_such() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::generate("ca").unwrap();
        std::fs::write(dir.path().join("own-ca.pem"), ca.cert_pem()).unwrap();
        std::fs::write(
            dir.path().join("crl.pem"),
            "-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n",
        )
        .unwrap();
        let config = setup(dir.path(), &ca, &[], "ca = \"own-ca.pem\"", "\"crl.pem\"");
        let e = Snapshot::build(config, 1).unwrap_err();
        assert!(
            e.message.starts_with("tls.crls (") && e.message.contains("does not parse"),
            "{e}"
        );
        std::fs::write(
            dir.path().join("crl.pem"),
            "-----BEGIN X509 CRL-----\nAAAA\n",
        )
        .unwrap();
        let config = setup(dir.path(), &ca, &[], "", "\"crl.pem\"");
        let e = Snapshot::build(config, 1).unwrap_err();
        assert!(e.message.contains("\"-----END X509 CRL-----\""), "{e}");
    }

    /// A CRL past its `nextUpdate` is applied, with a warning.
    #[test]
    fn a_crl_past_its_next_update_is_applied_with_a_warning() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::generate("ca").unwrap();
        let path = dir.path().join("crl.pem");
        std::fs::write(&path, ca.crl_pem(&[7]).unwrap()).unwrap();
        let now = now_unix();
        let (crls, warnings) = tls::load_crls(std::slice::from_ref(&path), now).unwrap();
        assert_eq!((crls.len(), warnings.len()), (1, 0));
        let in_a_month = now + 30 * 86_400;
        let (crls, warnings) = tls::load_crls(std::slice::from_ref(&path), in_a_month).unwrap();
        assert_eq!(crls.len(), 1);
        assert!(
            warnings.len() == 1
                && warnings[0].contains("nextUpdate")
                && warnings[0].contains("crl.pem"),
            "{warnings:?}"
        );
    }
}
