//! Grants and the allow/deny decision. Deny by default: a call is allowed only
//! when a grant names the calling agency, the full method name and the
//! procedure the call serves; the record it gets back carries exactly the
//! intersection of its `read_mask` and the granted fields.

use std::{collections::HashMap, sync::Arc};

use crate::{
    cache::BoundedCache,
    error::{reason, RequestError, Violation},
    fieldmask::{MaskTree, PathSet},
    schema::Schema,
};

/// A gRPC method the gateway serves and the record type it discloses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MethodSpec {
    /// `package.Service/Method`.
    pub name: &'static str,
    /// Fully-qualified record message whose fields grants name; `None` for
    /// methods that return no registry record (their grants name no fields).
    pub record: Option<&'static str>,
}

pub const GET_CITIZEN: MethodSpec = MethodSpec {
    name: "interop.citizen.v1.CitizenRegistryService/GetCitizen",
    record: Some("interop.citizen.v1.Citizen"),
};
pub const GET_PARCEL: MethodSpec = MethodSpec {
    name: "interop.land.v1.LandRegistryService/GetParcel",
    record: Some("interop.land.v1.Parcel"),
};
pub const LIST_PARCELS_BY_HOLDER: MethodSpec = MethodSpec {
    name: "interop.land.v1.LandRegistryService/ListParcelsByHolder",
    record: Some("interop.land.v1.Parcel"),
};
pub const GET_ENTERPRISE: MethodSpec = MethodSpec {
    name: "interop.business.v1.BusinessRegistryService/GetEnterprise",
    record: Some("interop.business.v1.Enterprise"),
};

pub const VERIFY_CITIZEN: MethodSpec = MethodSpec {
    name: "interop.citizen.v1.CitizenRegistryService/VerifyCitizen",
    record: None,
};
pub const LIST_ACCESS_RECORDS: MethodSpec = MethodSpec {
    name: "interop.audit.v1.AccessLogService/ListAccessRecords",
    record: None,
};
pub const WATCH_ACCESS_RECORDS: MethodSpec = MethodSpec {
    name: "interop.audit.v1.AccessLogService/WatchAccessRecords",
    record: None,
};

/// Registry services: each may be owned by an agency and forwarded to it.
pub const CITIZEN_SERVICE: &str = "interop.citizen.v1.CitizenRegistryService";
pub const LAND_SERVICE: &str = "interop.land.v1.LandRegistryService";
pub const BUSINESS_SERVICE: &str = "interop.business.v1.BusinessRegistryService";
pub const REGISTRY_SERVICES: &[&str] = &[CITIZEN_SERVICE, LAND_SERVICE, BUSINESS_SERVICE];
/// The access-log service: always this gateway's own, never forwarded.
pub const ACCESS_LOG_SERVICE: &str = "interop.audit.v1.AccessLogService";

impl MethodSpec {
    /// The service part of the full method name.
    pub fn service(&self) -> &'static str {
        self.name.split_once('/').map_or(self.name, |(s, _)| s)
    }

    /// The method part of the full method name.
    pub fn short_name(&self) -> &'static str {
        self.name.split_once('/').map_or(self.name, |(_, m)| m)
    }
}

/// How a `read_mask` is held against the grant.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MaskMode {
    /// The caller's own request: naming a field outside the grant is
    /// PERMISSION_DENIED (`FIELD_NOT_GRANTED`), so the caller learns it.
    Strict,
    /// A relay's request on behalf of a consumer: the mask is what the
    /// consumer may receive at most (already narrowed by the relay's own
    /// grant), and the answer carries its intersection with this gateway's
    /// grant. The consumer asked for nothing outside its front gateway's
    /// grant, so it is not denied for what this gateway's grant leaves out.
    UpperBound,
}

/// Every method a grant may name.
pub const METHODS: &[MethodSpec] = &[
    GET_CITIZEN,
    VERIFY_CITIZEN,
    GET_PARCEL,
    LIST_PARCELS_BY_HOLDER,
    GET_ENTERPRISE,
    LIST_ACCESS_RECORDS,
    WATCH_ACCESS_RECORDS,
];

