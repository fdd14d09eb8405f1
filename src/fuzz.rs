//! Fuzz targets for every parser of untrusted input, run by `cargo test` on
//! the stable toolchain: proptest generates inputs (arbitrary bytes and
//! text, and mutations of valid seeds, so the fuzzing reaches past the
//! first check), asserts that nothing panics and what must hold of what
//! parses, and shrinks a failure to a minimal input. A failure is kept in
//! `*.proptest-regressions` beside the target and replayed first on every
//! later run; a crash input worth naming also becomes a plain test.
//!
//! CI runs each target for proptest's default 256 cases (seconds in all);
//! `PROPTEST_CASES=200000 cargo test --lib fuzz` runs longer by hand. See
//! docs/FUZZING.md for the list of targets and why not cargo-fuzz.
//!
//! Targets living here reach public parsers; those of private parsers sit
//! beside them (`audit::line`, `registry::import`, `service`), using the
//! strategies below.

use proptest::prelude::*;

/// `seed` with up to `edits` random byte edits (replace, insert, delete,
/// truncate): near-valid input that gets past a parser's first checks.
pub fn mutated_bytes(seed: Vec<u8>, edits: usize) -> impl Strategy<Value = Vec<u8>> {
    let edit = (0u8..4, any::<prop::sample::Index>(), any::<u8>());
    prop::collection::vec(edit, 0..=edits).prop_map(move |edits| {
        let mut out = seed.clone();
        for (kind, at, byte) in edits {
            let len = out.len();
            match kind {
                0 if len > 0 => out[at.index(len)] = byte,
                1 => out.insert(at.index(len + 1), byte),
                2 if len > 0 => {
                    out.remove(at.index(len));
                }
                3 => out.truncate(at.index(len + 1)),
                _ => {}
            }
        }
        out
    })
}

/// Text: arbitrary strings, or `seed` mutated (lossily back to UTF-8).
pub fn text_near(seed: &str, edits: usize) -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "\\PC{0,80}",
        mutated_bytes(seed.as_bytes().to_vec(), edits)
            .prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
    ]
}

#[cfg(test)]
mod targets {
    use super::*;
    use crate::{config::Config, domain, fieldmask::MaskTree, schema::Schema, service};

    /// Valid seeds of each identifier the gateway reads from callers.
    const IDS: [&str; 8] = [
        "092085000123",
        "0300588569",
        "0300588569-001",
        "000.00.20.H13",
        "000.00.20.H13-241205-0001",
        "1.004227",
        "2.000815.000.00.00.H55",
        "31117/12/101",
    ];

    fn id_input() -> impl Strategy<Value = String> {
        prop_oneof![
            any::<String>(),
            "[0-9./H-]{0,30}",
            prop::sample::select(&IDS[..]).prop_flat_map(|s| text_near(s, 4)),
        ]
    }

    fn has_long_digit_run(s: &str) -> bool {
        let mut run = 0;
        for b in s.bytes() {
            run = if b.is_ascii_digit() { run + 1 } else { 0 };
            if run >= 9 {
                return true;
            }
        }
        false
    }

