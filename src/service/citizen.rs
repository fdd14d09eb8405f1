//! `interop.citizen.v1.CitizenRegistryService`.

use tonic::{Request, Response, Status};

use prost::Message;

use super::{
    check_within, disclose, forwarded_provenance, loggable_id, narrowed_mask, store_error, Answer,
    Core, Scoped,
};
use crate::{
    domain,
    error::RequestError,
    policy,
    proto::{
        citizen::v1::{
            citizen_registry_service_server::CitizenRegistryService, Citizen, GetCitizenRequest,
            GetCitizenResponse, VerifyCitizenRequest, VerifyCitizenResponse,
        },
        common::v1::AccessContext,
    },
};

impl Scoped for GetCitizenRequest {
    fn context(&self) -> Option<&AccessContext> {
        self.context.as_ref()
    }
    fn read_mask(&self) -> &[String] {
        self.read_mask.as_ref().map_or(&[], |m| &m.paths)
    }
    fn subject_for_log(&self) -> String {
        loggable_id(&self.personal_id)
    }
    fn subjects(&self) -> Vec<String> {
        vec![self.personal_id.chars().take(20).collect()]
    }
}

impl Scoped for VerifyCitizenRequest {
    fn context(&self) -> Option<&AccessContext> {
        self.context.as_ref()
    }
    fn read_mask(&self) -> &[String] {
        &[]
    }
    fn subject_for_log(&self) -> String {
        loggable_id(&self.personal_id)
    }
    fn subjects(&self) -> Vec<String> {
        vec![self.personal_id.chars().take(20).collect()]
    }
}

/// The request fields `VerifyCitizen` compares, as `mismatched_fields` names them.
const VERIFIABLE_FIELDS: &[&str] = &["full_name", "date_of_birth"];

/// A name as compared by `VerifyCitizen`: Unicode NFC, trimmed, every run of
/// whitespace folded into one space. Case and diacritics are kept.
pub fn comparable_name(name: &str) -> String {
    use unicode_normalization::UnicodeNormalization;
    let nfc: String = name.nfc().collect();
    nfc.split_whitespace().collect::<Vec<_>>().join(" ")
}

impl Core {
    /// The stored (encoded, unmasked) record of a citizen, or NOT_FOUND.
    async fn citizen_record(
        &self,
        id: &domain::personal_id::PersonalId,
    ) -> Result<crate::registry::Stored, RequestError> {
        self.store
            .citizen(id.as_str())
            .await
            .map_err(store_error)?
            .ok_or_else(|| RequestError::NotFound {
                resource_type: "interop.citizen.v1.Citizen",
                name: id.as_str().to_owned(),
            })
    }
}

#[tonic::async_trait]
impl CitizenRegistryService for Core {
    async fn get_citizen(
        &self,
        request: Request<GetCitizenRequest>,
    ) -> Result<Response<GetCitizenResponse>, Status> {
        self.call(policy::GET_CITIZEN, request, |call, req| async move {
            if let Some(owner) = self.upstream(policy::GET_CITIZEN) {
                let subject = req.personal_id.clone();
                let req = GetCitizenRequest {
                    read_mask: narrowed_mask(&call),
                    ..req
                };
                let (answer, fields): (GetCitizenResponse, _) = self
                    .forward(&owner, policy::GET_CITIZEN, &call, req)
                    .await?;
                if let Some(citizen) = &answer.citizen {
                    check_within(&call, &owner, citizen)?;
                }
                return Ok(Answer {
                    response: GetCitizenResponse {
                        citizen: answer.citizen,
                        provenance: forwarded_provenance(answer.provenance, &owner),
                    },
                    subjects: vec![subject],
                    fields,
                });
            }
            let id = domain::personal_id::parse(&req.personal_id)
                .map_err(|e| RequestError::invalid("personal_id", e.to_string()))?;
            let stored = self.citizen_record(&id).await?;
            let citizen: Citizen = disclose(&call, &stored.record)?;
            Ok(Answer {
                response: GetCitizenResponse {
                    citizen: Some(citizen),
                    provenance: self.stored_provenance(policy::GET_CITIZEN, stored.as_of_ms),
                },
                subjects: vec![id.as_str().to_owned()],
                fields: call.disclosure.field_names.clone(),
            })
        })
        .await
    }

    async fn verify_citizen(
        &self,
        request: Request<VerifyCitizenRequest>,
    ) -> Result<Response<VerifyCitizenResponse>, Status> {
        self.call(policy::VERIFY_CITIZEN, request, |call, req| async move {
            if let Some(owner) = self.upstream(policy::VERIFY_CITIZEN) {
                let subject = req.personal_id.clone();
                let (answer, _): (VerifyCitizenResponse, _) = self
                    .forward(&owner, policy::VERIFY_CITIZEN, &call, req)
                    .await?;
                if let Some(odd) = answer
                    .mismatched_fields
                    .iter()
                    .find(|f| !VERIFIABLE_FIELDS.contains(&f.as_str()))
                {
                    return Err(RequestError::Internal(format!(
                        "the owner of {} ({}) reported a mismatch of {odd:?}, which is not a verifiable field; nothing of its answer is disclosed",
                        owner.service, owner.owner
                    )));
                }
                return Ok(Answer {
                    response: answer,
                    subjects: vec![subject],
                    fields: Vec::new(),
                });
            }
            let id = domain::personal_id::parse(&req.personal_id)
                .map_err(|e| RequestError::invalid("personal_id", e.to_string()))?;
            if req.full_name.trim().is_empty() && req.date_of_birth.is_none() {
                return Err(RequestError::invalid(
                    "full_name",
                    "nothing to verify: set full_name, date_of_birth or both",
                ));
            }
            let stored = self.citizen_record(&id).await?;
            let citizen = Citizen::decode(stored.record.as_slice())
                .map_err(|e| RequestError::Internal(format!("stored record: {e}")))?;
            let mut mismatched_fields = Vec::new();
            if !req.full_name.trim().is_empty()
                && comparable_name(&req.full_name) != comparable_name(&citizen.full_name)
            {
                mismatched_fields.push("full_name".to_owned());
            }
            if let Some(declared) = &req.date_of_birth {
                if Some(declared) != citizen.date_of_birth.as_ref() {
                    mismatched_fields.push("date_of_birth".to_owned());
                }
            }
            Ok(Answer {
                response: VerifyCitizenResponse {
                    r#match: mismatched_fields.is_empty(),
                    mismatched_fields,
                },
                subjects: vec![id.as_str().to_owned()],
                fields: Vec::new(),
            })
        })
        .await
    }
}
