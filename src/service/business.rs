//! `interop.business.v1.BusinessRegistryService`.

use tonic::{Request, Response, Status};

use super::{
    check_within, disclose, forwarded_provenance, loggable_id, narrowed_mask, store_error, Answer,
    Core, Scoped,
};
use crate::{
    domain,
    error::RequestError,
    policy,
    proto::{
        business::v1::{
            business_registry_service_server::BusinessRegistryService, Enterprise,
            GetEnterpriseRequest, GetEnterpriseResponse,
        },
        common::v1::AccessContext,
    },
};

impl Scoped for GetEnterpriseRequest {
    fn context(&self) -> Option<&AccessContext> {
        self.context.as_ref()
    }
    fn read_mask(&self) -> &[String] {
        self.read_mask.as_ref().map_or(&[], |m| &m.paths)
    }
    fn subject_for_log(&self) -> String {
        loggable_id(&self.enterprise_code)
    }
    fn subjects(&self) -> Vec<String> {
        vec![self.enterprise_code.chars().take(20).collect()]
    }
}

#[tonic::async_trait]
impl BusinessRegistryService for Core {
    async fn get_enterprise(
        &self,
        request: Request<GetEnterpriseRequest>,
    ) -> Result<Response<GetEnterpriseResponse>, Status> {
        self.call(policy::GET_ENTERPRISE, request, |call, req| async move {
            if let Some(owner) = self.upstream(policy::GET_ENTERPRISE) {
                let subject = req.enterprise_code.clone();
                let req = GetEnterpriseRequest {
                    read_mask: narrowed_mask(&call),
                    ..req
                };
                let (answer, mut fields): (GetEnterpriseResponse, _) = self
                    .forward(&owner, policy::GET_ENTERPRISE, &call, req)
                    .await?;
                if let Some(enterprise) = &answer.enterprise {
                    check_within(&call, &owner, enterprise, &mut fields)?;
                }
                return Ok(Answer {
                    response: GetEnterpriseResponse {
                        enterprise: answer.enterprise,
                        provenance: forwarded_provenance(answer.provenance, &owner),
                    },
                    subjects: vec![subject],
                    fields,
                });
            }
            let code = domain::enterprise_code::parse(&req.enterprise_code)
                .map_err(|e| RequestError::invalid("enterprise_code", e.to_string()))?;
            let stored = self
                .store
                .enterprise(code.as_str())
                .await
                .map_err(store_error)?
                .ok_or_else(|| RequestError::NotFound {
                    resource_type: "interop.business.v1.Enterprise",
                    name: code.as_str().to_owned(),
                })?;
            let enterprise: Enterprise = disclose(&call, &stored.record)?;
            Ok(Answer {
                response: GetEnterpriseResponse {
                    enterprise: Some(enterprise),
                    provenance: call.stored_provenance(policy::GET_ENTERPRISE, stored.as_of_ms),
                },
                subjects: vec![code.as_str().to_owned()],
                fields: call.disclosure.field_names.clone(),
            })
        })
        .await
    }
}
