//! `interop.land.v1.LandRegistryService`, including the opaque page tokens of
//! `ListParcelsByHolder`.

use tonic::{Request, Response, Status};

use prost::Message;

use super::{
    check_within, disclose, forwarded_provenance, loggable_id, narrowed_mask, page_token,
    store_error, Answer, Core, Scoped,
};
use crate::{
    domain,
    error::{RequestError, Violation},
    fieldmask::MaskTree,
    policy,
    proto::{
        common::v1::AccessContext,
        land::v1::{
            land_registry_service_server::LandRegistryService, GetParcelRequest, GetParcelResponse,
            ListParcelsByHolderRequest, ListParcelsByHolderResponse, Parcel, ParcelRef,
        },
    },
    registry::ParcelKey,
    schema::Schema,
};

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
    fn subjects(&self) -> Vec<String> {
        vec![self.subject_for_log()]
    }
}

/// The access-log subject of a parcel: `commune/sheet/number`.
fn parcel_subject(key: &ParcelKey) -> String {
    format!(
        "{}/{}/{}",
        key.commune_code, key.map_sheet, key.parcel_number
    )
}

/// The mask keeping only `holders.holder_id` of a stored parcel. A field
/// mask path may not pass through a repeated field, so this is built from the
/// two field numbers directly; a schema without them is an error, never a
/// mask that silently keeps everything.
fn holder_id_mask() -> Result<MaskTree, String> {
    let schema = Schema::gateway();
    let number = |message: &str, field: &str| {
        schema
            .message(message)
            .and_then(|m| m.fields.get(field))
            .map(|f| f.number)
            .ok_or_else(|| format!("{message} has no field {field:?}"))
    };
    let path = [
        number("interop.land.v1.Parcel", "holders")?,
        number("interop.land.v1.Holder", "holder_id")?,
    ];
    Ok(MaskTree::from_numbers([path.as_slice()]))
}

/// A parcel's subject and its holders: a holder sees reads of parcels it holds.
/// Only `holders.holder_id` is decoded, from the stored bytes cut down to it.
fn parcel_subjects(
    key: &ParcelKey,
    record: &[u8],
    out: &mut Vec<String>,
) -> Result<(), RequestError> {
    static HOLDER_IDS: std::sync::OnceLock<Result<MaskTree, String>> = std::sync::OnceLock::new();
    let holder_ids = HOLDER_IDS
        .get_or_init(holder_id_mask)
        .as_ref()
        .map_err(|e| RequestError::Internal(format!("holder id mask: {e}")))?;
    let internal = |e: String| RequestError::Internal(format!("stored record: {e}"));
    let pruned = holder_ids
        .apply(record)
        .map_err(|e| internal(e.to_string()))?;
    let parcel = Parcel::decode(pruned.as_slice()).map_err(|e| internal(e.to_string()))?;
    out.push(parcel_subject(key));
    out.extend(parcel.holders.into_iter().map(|h| h.holder_id));
    Ok(())
}

