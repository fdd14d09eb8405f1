//! `interop.land.v1.LandRegistryService`, including the opaque page tokens of
//! `ListParcelsByHolder`.

use tonic::{Request, Response, Status};

use super::{disclose, loggable_id, store_error, Core, Scoped};
use crate::{
    domain,
    error::{RequestError, Violation},
    policy,
    proto::{
        common::v1::AccessContext,
        land::v1::{
            land_registry_service_server::LandRegistryService, GetParcelRequest, GetParcelResponse,
            ListParcelsByHolderRequest, ListParcelsByHolderResponse, Parcel, ParcelRef,
        },
    },
    registry::ParcelKey,
};

/// Page size when the caller sets none.
const DEFAULT_PAGE_SIZE: usize = 20;
/// Larger page sizes are reduced to this.
const MAX_PAGE_SIZE: usize = 100;

impl Scoped for GetParcelRequest {
    fn context(&self) -> Option<&AccessContext> {
        self.context.as_ref()
    }
    fn read_mask(&self) -> &[String] {
        self.read_mask.as_ref().map_or(&[], |m| &m.paths)
    }
    fn subject_for_log(&self) -> String {
        self.parcel.as_ref().map_or_else(
            || "-".to_owned(),
            |p| {
                format!(
                    "{}/{}/{}",
                    p.commune_code.chars().take(8).collect::<String>(),
                    p.map_sheet,
                    p.parcel_number
                )
            },
        )
    }
}

impl Scoped for ListParcelsByHolderRequest {
    fn context(&self) -> Option<&AccessContext> {
        self.context.as_ref()
    }
    fn read_mask(&self) -> &[String] {
        self.read_mask.as_ref().map_or(&[], |m| &m.paths)
    }
    fn subject_for_log(&self) -> String {
        loggable_id(&self.holder_id)
    }
}

fn parcel_key(parcel: Option<&ParcelRef>) -> Result<ParcelKey, RequestError> {
    let Some(p) = parcel else {
        return Err(RequestError::invalid(
            "parcel",
            "required: commune_code, map_sheet and parcel_number of the parcel",
        ));
    };
    let mut violations = Vec::new();
    if let Err(e) = domain::admin::parse_commune_code(&p.commune_code) {
        violations.push(Violation::new("parcel.commune_code", e.to_string()));
    }
    if p.map_sheet == 0 || p.map_sheet > domain::land::MAX_MAP_SHEET {
        violations.push(Violation::new(
            "parcel.map_sheet",
            format!(
                "must be 1 to {}, got {}",
                domain::land::MAX_MAP_SHEET,
                p.map_sheet
            ),
        ));
    }
    if p.parcel_number == 0 || p.parcel_number > domain::land::MAX_PARCEL_NUMBER {
        violations.push(Violation::new(
            "parcel.parcel_number",
            format!(
                "must be 1 to {}, got {}",
                domain::land::MAX_PARCEL_NUMBER,
                p.parcel_number
            ),
        ));
    }
    if !violations.is_empty() {
        return Err(RequestError::InvalidArgument {
            reason: crate::error::reason::INVALID_ARGUMENT,
            violations,
        });
    }
    Ok(ParcelKey {
        commune_code: p.commune_code.clone(),
        map_sheet: p.map_sheet,
        parcel_number: p.parcel_number,
    })
}

fn check_holder(id: &str) -> Result<(), RequestError> {
    if id.is_empty() {
        return Err(RequestError::invalid(
            "holder_id",
            "required: a personal id (12 digits) or an enterprise code",
        ));
    }
    let personal = domain::personal_id::parse(id);
    let enterprise = domain::enterprise_code::parse(id);
    match (personal, enterprise) {
        (Ok(_), _) | (_, Ok(_)) => Ok(()),
        (Err(p), Err(e)) => Err(RequestError::invalid(
            "holder_id",
            if id.len() == 12 {
                p.to_string()
            } else {
                e.to_string()
            },
        )),
    }
}

const TOKEN_VERSION: &str = "p1";
const SEP: char = '\u{1f}';

/// Binds a token to its holder without carrying the holder's id: page tokens
/// end up in client logs, and a personal id must not.
fn holder_tag(holder: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, holder.as_bytes());
    digest.as_ref()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Encodes the last key of a page, bound to the holder it was issued for.