pub fn method(name: &str) -> Option<MethodSpec> {
    METHODS.iter().copied().find(|m| m.name == name)
}

/// More paths than any record has fields is a malformed request.
pub const MAX_READ_MASK_PATHS: usize = 64;

/// One validated grant.
#[derive(Clone, Debug)]
pub struct Grant {
    pub agency: String,
    pub method: MethodSpec,
    pub procedures: Vec<String>,
    pub fields: PathSet,
}

impl Grant {
    /// A grant for procedure `p` also covers a province's version of it,
    /// `p.<agency code>` (for example `2.000815` covers `2.000815.000.00.00.H55`).
    fn serves(&self, procedure: &str) -> bool {
        self.procedures.iter().any(|g| {
            procedure == g
                || (procedure.len() > g.len()
                    && procedure.starts_with(g.as_str())
                    && procedure.as_bytes()[g.len()] == b'.')
        })
    }
}

/// All grants, indexed by agency and method.
#[derive(Clone, Debug, Default)]
pub struct Policy {
    grants: HashMap<(String, &'static str), Vec<Grant>>,
}

/// What an allowed call may disclose.
#[derive(Clone, Debug)]
pub struct Authorization {
    pub method: MethodSpec,
    pub granted: PathSet,
}

/// The fields one answer discloses, as paths and compiled for the wire.
#[derive(Clone, Debug)]
pub struct Disclosure {
    pub paths: PathSet,
    pub mask: MaskTree,
    /// `paths` as strings, as the access log records them.
    pub field_names: Vec<String>,
    /// One mask per entry of `field_names`, to tell which of them a record
    /// received from elsewhere (a registry owner) actually carries.
    pub field_masks: Vec<MaskTree>,
}

impl Policy {
    pub fn new(grants: Vec<Grant>) -> Self {
        let mut index: HashMap<(String, &'static str), Vec<Grant>> = HashMap::new();
        for g in grants {
            index
                .entry((g.agency.clone(), g.method.name))
                .or_default()
                .push(g);
        }
        Policy { grants: index }
    }

    /// How many grants there are.
    pub fn grant_count(&self) -> usize {
        self.grants.values().map(Vec::len).sum()
    }

    /// The grants naming `agency`, in the order of [`METHODS`]; grants of
    /// other agencies are not reachable from here.
    pub fn grants_of(&self, agency: &str) -> Vec<&Grant> {
        METHODS
            .iter()
            .filter_map(|m| self.grants.get(&(agency.to_owned(), m.name)))
            .flatten()
            .collect()
    }

    /// Allows or denies `agency` calling `method` for `procedure`.
    pub fn authorize(
        &self,
        agency: &str,
        method: MethodSpec,
        procedure: &str,
    ) -> Result<Authorization, RequestError> {
        let meta = |extra: Vec<(&str, &str)>| {
            let mut m = vec![
                ("agency".to_owned(), agency.to_owned()),
                ("method".to_owned(), method.name.to_owned()),
            ];
            m.extend(extra.into_iter().map(|(k, v)| (k.to_owned(), v.to_owned())));
            m
        };
        let Some(grants) = self.grants.get(&(agency.to_owned(), method.name)) else {
            return Err(RequestError::PermissionDenied {
                reason: reason::METHOD_NOT_GRANTED,
                message: format!(
                    "agency {agency} has no grant for {}; ask the gateway operator for one naming this method and procedure",
                    method.name
                ),
                metadata: meta(vec![]),
            });
        };
        let matching: Vec<&Grant> = grants.iter().filter(|g| g.serves(procedure)).collect();
        if matching.is_empty() {
            let granted: Vec<&str> = grants
                .iter()
                .flat_map(|g| g.procedures.iter().map(String::as_str))
                .collect();
            return Err(RequestError::PermissionDenied {
                reason: reason::PROCEDURE_NOT_GRANTED,
                message: format!(
                    "agency {agency} may call {} only for procedures {}; not for {procedure}",
                    method.name,
                    granted.join(", ")
                ),
                metadata: meta(vec![("procedure_code", procedure)]),
            });
        }
        let granted = PathSet::new(matching.iter().flat_map(|g| g.fields.iter()));
        Ok(Authorization { method, granted })
    }
}

/// Disclosures already computed, by agency, method, procedure and read_mask.
/// Grants are fixed for the life of the process, so the answer for the same
/// four never changes; refusals are not kept. Bounded: when full it starts
/// over.
#[derive(Debug)]
pub struct DisclosureCache {
    known: BoundedCache<DisclosureKey, Arc<Disclosure>>,
}

impl Default for DisclosureCache {
    fn default() -> Self {
        DisclosureCache {
            known: BoundedCache::new(DISCLOSURE_CACHE_ENTRIES),
        }
    }
}

type DisclosureKey = (String, &'static str, String, Vec<String>, MaskMode);

/// Distinct (agency, method, procedure, read_mask) combinations remembered at most.
const DISCLOSURE_CACHE_ENTRIES: usize = 4096;

impl DisclosureCache {
    /// [`Policy::authorize`] then [`Authorization::disclose`], remembered.
    pub fn disclose(
        &self,
        policy: &Policy,
        agency: &str,
        method: MethodSpec,
        procedure: &str,
        read_mask: &[String],
        mode: MaskMode,
    ) -> Result<Arc<Disclosure>, RequestError> {
        let key: DisclosureKey = (
            agency.to_owned(),
            method.name,
            procedure.to_owned(),
            read_mask.to_vec(),
            mode,
        );
        if let Some(hit) = self.known.get(&key) {
            return Ok(hit);
        }
        let disclosure = Arc::new(
            policy
                .authorize(agency, method, procedure)?
                .disclose_with(read_mask, procedure, mode)?,
        );
        self.known.insert(key, Arc::clone(&disclosure));
        Ok(disclosure)
    }
}

impl Authorization {
    /// Checks `read_mask` and returns what the answer may carry.
    pub fn disclose(
        &self,
        read_mask: &[String],
        procedure: &str,
    ) -> Result<Disclosure, RequestError> {
        self.disclose_with(read_mask, procedure, MaskMode::Strict)
    }

    /// [`Authorization::disclose`], with the mask held as `mode` says.
    pub fn disclose_with(
        &self,
        read_mask: &[String],
        procedure: &str,
        mode: MaskMode,
    ) -> Result<Disclosure, RequestError> {
        let schema = Schema::gateway();
        let Some(record) = self.method.record else {
            // Methods without a record have no read_mask and disclose no fields.
            return Ok(Disclosure {
                paths: PathSet::default(),
                mask: MaskTree::default(),
                field_names: Vec::new(),
                field_masks: Vec::new(),
            });
        };
        if read_mask.len() > MAX_READ_MASK_PATHS {
            return Err(RequestError::InvalidArgument {
                reason: reason::INVALID_FIELD_MASK,
                violations: vec![Violation::new(
                    "read_mask.paths",
                    format!(
                        "at most {MAX_READ_MASK_PATHS} paths, got {}",
                        read_mask.len()
                    ),
                )],
            });
        }
        let mut violations = Vec::new();
        for (i, path) in read_mask.iter().enumerate() {
            if let Err(e) = schema.resolve(record, path) {
                violations.push(Violation::new(
                    format!("read_mask.paths[{i}]"),
                    e.to_string(),
                ));
            }
        }
        if !violations.is_empty() {
            return Err(RequestError::InvalidArgument {
                reason: reason::INVALID_FIELD_MASK,
                violations,
            });
        }
        let paths = if read_mask.is_empty() {
            self.granted.clone()
        } else {
            let asked = PathSet::new(read_mask);
            let outside = asked.outside(&self.granted);
            if !outside.is_empty() && mode == MaskMode::Strict {
                return Err(RequestError::PermissionDenied {
                    reason: reason::FIELD_NOT_GRANTED,
                    message: format!(
                        "read_mask names fields this grant does not cover: {}; granted: {}",
                        outside.join(", "),
                        self.granted.to_strings().join(", ")
                    ),
                    metadata: vec![
                        ("method".to_owned(), self.method.name.to_owned()),
                        ("procedure_code".to_owned(), procedure.to_owned()),
                        ("fields".to_owned(), outside.join(",")),
                    ],
                });
            }
            let kept = asked.intersect(&self.granted);
            if kept.is_empty() {
                // Only reachable for a relay's upper bound: none of the fields
                // its consumer may receive is granted here.
                return Err(RequestError::PermissionDenied {
                    reason: reason::FIELD_NOT_GRANTED,
                    message: format!(
                        "none of the fields asked for is granted here: {}; granted: {}",
                        asked.to_strings().join(", "),
                        self.granted.to_strings().join(", ")
                    ),
                    metadata: vec![
                        ("method".to_owned(), self.method.name.to_owned()),
                        ("procedure_code".to_owned(), procedure.to_owned()),
                        ("fields".to_owned(), asked.to_strings().join(",")),
                    ],
                });
            }
            kept
        };
        let resolved: Vec<Vec<u32>> = paths
            .iter()
            .map(|p| schema.resolve(record, &p))
            .collect::<Result<_, _>>()
            .map_err(|e| RequestError::Internal(format!("granted field does not resolve: {e}")))?;
        let mask = MaskTree::from_numbers(resolved.iter().map(Vec::as_slice));
        let field_masks = resolved
            .iter()
            .map(|p| MaskTree::from_numbers([p.as_slice()]))
            .collect();
        Ok(Disclosure {
            field_masks,
            field_names: paths.to_strings(),
            paths,
            mask,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Policy {
        Policy::new(vec![Grant {
            agency: "000.00.20.H13".into(),
            method: GET_CITIZEN,
            procedures: vec!["1.004227".into()],
            fields: PathSet::new(["full_name", "permanent_address"]),
        }])
    }

    #[test]
    fn deny_by_default_and_by_procedure() {
        let p = policy();
        let e = p
            .authorize("000.00.01.H13", GET_CITIZEN, "1.004227")
            .unwrap_err();
        assert!(matches!(
            e,
            RequestError::PermissionDenied {
                reason: reason::METHOD_NOT_GRANTED,
                ..
            }
        ));
        let e = p
            .authorize("000.00.20.H13", GET_CITIZEN, "1.000001")
            .unwrap_err();
        assert!(matches!(
            e,
            RequestError::PermissionDenied {
                reason: reason::PROCEDURE_NOT_GRANTED,
                ..
            }
        ));
        assert!(p
            .authorize("000.00.20.H13", GET_CITIZEN, "1.004227.000.00.00.H13")
            .is_ok());
        assert!(p
            .authorize("000.00.20.H13", GET_CITIZEN, "1.0042270")
            .is_err());
    }

    #[test]
    fn read_mask_checks() {
        let a = policy()
            .authorize("000.00.20.H13", GET_CITIZEN, "1.004227")
            .unwrap();
        let d = a
            .disclose(&["permanent_address.province_code".into()], "1.004227")
            .unwrap();
        assert_eq!(
            d.paths.to_strings(),
            vec!["permanent_address.province_code"]
        );
        let e = a.disclose(&["sex".into()], "1.004227").unwrap_err();
        assert!(matches!(
            e,
            RequestError::PermissionDenied {
                reason: reason::FIELD_NOT_GRANTED,
                ..
            }
        ));
        let e = a.disclose(&["no_such".into()], "1.004227").unwrap_err();
        assert!(matches!(e, RequestError::InvalidArgument { .. }));
    }
}