/// The subjects of a forwarded parcel: its key (when asked for, or when
/// disclosed) and the holders disclosed. Holders whose ids are not disclosed
/// are in the owner's access log, not in this one.
fn forwarded_parcel_subjects(asked: Option<&ParcelRef>, parcel: &Parcel, out: &mut Vec<String>) {
    if let Ok(key) = parcel_key(asked.or(parcel.r#ref.as_ref())) {
        out.push(parcel_subject(&key));
    }
    out.extend(
        parcel
            .holders
            .iter()
            .filter(|h| !h.holder_id.is_empty())
            .map(|h| h.holder_id.clone()),
    );
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
    fn subjects(&self) -> Vec<String> {
        vec![self.holder_id.chars().take(20).collect()]
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

const TOKEN_KIND: &str = "p1";

/// Encodes the last key of a page, bound to the holder it was issued for.
pub fn encode_page_token(keys: &page_token::Keys, holder: &str, last: &ParcelKey) -> String {
    keys.seal(
        TOKEN_KIND,
        holder,
        &[
            last.commune_code.clone(),
            last.map_sheet.to_string(),
            last.parcel_number.to_string(),
        ],
    )
}

fn decode_page_token(
    keys: &page_token::Keys,
    token: &str,
    holder: &str,
) -> Result<ParcelKey, RequestError> {
    let bad = || page_token::invalid("holder_id");
    match keys.open(token, TOKEN_KIND, holder).as_deref() {
        Some([commune, sheet, number]) => Ok(ParcelKey {
            commune_code: commune.clone(),
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
            if let Some(owner) = self.upstream(policy::GET_PARCEL) {
                let asked = req.parcel.clone();
                let req = GetParcelRequest {
                    read_mask: narrowed_mask(&call),
                    ..req
                };
                let (answer, mut fields): (GetParcelResponse, _) =
                    self.forward(&owner, policy::GET_PARCEL, &call, req).await?;
                let mut subjects = Vec::new();
                if let Some(parcel) = &answer.parcel {
                    check_within(&call, &owner, parcel, &mut fields)?;
                    forwarded_parcel_subjects(asked.as_ref(), parcel, &mut subjects);
                }
                return Ok(Answer {
                    response: GetParcelResponse {
                        parcel: answer.parcel,
                        provenance: forwarded_provenance(answer.provenance, &owner),
                    },
                    subjects,
                    fields,
                });
            }
            let key = parcel_key(req.parcel.as_ref())?;
            let stored = self
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
            let parcel: Parcel = disclose(&call, &stored.record)?;
            let mut subjects = Vec::new();
            parcel_subjects(&key, &stored.record, &mut subjects)?;
            Ok(Answer {
                response: GetParcelResponse {
                    parcel: Some(parcel),
                    provenance: call.stored_provenance(policy::GET_PARCEL, stored.as_of_ms),
                },
                subjects,
                fields: call.disclosure.field_names.clone(),
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
                if let Some(owner) = self.upstream(policy::LIST_PARCELS_BY_HOLDER) {
                    let holder = req.holder_id.clone();
                    let req = ListParcelsByHolderRequest {
                        read_mask: narrowed_mask(&call),
                        ..req
                    };
                    let (answer, mut fields): (ListParcelsByHolderResponse, _) = self
                        .forward(&owner, policy::LIST_PARCELS_BY_HOLDER, &call, req)
                        .await?;
                    let mut subjects = vec![holder];
                    for parcel in &answer.parcels {
                        check_within(&call, &owner, parcel, &mut fields)?;
                        forwarded_parcel_subjects(None, parcel, &mut subjects);
                    }
                    return Ok(Answer {
                        response: ListParcelsByHolderResponse {
                            parcels: answer.parcels,
                            next_page_token: answer.next_page_token,
                            provenance: forwarded_provenance(answer.provenance, &owner),
                        },
                        subjects,
                        fields,
                    });
                }
                check_holder(&req.holder_id)?;
                let size = page_token::page_size(req.page_size)?;
                let after = if req.page_token.is_empty() {
                    None
                } else {
                    Some(decode_page_token(
                        &self.page_keys,
                        &req.page_token,
                        &req.holder_id,
                    )?)
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
                    (true, Some((key, _))) => {
                        encode_page_token(&self.page_keys, &req.holder_id, key)
                    }
                    _ => String::new(),
                };
                let parcels = rows
                    .iter()
                    .map(|(_, stored)| disclose::<Parcel>(&call, &stored.record))
                    .collect::<Result<_, _>>()?;
                let mut subjects = vec![req.holder_id.clone()];
                for (key, stored) in &rows {
                    parcel_subjects(key, &stored.record, &mut subjects)?;
                }
                // A page is as current as its oldest record.
                let as_of = rows.iter().filter_map(|(_, s)| s.as_of_ms).min();
                let fields = if rows.is_empty() {
                    Vec::new()
                } else {
                    call.disclosure.field_names.clone()
                };
                Ok(Answer {
                    response: ListParcelsByHolderResponse {
                        parcels,
                        next_page_token,
                        provenance: call.stored_provenance(policy::LIST_PARCELS_BY_HOLDER, as_of),
                    },
                    subjects,
                    fields,
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
        let keys = page_token::Keys::random();
        let t = encode_page_token(&keys, "092085000123", &key);
        assert_eq!(decode_page_token(&keys, &t, "092085000123").unwrap(), key);
        assert!(decode_page_token(&keys, &t, "092085000124").is_err());
        assert!(decode_page_token(&keys, "zz", "092085000123").is_err());
        assert!(decode_page_token(&keys, "abc", "092085000123").is_err());
        let raw: Vec<u8> = (0..t.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&t[i..i + 2], 16).unwrap())
            .collect();
        let shown = String::from_utf8_lossy(&raw);
        assert!(!shown.contains("092085000123") && !shown.contains("31117"));
    }

    #[test]
    fn parcel_subjects_decode_holder_ids_only() {
        let key = ParcelKey {
            commune_code: "31117".into(),
            map_sheet: 12,
            parcel_number: 345,
        };
        let holder = |id: &str, name: &str| crate::proto::land::v1::Holder {
            holder_id: id.into(),
            name: name.into(),
            kind: 1,
        };
        let parcel = Parcel {
            area_m2: 120.5,
            holders: vec![
                holder("092085000123", "Nguyễn Văn A"),
                holder("0300588569", "Công ty B"),
            ],
            ..Parcel::default()
        };
        let mask = holder_id_mask().unwrap();
        let kept = Parcel::decode(mask.apply(&parcel.encode_to_vec()).unwrap().as_slice()).unwrap();
        assert_eq!(kept.area_m2, 0.0);
        assert!(kept
            .holders
            .iter()
            .all(|h| h.name.is_empty() && h.kind == 0));
        let mut out = Vec::new();
        parcel_subjects(&key, &parcel.encode_to_vec(), &mut out).unwrap();
        assert_eq!(out, ["31117/12/345", "092085000123", "0300588569"]);
    }
}