pub fn encode_page_token(holder: &str, last: &ParcelKey) -> String {
    let tag = holder_tag(holder);
    let raw = format!(
        "{TOKEN_VERSION}{SEP}{tag}{SEP}{}{SEP}{}{SEP}{}",
        last.commune_code, last.map_sheet, last.parcel_number
    );
    raw.bytes().map(|b| format!("{b:02x}")).collect()
}

fn decode_page_token(token: &str, holder: &str) -> Result<ParcelKey, RequestError> {
    let bad = || {
        RequestError::invalid(
            "page_token",
            "not a token this gateway issued for this holder_id; pass next_page_token of the previous response unchanged, with the same holder_id",
        )
    };
    if token.len() % 2 != 0 || token.len() > 512 {
        return Err(bad());
    }
    let bytes: Vec<u8> = (0..token.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(token.get(i..i + 2).unwrap_or("zz"), 16))
        .collect::<Result<_, _>>()
        .map_err(|_| bad())?;
    let raw = String::from_utf8(bytes).map_err(|_| bad())?;
    let parts: Vec<&str> = raw.split(SEP).collect();
    match parts.as_slice() {
        [TOKEN_VERSION, h, commune, sheet, number] if *h == holder_tag(holder) => Ok(ParcelKey {
            commune_code: (*commune).to_owned(),
            map_sheet: sheet.parse().map_err(|_| bad())?,
            parcel_number: number.parse().map_err(|_| bad())?,
        }),
        _ => Err(bad()),
    }
}

#[tonic::async_trait]
impl LandRegistryService for Core {
    async fn get_parcel(
        &self,
        request: Request<GetParcelRequest>,
    ) -> Result<Response<GetParcelResponse>, Status> {
        self.call(policy::GET_PARCEL, request, |call, req| async move {
            let key = parcel_key(req.parcel.as_ref())?;
            let record = self
                .store
                .parcel(&key)
                .await
                .map_err(store_error)?
                .ok_or_else(|| RequestError::NotFound {
                    resource_type: "interop.land.v1.Parcel",
                    name: format!(
                        "{}/{}/{}",
                        key.commune_code, key.map_sheet, key.parcel_number
                    ),
                })?;
            let parcel: Parcel = disclose(&call, &record)?;
            Ok(GetParcelResponse {
                parcel: Some(parcel),
            })
        })
        .await
    }

    async fn list_parcels_by_holder(
        &self,
        request: Request<ListParcelsByHolderRequest>,
    ) -> Result<Response<ListParcelsByHolderResponse>, Status> {
        self.call(
            policy::LIST_PARCELS_BY_HOLDER,
            request,
            |call, req| async move {
                check_holder(&req.holder_id)?;
                let size = match req.page_size {
                    n if n < 0 => {
                        return Err(RequestError::invalid(
                            "page_size",
                            format!("must not be negative, got {n}"),
                        ))
                    }
                    0 => DEFAULT_PAGE_SIZE,
                    n => (n as usize).min(MAX_PAGE_SIZE),
                };
                let after = if req.page_token.is_empty() {
                    None
                } else {
                    Some(decode_page_token(&req.page_token, &req.holder_id)?)
                };
                // One row more than the page tells whether another page exists.
                let mut rows = self
                    .store
                    .parcels_by_holder(&req.holder_id, after, size + 1)
                    .await
                    .map_err(store_error)?;
                let more = rows.len() > size;
                rows.truncate(size);
                let next_page_token = match (more, rows.last()) {
                    (true, Some((key, _))) => encode_page_token(&req.holder_id, key),
                    _ => String::new(),
                };
                let parcels = rows
                    .iter()
                    .map(|(_, record)| disclose::<Parcel>(&call, record))
                    .collect::<Result<_, _>>()?;
                Ok(ListParcelsByHolderResponse {
                    parcels,
                    next_page_token,
                })
            },
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_tokens_round_trip_and_bind_to_holder() {
        let key = ParcelKey {
            commune_code: "31117".into(),
            map_sheet: 12,
            parcel_number: 345,
        };
        let t = encode_page_token("092085000123", &key);
        assert_eq!(decode_page_token(&t, "092085000123").unwrap(), key);
        assert!(decode_page_token(&t, "092085000124").is_err());
        assert!(decode_page_token("zz", "092085000123").is_err());
        assert!(decode_page_token("abc", "092085000123").is_err());
        let raw: Vec<u8> = (0..t.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&t[i..i + 2], 16).unwrap())
            .collect();
        assert!(!String::from_utf8(raw).unwrap().contains("092085000123"));
    }
}