    proptest! {
        /// Request identifiers: no parser panics; what parses reads back
        /// as itself; log lines never carry a full personal id.
        #[test]
        fn fuzz_identifiers(s in id_input()) {
            if let Ok(id) = domain::personal_id::parse(&s) {
                prop_assert_eq!(id.as_str(), s.as_str());
            }
            if let Ok(code) = domain::enterprise_code::parse(&s) {
                prop_assert_eq!(code.as_str(), s.as_str());
            }
            if let Ok(a) = domain::agency::parse_agency_code(&s) {
                prop_assert_eq!(a.as_str(), s.as_str());
            }
            if let Ok(d) = domain::agency::parse_dossier_id(&s) {
                prop_assert_eq!(d.as_str(), s.as_str());
            }
            if let Ok(p) = domain::agency::parse_procedure_code(&s) {
                prop_assert_eq!(p.as_str(), s.as_str());
            }
            let _ = domain::admin::parse_commune_code(&s);
            let _ = domain::land::parse_certificate_serial(&s);
            let _ = domain::is_subject_key(&s);
            let shown = service::loggable_id(&s);
            prop_assert!(!has_long_digit_run(&shown), "{:?} logged as {:?}", s, shown);
            prop_assert!(shown.chars().count() <= 24 + 3 * 3);
        }

        /// What the access log keeps of caller text: valid values as they
        /// are, anything else a placeholder; never the text itself.
        #[test]
        fn fuzz_recorded_caller_text(
            procedure in id_input(),
            dossier in id_input(),
            officer in text_near("officer-7", 6),
            subjects in prop::collection::vec(id_input(), 0..4),
        ) {
            let ctx = crate::proto::common::v1::AccessContext {
                procedure_code: procedure.clone(),
                dossier_id: dossier.clone(),
                officer_id: officer,
            };
            let kept = service::recorded::context(ctx, 64);
            prop_assert!(
                kept.procedure_code == procedure
                    || service::recorded::is_placeholder(&kept.procedure_code)
            );
            prop_assert!(
                kept.dossier_id == dossier || service::recorded::is_placeholder(&kept.dossier_id)
            );
            for s in service::recorded::subjects(subjects) {
                prop_assert!(domain::is_subject_key(&s) || service::recorded::is_placeholder(&s));
            }
        }

        /// Field-mask paths against every record type: resolving never
        /// panics, and a path that resolves names one field per segment.
        #[test]
        fn fuzz_field_mask_paths(
            path in prop_oneof![
                any::<String>(),
                "[a-z_.]{0,60}",
                prop::sample::select(&[
                    "full_name", "permanent_address.province_code", "holders.holder_id",
                    "head_office.province_code", "legal_representatives",
                ][..]).prop_flat_map(|s| text_near(s, 3)),
            ],
            record in prop::sample::select(&[
                "interop.citizen.v1.Citizen", "interop.land.v1.Parcel",
                "interop.business.v1.Enterprise",
            ][..]),
        ) {
            if let Ok(numbers) = Schema::gateway().resolve(record, &path) {
                prop_assert_eq!(numbers.len(), path.split('.').count());
            }
        }

        /// Masks applied to arbitrary bytes (a record from an owner is
        /// untrusted): an error or a result no longer than the input.
        #[test]
        fn fuzz_mask_apply(
            bytes in prop::collection::vec(any::<u8>(), 0..256),
            paths in prop::collection::vec(prop::collection::vec(1u32..20, 1..4), 0..4),
        ) {
            let mask = MaskTree::from_numbers(paths.iter().map(Vec::as_slice));
            if let Ok(kept) = mask.apply(&bytes) {
                prop_assert!(kept.len() <= bytes.len());
            }
            let _ = mask.keeps_any(&bytes);
        }

        /// Page tokens: anything not sealed by this process for this
        /// listing is refused; a sealed one opens to what was sealed, and
        /// any change to it is refused.
        #[test]
        fn fuzz_page_tokens(
            token in any::<String>(),
            // Positions are the gateway's own (record numbers, parcel keys).
            position in prop::collection::vec("[a-z0-9/]{0,20}", 1..3),
            flip in any::<prop::sample::Index>(),
        ) {
            let keys = service::page_token::Keys::random();
            prop_assert!(keys.open(&token, "records", "s").is_none());
            let sealed = keys.seal("records", "s", &position);
            prop_assert_eq!(
                keys.open(&sealed, "records", "s"),
                Some(position.clone())
            );
            prop_assert!(keys.open(&sealed, "parcels", "s").is_none());
            let mut bytes = sealed.into_bytes();
            let i = flip.index(bytes.len());
            bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
            if let Ok(changed) = String::from_utf8(bytes) {
                prop_assert!(keys.open(&changed, "records", "s").is_none());
            }
        }

        /// The config file: any text is a config or an error naming the
        /// file; never a panic.
        #[test]
        fn fuzz_config(text in prop_oneof![
            any::<String>(),
            text_near(CONFIG_SEED, 12),
        ]) {
            match Config::parse(&text, std::path::Path::new("/etc/gw/gateway.toml")) {
                Ok(_) => {}
                Err(e) => prop_assert_eq!(e.file.as_str(), "/etc/gw/gateway.toml"),
            }
        }
    }

    /// A config that uses most keys, for mutation.
    const CONFIG_SEED: &str = r#"listen = "127.0.0.1:0"
trust_domain = "interop.example.vn"
data_dir = "data"
[tls]
cert = "c.pem"
key = "k.pem"
client_ca = "ca.pem"
[limits]
max_in_flight = 100
max_request_bytes = 65536
max_call_ms = 5000
max_connections = 10
[[agency]]
code = "000.00.20.H13"
name = "A"
rate_per_second = 2.5
burst = 10
max_in_flight = 4
[[grant]]
agency = "000.00.20.H13"
method = "interop.citizen.v1.CitizenRegistryService/GetCitizen"
procedures = ["1.004227"]
fields = ["full_name", "permanent_address.province_code"]
[[registry]]
service = "interop.citizen.v1.CitizenRegistryService"
owner = "000.00.20.H13"
"#;

    #[test]
    fn the_config_seed_is_valid() {
        Config::parse(CONFIG_SEED, std::path::Path::new("/etc/gw/gateway.toml")).unwrap();
    }
}
