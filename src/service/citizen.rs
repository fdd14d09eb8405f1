//! `interop.citizen.v1.CitizenRegistryService`.

use tonic::{Request, Response, Status};

use super::{disclose, loggable_id, store_error, Core, Scoped};
use crate::{
    domain,
    error::RequestError,
    policy,
    proto::{
        citizen::v1::{
            citizen_registry_service_server::CitizenRegistryService, Citizen, GetCitizenRequest,
            GetCitizenResponse,
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
}

#[tonic::async_trait]
impl CitizenRegistryService for Core {
    async fn get_citizen(
        &self,
        request: Request<GetCitizenRequest>,
    ) -> Result<Response<GetCitizenResponse>, Status> {
        self.call(policy::GET_CITIZEN, request, |call, req| async move {
            let id = domain::personal_id::parse(&req.personal_id)
                .map_err(|e| RequestError::invalid("personal_id", e.to_string()))?;
            let record = self
                .store
                .citizen(id.as_str())
                .await
                .map_err(store_error)?
                .ok_or_else(|| RequestError::NotFound {
                    resource_type: "interop.citizen.v1.Citizen",
                    name: id.as_str().to_owned(),
                })?;
            let citizen: Citizen = disclose(&call, &record)?;
            Ok(GetCitizenResponse {
                citizen: Some(citizen),
            })
        })
        .await
    }
}
