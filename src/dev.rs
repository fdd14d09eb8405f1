//! Development bootstrap for a config that marks itself `dev = true`: creates
//! a missing dev PKI (CA, gateway certificate, one certificate per configured
//! agency) and a missing store (filled with the demo extract). A config without
//! the mark never gets anything created for it.

use crate::{
    config::Config,
    demo,
    pki::{self, Ca, Layout, PkiError, Validity},
    registry::{import::import_file, Registry},
};

/// Citizens in the demo extract a dev store is filled with.
pub const DEV_CITIZENS: usize = 2_000;

/// Creates whatever of the dev PKI is missing; returns what it did.
pub fn ensure_pki(config: &Config) -> Result<Vec<String>, PkiError> {
    let layout = Layout::new(config.pki_dir());
    let mut done = Vec::new();
    let ca = if config.tls.client_ca.is_file() {
        None
    } else {
        let ca = Ca::generate("interop-gateway dev CA")?;
        pki::write_file(&layout.ca_key(), &ca.key_pem(), true)?;
        pki::write_file(&config.tls.client_ca, ca.cert_pem(), false)?;
        done.push(format!("created dev CA {}", config.tls.client_ca.display()));
        Some(ca)
    };
    let missing_server = !config.tls.cert.is_file() || !config.tls.key.is_file();
    let missing_agencies: Vec<&String> = config
        .agencies
        .keys()
        .filter(|code| !layout.agency_cert(code).is_file() || !layout.agency_key(code).is_file())
        .collect();
    if !missing_server && missing_agencies.is_empty() {
        return Ok(done);
    }
    let ca = match ca {
        Some(ca) => ca,
        None => layout.load_ca()?,
    };
    if missing_server {
        let issued = ca.issue_server(&["localhost", "127.0.0.1", "::1"])?;
        pki::write_issued(&config.tls.cert, &config.tls.key, &issued)?;
        done.push(format!(
            "issued gateway certificate {} for localhost, 127.0.0.1, ::1",
            config.tls.cert.display()
        ));
    }
    for code in missing_agencies {
        let issued = ca.issue_agency(&config.trust_domain, code, Validity::days_from_now(365))?;
        pki::write_issued(&layout.agency_cert(code), &layout.agency_key(code), &issued)?;
        done.push(format!(
            "issued agency certificate {} (spiffe://{}/agency/{code})",
            layout.agency_cert(code).display(),
            config.trust_domain
        ));
    }
    Ok(done)
}

/// Creates and fills the store with the demo extract when it is missing.
pub fn ensure_store(config: &Config) -> anyhow::Result<Vec<String>> {
    let store = config.store_path();
    if store.is_file() {
        return Ok(Vec::new());
    }
    let out = config.data_dir.join("demo");
    let summary = demo::write_extract(&out, DEV_CITIZENS)?;
    let mut done = vec![format!(
        "wrote demo extract to {}: {} citizens, {} parcels, {} enterprises",
        out.display(),
        summary.citizens,
        summary.parcels,
        summary.enterprises
    )];
    // All three registries go into a store built aside, renamed into place
    // only when complete, so a failed first start never leaves a partial
    // store that later starts would take as done.
    let building = store.with_extension("sqlite.dev-building");
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", building.display()));
    }
    for (registry, file) in [
        (Registry::Citizen, "citizens.jsonl"),
        (Registry::Land, "parcels.jsonl"),
        (Registry::Business, "enterprises.jsonl"),
    ] {
        let s = import_file(&building, registry, &out.join(file))?;
        done.push(format!(
            "imported {} {} records into {}",
            s.records,
            registry.record_name(),
            store.display()
        ));
    }
    std::fs::rename(&building, &store)?;
    Ok(done)
}
