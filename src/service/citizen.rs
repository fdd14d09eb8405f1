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
    verify_budget::FailureKind,
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
                let (answer, mut fields): (GetCitizenResponse, _) = self
                    .forward(&owner, policy::GET_CITIZEN, &call, req)
                    .await?;
                if let Some(citizen) = &answer.citizen {
                    check_within(&call, &owner, citizen, &mut fields)?;
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
                    provenance: call.stored_provenance(policy::GET_CITIZEN, stored.as_of_ms),
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
            let id = domain::personal_id::parse(&req.personal_id)
                .map_err(|e| RequestError::invalid("personal_id", e.to_string()))?;
            let name = (!req.full_name.trim().is_empty()).then_some(req.full_name.as_str());
            if name.is_none() && req.date_of_birth.is_none() {
                return Err(RequestError::invalid(
                    "full_name",
                    "nothing to verify: set full_name, date_of_birth or both",
                ));
            }
            // A date no one can be born on is a malformed request, not a
            // failed verification: it costs no budget.
            if let Some(d) = &req.date_of_birth {
                if !crate::registry::validate::is_real_date(d) {
                    return Err(RequestError::invalid(
                        "date_of_birth",
                        format!(
                            "{:04}-{:02}-{:02} is not a date: give year, month and day of a real date",
                            d.year, d.month, d.day
                        ),
                    ));
                }
            }
            // Refused before the registry is read, so a refusal says nothing
            // about the record.
            let slot = self
                .verify_budget
                .reserve(call.agency.as_str(), id.as_str())
                .inspect_err(|refusal| {
                    tracing::warn!(
                        target: "interop_gateway::verify_budget",
                        agency = %call.agency,
                        subject = %id.masked(),
                        scope = refusal.scope.as_str(),
                        limit = refusal.limit,
                        retry_after_s = refusal.retry_after.as_secs(),
                        "verification refused: VERIFICATION_LIMIT"
                    );
                })?;
            if let Some(owner) = self.upstream(policy::VERIFY_CITIZEN) {
                // The owner keeps a budget of its own for the same agency;
                // this one bounds what reaches it.
                let forwarded = self
                    .forward::<_, VerifyCitizenResponse>(&owner, policy::VERIFY_CITIZEN, &call, req)
                    .await;
                let answer = match forwarded {
                    Ok((answer, _)) => answer,
                    Err(RequestError::Upstream(status)) if status.code() == tonic::Code::NotFound => {
                        slot.fail(FailureKind::NotFound)
                            .await
                            .map_err(budget_unavailable)?;
                        return Err(RequestError::Upstream(status));
                    }
                    Err(e) => return Err(e),
                };
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
                if answer.r#match {
                    drop(slot);
                } else {
                    slot.fail(FailureKind::Mismatch)
                        .await
                        .map_err(budget_unavailable)?;
                }
                return Ok(Answer {
                    response: answer,
                    subjects: vec![id.as_str().to_owned()],
                    fields: Vec::new(),
                });
            }
            let record = match self.citizen_record(&id).await {
                Ok(stored) => stored.record,
                Err(e @ RequestError::NotFound { .. }) => {
                    slot.fail(FailureKind::NotFound)
                        .await
                        .map_err(budget_unavailable)?;
                    return Err(e);
                }
                Err(e) => return Err(e),
            };
            let citizen = Citizen::decode(record.as_slice())
                .map_err(|e| RequestError::Internal(format!("stored record: {e}")))?;
            let name_matches =
                name.map(|n| comparable_name(n) == comparable_name(&citizen.full_name));
            let dob_matches = req
                .date_of_birth
                .as_ref()
                .map(|d| Some(d) == citizen.date_of_birth.as_ref());
            let matched = name_matches != Some(false) && dob_matches != Some(false);
            if matched {
                drop(slot);
            } else {
                slot.fail(FailureKind::Mismatch)
                    .await
                    .map_err(budget_unavailable)?;
            }
            Ok(Answer {
                response: VerifyCitizenResponse {
                    r#match: matched,
                    mismatched_fields: mismatched_fields(name_matches, dob_matches),
                },
                subjects: vec![id.as_str().to_owned()],
                fields: Vec::new(),
            })
        })
        .await
    }
}

/// Which fields did not match, told only when both were supplied: with one
/// field alone, `match` already says it, and naming fields separately when
/// only one may be wrong would let a single field be probed on its own.
fn mismatched_fields(name: Option<bool>, date_of_birth: Option<bool>) -> Vec<String> {
    let (Some(name), Some(date_of_birth)) = (name, date_of_birth) else {
        return Vec::new();
    };
    [("full_name", name), ("date_of_birth", date_of_birth)]
        .into_iter()
        .filter(|(_, matches)| !matches)
        .map(|(field, _)| field.to_owned())
        .collect()
}

/// A failure that could not be recorded: no answer, so the budget is never
/// spent without being kept.
fn budget_unavailable(e: crate::verify_budget::BudgetError) -> RequestError {
    tracing::error!(error = %e, "verification budget write failed");
    RequestError::Unavailable(
        "the verification budget cannot be recorded right now, so no answer is given; retry later"
            .into(),
    )
}
