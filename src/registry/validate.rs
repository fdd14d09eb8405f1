//! Import-time normalisation and validation of registry records.
//!
//! Every string field (recursively) is put in Unicode NFC and trimmed, so a
//! lookup by name or code never depends on how a source system encoded it;
//! then the record is checked against the rules of [`crate::domain`] and the
//! cross-field rules of its registry (a birth year that agrees with the
//! personal id, land-use areas that add up, exactly one main business line).
//! An error names the field in proto3-JSON style (`landUses[1].areaM2: ...`)
//! so the operator can find it in the extract line. Personal ids appear in
//! messages only masked.

use std::fmt::Display;

use unicode_normalization::{is_nfc_quick, IsNormalized, UnicodeNormalization};

use crate::domain::{admin, calendar, enterprise_code, land, personal_id, IdError};
use crate::proto::business::v1::{
    BusinessLine, Enterprise, EnterpriseStatus, EnterpriseType, Representative,
};
use crate::proto::citizen::v1::{Citizen, IdCard, Sex};
use crate::proto::common::v1::{Address, Date};
use crate::proto::land::v1::{
    Certificate, Encumbrance, Holder, HolderKind, LandUse, Parcel, ParcelRef,
};

/// Whether a proto date is a real calendar date (year 1 to 9999).
pub fn is_real_date(d: &Date) -> bool {
    calendar::is_real_date(d.year, d.month, d.day)
}

/// Normalises and validates a citizen record.
pub fn citizen(c: &mut Citizen) -> Result<(), String> {
    normalise_citizen(c);
    let id = personal_id::parse(&c.personal_id).map_err(|e| id_fail("personalId", &e))?;
    if c.full_name.is_empty() {
        return Err(fail("fullName", "required"));
    }
    let born = required_date("dateOfBirth", c.date_of_birth.as_ref())?;
    if born.year != id.birth_year() {
        return Err(fail(
            "dateOfBirth",
            format!(
                "year {} disagrees with personal id {} (born {})",
                born.year,
                id.masked(),
                id.birth_year()
            ),
        ));
    }
    let male = match Sex::try_from(c.sex) {
        Ok(Sex::Male) => true,
        Ok(Sex::Female) => false,
        _ => {
            return Err(fail(
                "sex",
                format!("must be SEX_MALE or SEX_FEMALE, got {}", sex_name(c.sex)),
            ))
        }
    };
    if male != id.is_male() {
        return Err(fail(
            "sex",
            format!(
                "{} disagrees with personal id {} (century digit {} means {})",
                sex_name(c.sex),
                id.masked(),
                id.century_digit(),
                if id.is_male() { "male" } else { "female" }
            ),
        ));
    }
    for (path, address) in [
        ("hometown", &c.hometown),
        ("permanentAddress", &c.permanent_address),
        ("currentAddress", &c.current_address),
    ] {
        if let Some(a) = address {
            check_address(path, a)?;
        }
    }
    if let Some(died) = optional_date("dateOfDeath", c.date_of_death.as_ref())? {
        not_before("dateOfDeath", died, born, "dateOfBirth")?;
    }
    if let Some(card) = &c.id_card {
        let issued = optional_date("idCard.issuedOn", card.issued_on.as_ref())?;
        let expires = optional_date("idCard.expiresOn", card.expires_on.as_ref())?;
        if let Some(issued) = issued {
            not_before("idCard.issuedOn", issued, born, "dateOfBirth")?;
            if let Some(expires) = expires {
                not_before("idCard.expiresOn", expires, issued, "idCard.issuedOn")?;
            }
        }
    }
    Ok(())
}

/// Normalises and validates a land parcel record.
pub fn parcel(p: &mut Parcel) -> Result<(), String> {
    normalise_parcel(p);
    let Some(r) = &p.r#ref else {
        return Err(fail(
            "ref",
            "required: communeCode, mapSheet and parcelNumber",
        ));
    };
    admin::parse_commune_code(&r.commune_code).map_err(|e| id_fail("ref.communeCode", &e))?;
    in_range("ref.mapSheet", r.map_sheet, land::MAX_MAP_SHEET)?;
    in_range("ref.parcelNumber", r.parcel_number, land::MAX_PARCEL_NUMBER)?;
    if let Some(a) = &p.address {
        check_address("address", a)?;
        if a.commune_code != r.commune_code {
            return Err(fail(
                "address.communeCode",
                format!(
                    "{} differs from ref.communeCode {}",
                    a.commune_code, r.commune_code
                ),
            ));
        }
    }
    positive_area("areaM2", p.area_m2)?;
    for (i, u) in p.land_uses.iter().enumerate() {
        if !land::is_known_purpose_code(&u.purpose_code) {
            return Err(fail(
                &format!("landUses[{i}].purposeCode"),
                format!(
                    "{:?} is not a known land-use purpose code (such as ODT, ONT, LUC, CLN, TMD)",
                    u.purpose_code
                ),
            ));
        }
        positive_area(&format!("landUses[{i}].areaM2"), u.area_m2)?;
        optional_date(&format!("landUses[{i}].termUntil"), u.term_until.as_ref())?;
    }
    if !p.land_uses.is_empty() {
        let sum: f64 = p.land_uses.iter().map(|u| u.area_m2).sum();
        // Either bound is enough: 0.01 m² absorbs rounding of small parcels,
        // 0.01% that of large ones.
        let tolerance = f64::max(0.01, p.area_m2 * 1e-4);
        if (sum - p.area_m2).abs() > tolerance {
            return Err(fail(
                "landUses",
                format!("areas add up to {sum} m2 but areaM2 is {}", p.area_m2),
            ));
        }
    }
    if p.holders.is_empty() {
        return Err(fail("holders", "at least one holder is required"));
    }
    for (i, h) in p.holders.iter().enumerate() {
        check_holder(i, h)?;
        if let Some(j) = p.holders[..i]
            .iter()
            .position(|o| o.holder_id == h.holder_id)
        {
            return Err(fail(
                &format!("holders[{i}].holderId"),
                format!("same holder as holders[{j}]"),
            ));
        }
    }
    if let Some(cert) = &p.certificate {
        if !cert.serial.is_empty() {
            land::parse_certificate_serial(&cert.serial)
                .map_err(|e| id_fail("certificate.serial", &e))?;
        }
        if !cert.registry_book_number.is_empty() {
            land::parse_registry_book_number(&cert.registry_book_number)
                .map_err(|e| id_fail("certificate.registryBookNumber", &e))?;
        }
        optional_date("certificate.issuedOn", cert.issued_on.as_ref())?;
    }
    for (i, enc) in p.encumbrances.iter().enumerate() {
        let registered = required_date(
            &format!("encumbrances[{i}].registeredOn"),
            enc.registered_on.as_ref(),
        )?;
        let released_path = format!("encumbrances[{i}].releasedOn");
        if let Some(released) = optional_date(&released_path, enc.released_on.as_ref())? {
            not_before(&released_path, released, registered, "registeredOn")?;
        }
    }
    Ok(())
}

/// Normalises and validates an enterprise record.
pub fn enterprise(e: &mut Enterprise) -> Result<(), String> {
    normalise_enterprise(e);
    enterprise_code::parse(&e.enterprise_code).map_err(|err| id_fail("enterpriseCode", &err))?;
    if e.name.is_empty() {
        return Err(fail("name", "required"));
    }
    match EnterpriseType::try_from(e.r#type) {
        Ok(t) if t != EnterpriseType::Unspecified => {}
        _ => {
            return Err(fail(
                "type",
                format!(
                    "must be a known ENTERPRISE_TYPE_* value other than UNSPECIFIED, got {}",
                    enum_name(e.r#type, |v| EnterpriseType::try_from(v)
                        .map(|t| t.as_str_name()))
                ),
            ))
        }
    }
    match EnterpriseStatus::try_from(e.status) {
        Ok(s) if s != EnterpriseStatus::Unspecified => {}
        _ => {
            return Err(fail(
                "status",
                format!(
                    "must be a known ENTERPRISE_STATUS_* value other than UNSPECIFIED, got {}",
                    enum_name(e.status, |v| EnterpriseStatus::try_from(v)
                        .map(|s| s.as_str_name()))
                ),
            ))
        }
    }
    required_date("foundedOn", e.founded_on.as_ref())?;
    if e.charter_capital_vnd < 0 {
        return Err(fail(
            "charterCapitalVnd",
            format!("must not be negative, got {}", e.charter_capital_vnd),
        ));
    }
    if let Some(a) = &e.head_office {
        check_address("headOffice", a)?;
    }
    for (i, r) in e.legal_representatives.iter().enumerate() {
        personal_id::parse(&r.personal_id)
            .map_err(|err| id_fail(&format!("legalRepresentatives[{i}].personalId"), &err))?;
        if r.full_name.is_empty() {
            return Err(fail(
                &format!("legalRepresentatives[{i}].fullName"),
                "required",
            ));
        }
    }
    for (i, line) in e.business_lines.iter().enumerate() {
        let code = &line.vsic_code;
        if !(code.len() == 4 || code.len() == 5) || !code.bytes().all(|b| b.is_ascii_digit()) {
            return Err(fail(
                &format!("businessLines[{i}].vsicCode"),
                format!("must be a VSIC 2018 code of 4 or 5 digits, got {code:?}"),
            ));
        }
    }
    let mains = e.business_lines.iter().filter(|l| l.main).count();
    if !e.business_lines.is_empty() && mains != 1 {
        return Err(fail(
            "businessLines",
            format!("exactly one line must have main set, found {mains}"),
        ));
    }
    Ok(())
}

fn fail(path: &str, msg: impl Display) -> String {
    format!("{path}: {msg}")
}

fn id_fail(path: &str, e: &IdError) -> String {
    fail(path, e.problem())
}

fn sex_name(v: i32) -> String {
    enum_name(v, |v| Sex::try_from(v).map(|s| s.as_str_name()))
}

/// The proto name of an enum value, or the number when it is not a known value.
fn enum_name<E>(v: i32, name: impl Fn(i32) -> Result<&'static str, E>) -> String {
    name(v).map_or_else(|_| v.to_string(), str::to_owned)
}

fn show(d: &Date) -> String {
    format!("{:04}-{:02}-{:02}", d.year, d.month, d.day)
}

fn check_date(path: &str, d: &Date) -> Result<(), String> {
    if is_real_date(d) {
        Ok(())
    } else {
        Err(fail(path, format!("{} is not a real date", show(d))))
    }
}

fn required_date<'a>(path: &str, d: Option<&'a Date>) -> Result<&'a Date, String> {
    let d = d.ok_or_else(|| fail(path, "required"))?;
    check_date(path, d)?;
    Ok(d)
}

fn optional_date<'a>(path: &str, d: Option<&'a Date>) -> Result<Option<&'a Date>, String> {
    if let Some(d) = d {
        check_date(path, d)?;
    }
    Ok(d)
}

fn not_before(path: &str, later: &Date, earlier: &Date, what: &str) -> Result<(), String> {
    let key = |d: &Date| (d.year, d.month, d.day);
    if key(later) < key(earlier) {
        return Err(fail(
            path,
            format!("{} is before {what} {}", show(later), show(earlier)),
        ));
    }
    Ok(())
}

fn in_range(path: &str, v: u32, max: u32) -> Result<(), String> {
    if v == 0 || v > max {
        return Err(fail(path, format!("must be 1 to {max}, got {v}")));
    }
    Ok(())
}

fn positive_area(path: &str, v: f64) -> Result<(), String> {
    if !(v.is_finite() && v > 0.0) {
        return Err(fail(
            path,
            format!("must be a finite number above 0, got {v}"),
        ));
    }
    Ok(())
}

fn check_address(path: &str, a: &Address) -> Result<(), String> {
    admin::parse_commune_code(&a.commune_code)
        .map_err(|e| id_fail(&format!("{path}.communeCode"), &e))?;
    admin::parse_province_code(&a.province_code)
        .map_err(|e| id_fail(&format!("{path}.provinceCode"), &e))?;
    Ok(())
}

fn check_holder(i: usize, h: &Holder) -> Result<(), String> {
    let id_path = format!("holders[{i}].holderId");
    let personal = || personal_id::parse(&h.holder_id).map(|_| ());
    let business = || enterprise_code::parse(&h.holder_id).map(|_| ());
    let (own, other, other_noun) = match HolderKind::try_from(h.kind) {
        Ok(HolderKind::Citizen) => (personal(), business(), "an enterprise code"),
        Ok(HolderKind::Enterprise) => (business(), personal(), "a personal id"),
        _ => {
            return Err(fail(
                &format!("holders[{i}].kind"),
                format!(
                    "must be HOLDER_KIND_CITIZEN or HOLDER_KIND_ENTERPRISE, got {}",
                    enum_name(h.kind, |v| HolderKind::try_from(v).map(|k| k.as_str_name()))
                ),
            ))
        }
    };
    if let Err(e) = own {
        if other.is_ok() {
            return Err(fail(
                &id_path,
                format!(
                    "is {other_noun} but kind is {}",
                    enum_name(h.kind, |v| HolderKind::try_from(v).map(|k| k.as_str_name()))
                ),
            ));
        }
        return Err(id_fail(&id_path, &e));
    }
    if h.name.is_empty() {
        return Err(fail(&format!("holders[{i}].name"), "required"));
    }
    Ok(())
}

/// Puts `s` in NFC and trims surrounding whitespace, allocating only when
/// something changes (the common case is already clean).
fn nfc(s: &mut String) {
    let clean = s.trim().len() == s.len() && is_nfc_quick(s.chars()) == IsNormalized::Yes;
    if clean {
        return;
    }
    let normalised: String = s.nfc().collect();
    *s = normalised.trim().to_owned();
}

// The normalisers destructure every message without `..`, so a string field
// added to the protos fails to compile here instead of escaping NFC.

fn normalise_address(a: &mut Address) {
    let Address {
        address_line,
        commune_code,
        commune_name,
        province_code,
        province_name,
    } = a;
    for s in [
        address_line,
        commune_code,
        commune_name,
        province_code,
        province_name,
    ] {
        nfc(s);
    }
}

fn normalise_citizen(c: &mut Citizen) {
    let Citizen {
        personal_id,
        full_name,
        date_of_birth: _,
        sex: _,
        nationality,
        ethnicity,
        hometown,
        permanent_address,
        current_address,
        household_id,
        id_card,
        date_of_death: _,
    } = c;
    for s in [personal_id, full_name, nationality, ethnicity, household_id] {
        nfc(s);
    }
    for a in [hometown, permanent_address, current_address]
        .into_iter()
        .flatten()
    {
        normalise_address(a);
    }
    if let Some(IdCard {
        issued_on: _,
        expires_on: _,
        issued_by,
    }) = id_card
    {
        nfc(issued_by);
    }
}

fn normalise_parcel(p: &mut Parcel) {
    let Parcel {
        r#ref,
        address,
        area_m2: _,
        land_uses,
        holders,
        certificate,
        encumbrances,
    } = p;
    if let Some(ParcelRef {
        commune_code,
        map_sheet: _,
        parcel_number: _,
    }) = r#ref
    {
        nfc(commune_code);
    }
    if let Some(a) = address {
        normalise_address(a);
    }
    for LandUse {
        purpose_code,
        area_m2: _,
        term_until: _,
    } in land_uses
    {
        nfc(purpose_code);
    }
    for Holder {
        holder_id,
        name,
        kind: _,
    } in holders
    {
        nfc(holder_id);
        nfc(name);
    }
    if let Some(Certificate {
        serial,
        registry_book_number,
        issued_on: _,
        issued_by,
    }) = certificate
    {
        for s in [serial, registry_book_number, issued_by] {
            nfc(s);
        }
    }
    for Encumbrance {
        kind,
        secured_party,
        registered_on: _,
        released_on: _,
    } in encumbrances
    {
        nfc(kind);
        nfc(secured_party);
    }
}

fn normalise_enterprise(e: &mut Enterprise) {
    let Enterprise {
        enterprise_code,
        name,
        foreign_name,
        short_name,
        r#type: _,
        status: _,
        founded_on: _,
        charter_capital_vnd: _,
        head_office,
        legal_representatives,
        business_lines,
    } = e;
    for s in [enterprise_code, name, foreign_name, short_name] {
        nfc(s);
    }
    if let Some(a) = head_office {
        normalise_address(a);
    }
    for Representative {
        personal_id,
        full_name,
        title,
    } in legal_representatives
    {
        for s in [personal_id, full_name, title] {
            nfc(s);
        }
    }
    for BusinessLine {
        vsic_code,
        description,
        main: _,
    } in business_lines
    {
        nfc(vsic_code);
        nfc(description);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn date(year: i32, month: i32, day: i32) -> Option<Date> {
        Some(Date { year, month, day })
    }

    fn address() -> Address {
        Address {
            address_line: "Số 12 đường 30 Tháng 4".into(),
            commune_code: "31135".into(),
            commune_name: "Phường Tân An".into(),
            province_code: "92".into(),
            province_name: "Cần Thơ".into(),
        }
    }

    fn good_citizen() -> Citizen {
        Citizen {
            personal_id: "092085000123".into(),
            full_name: "Nguyễn Văn An".into(),
            date_of_birth: date(1985, 3, 14),
            sex: Sex::Male as i32,
            nationality: "Việt Nam".into(),
            ethnicity: "Kinh".into(),
            hometown: Some(address()),
            permanent_address: Some(address()),
            current_address: None,
            household_id: "31135-000001".into(),
            id_card: Some(IdCard {
                issued_on: date(2021, 5, 1),
                expires_on: date(2025, 3, 14),
                issued_by: "Cục Cảnh sát quản lý hành chính về trật tự xã hội".into(),
            }),
            date_of_death: None,
        }
    }

    fn good_parcel() -> Parcel {
        Parcel {
            r#ref: Some(ParcelRef {
                commune_code: "31135".into(),
                map_sheet: 12,
                parcel_number: 345,
            }),
            address: Some(address()),
            area_m2: 250.5,
            land_uses: vec![
                LandUse {
                    purpose_code: "ODT".into(),
                    area_m2: 100.0,
                    term_until: None,
                },
                LandUse {
                    purpose_code: "CLN".into(),
                    area_m2: 150.5,
                    term_until: date(2064, 10, 15),
                },
            ],
            holders: vec![
                Holder {
                    holder_id: "092085000123".into(),
                    name: "Nguyễn Văn An".into(),
                    kind: HolderKind::Citizen as i32,
                },
                Holder {
                    holder_id: "0300588569".into(),
                    name: "Công ty TNHH Minh Phát".into(),
                    kind: HolderKind::Enterprise as i32,
                },
            ],
            certificate: Some(Certificate {
                serial: "AA 01224578".into(),
                registry_book_number: "CS01234".into(),
                issued_on: date(2024, 9, 2),
                issued_by: "Sở Tài nguyên và Môi trường thành phố Cần Thơ".into(),
            }),
            encumbrances: vec![Encumbrance {
                kind: "Thế chấp quyền sử dụng đất".into(),
                secured_party: "Ngân hàng TMCP Ngoại thương Việt Nam".into(),
                registered_on: date(2024, 10, 1),
                released_on: date(2025, 6, 30),
            }],
        }
    }

    fn good_enterprise() -> Enterprise {
        Enterprise {
            enterprise_code: "0300588569".into(),
            name: "Công ty Cổ phần Minh Phát".into(),
            foreign_name: "MINH PHAT JOINT STOCK COMPANY".into(),
            short_name: "MINH PHAT JSC".into(),
            r#type: EnterpriseType::JointStock as i32,
            status: EnterpriseStatus::Operating as i32,
            founded_on: date(2010, 1, 4),
            charter_capital_vnd: 10_000_000_000,
            head_office: Some(address()),
            legal_representatives: vec![Representative {
                personal_id: "092085000123".into(),
                full_name: "Nguyễn Văn An".into(),
                title: "Tổng giám đốc".into(),
            }],
            business_lines: vec![
                BusinessLine {
                    vsic_code: "4632".into(),
                    description: "Bán buôn thực phẩm".into(),
                    main: true,
                },
                BusinessLine {
                    vsic_code: "10611".into(),
                    description: "Xay xát".into(),
                    main: false,
                },
            ],
        }
    }

    fn citizen_err(f: impl FnOnce(&mut Citizen)) -> String {
        let mut c = good_citizen();
        f(&mut c);
        citizen(&mut c).unwrap_err()
    }

    fn parcel_err(f: impl FnOnce(&mut Parcel)) -> String {
        let mut p = good_parcel();
        f(&mut p);
        parcel(&mut p).unwrap_err()
    }

    fn enterprise_err(f: impl FnOnce(&mut Enterprise)) -> String {
        let mut e = good_enterprise();
        f(&mut e);
        enterprise(&mut e).unwrap_err()
    }

    #[test]
    fn good_records_pass_unchanged() {
        let mut c = good_citizen();
        citizen(&mut c).unwrap();
        assert_eq!(c, good_citizen());
        let mut p = good_parcel();
        parcel(&mut p).unwrap();
        assert_eq!(p, good_parcel());
        let mut e = good_enterprise();
        enterprise(&mut e).unwrap();
        assert_eq!(e, good_enterprise());
    }

    #[test]
    fn strings_are_put_in_nfc_and_trimmed_everywhere() {
        let mut c = good_citizen();
        // "Nguyễn" with e + circumflex + tilde as combining marks.
        c.full_name = "  Nguye\u{0302}\u{0303}n Văn An\u{a0}".into();
        c.personal_id = " 092085000123\n".into();
        if let Some(a) = c.permanent_address.as_mut() {
            a.commune_name = "Phu\u{031b}\u{01a1}\u{300}ng Tân An ".into();
        }
        if let Some(card) = c.id_card.as_mut() {
            card.issued_by = "\tCục Cảnh sát quản lý hành chính về trật tự xã hội".into();
        }
        citizen(&mut c).unwrap();
        assert_eq!(c.full_name, "Nguyễn Văn An");
        assert_eq!(c.personal_id, "092085000123");
        assert_eq!(
            c.permanent_address
                .as_ref()
                .map(|a| a.commune_name.as_str()),
            Some("Phường Tân An")
        );
        assert_eq!(c.id_card, good_citizen().id_card);

        let mut p = good_parcel();
        p.holders[0].name = "Nguye\u{0302}\u{0303}n Văn An ".into();
        p.land_uses[0].purpose_code = " ODT".into();
        p.encumbrances[0].secured_party = " Ngân hàng TMCP Ngoại thương Việt Nam ".into();
        parcel(&mut p).unwrap();
        assert_eq!(p, good_parcel());

        let mut e = good_enterprise();
        e.legal_representatives[0].title = "Tổng gia\u{301}m đốc ".into();
        e.business_lines[1].vsic_code = "10611 ".into();
        enterprise(&mut e).unwrap();
        assert_eq!(e, good_enterprise());
    }

    #[test]
    fn citizen_rules_name_the_field() {
        assert_eq!(
            citizen_err(|c| c.personal_id = "09208500012".into()),
            "personalId: must be 12 digits, got 11 characters"
        );
        assert_eq!(
            citizen_err(|c| c.full_name = " ".into()),
            "fullName: required"
        );
        assert_eq!(
            citizen_err(|c| c.date_of_birth = None),
            "dateOfBirth: required"
        );
        assert_eq!(
            citizen_err(|c| c.date_of_birth = date(1985, 2, 29)),
            "dateOfBirth: 1985-02-29 is not a real date"
        );
        assert_eq!(
            citizen_err(|c| c.personal_id = "092285000123".into()),
            "dateOfBirth: year 1985 disagrees with personal id 092*******23 (born 2085)"
        );
        assert_eq!(
            citizen_err(|c| c.sex = Sex::Unspecified as i32),
            "sex: must be SEX_MALE or SEX_FEMALE, got SEX_UNSPECIFIED"
        );
        assert_eq!(
            citizen_err(|c| c.sex = 9),
            "sex: must be SEX_MALE or SEX_FEMALE, got 9"
        );
        assert_eq!(
            citizen_err(|c| c.sex = Sex::Female as i32),
            "sex: SEX_FEMALE disagrees with personal id 092*******23 (century digit 0 means male)"
        );
        assert_eq!(
            citizen_err(|c| c.current_address = Some(Address {
                commune_code: "3113".into(),
                ..address()
            })),
            "currentAddress.communeCode: must be 5 digits, got 4 characters"
        );
        assert_eq!(
            citizen_err(|c| c.hometown = Some(Address {
                province_code: "03".into(),
                ..address()
            })),
            "hometown.provinceCode: 03 is neither one of the 34 current province codes nor a closed pre-2025 code"
        );
        assert_eq!(
            citizen_err(|c| c.date_of_death = date(1985, 3, 13)),
            "dateOfDeath: 1985-03-13 is before dateOfBirth 1985-03-14"
        );
        assert_eq!(
            citizen_err(|c| c.date_of_death = date(2025, 4, 31)),
            "dateOfDeath: 2025-04-31 is not a real date"
        );
        assert_eq!(
            citizen_err(|c| c.id_card.as_mut().unwrap().expires_on = date(2020, 1, 1)),
            "idCard.expiresOn: 2020-01-01 is before idCard.issuedOn 2021-05-01"
        );
        assert_eq!(
            citizen_err(|c| c.id_card.as_mut().unwrap().issued_on = date(2021, 13, 1)),
            "idCard.issuedOn: 2021-13-01 is not a real date"
        );
    }

    #[test]
    fn a_closed_province_code_is_still_a_valid_address() {
        let mut c = good_citizen();
        c.hometown = Some(Address {
            province_code: "94".into(),
            ..address()
        });
        assert_eq!(citizen(&mut c), Ok(()));
    }

    #[test]
    fn parcel_rules_name_the_field() {
        assert_eq!(
            parcel_err(|p| p.r#ref = None),
            "ref: required: communeCode, mapSheet and parcelNumber"
        );
        assert_eq!(
            parcel_err(|p| p.r#ref.as_mut().unwrap().map_sheet = 0),
            "ref.mapSheet: must be 1 to 999999, got 0"
        );
        assert_eq!(
            parcel_err(|p| p.r#ref.as_mut().unwrap().parcel_number = 10_000_000),
            "ref.parcelNumber: must be 1 to 9999999, got 10000000"
        );
        assert_eq!(
            parcel_err(|p| p.r#ref.as_mut().unwrap().commune_code = "3113a".into()),
            "ref.communeCode: must be 5 digits, found 'a' at position 5"
        );
        assert_eq!(
            parcel_err(|p| p.address.as_mut().unwrap().commune_code = "31117".into()),
            "address.communeCode: 31117 differs from ref.communeCode 31135"
        );
        assert_eq!(
            parcel_err(|p| p.area_m2 = f64::NAN),
            "areaM2: must be a finite number above 0, got NaN"
        );
        assert_eq!(
            parcel_err(|p| p.area_m2 = 0.0),
            "areaM2: must be a finite number above 0, got 0"
        );
        assert_eq!(
            parcel_err(|p| p.land_uses[1].purpose_code = "XYZ".into()),
            "landUses[1].purposeCode: \"XYZ\" is not a known land-use purpose code (such as ODT, ONT, LUC, CLN, TMD)"
        );
        assert_eq!(
            parcel_err(|p| p.land_uses[0].area_m2 = -1.0),
            "landUses[0].areaM2: must be a finite number above 0, got -1"
        );
        assert_eq!(
            parcel_err(|p| p.land_uses[0].area_m2 = 101.0),
            "landUses: areas add up to 251.5 m2 but areaM2 is 250.5"
        );
        assert_eq!(
            parcel_err(|p| p.land_uses[1].term_until = date(2064, 2, 30)),
            "landUses[1].termUntil: 2064-02-30 is not a real date"
        );
        assert_eq!(
            parcel_err(|p| p.holders.clear()),
            "holders: at least one holder is required"
        );
        assert_eq!(
            parcel_err(|p| p.holders[0].kind = HolderKind::Unspecified as i32),
            "holders[0].kind: must be HOLDER_KIND_CITIZEN or HOLDER_KIND_ENTERPRISE, got HOLDER_KIND_UNSPECIFIED"
        );
        assert_eq!(
            parcel_err(|p| p.holders[1].kind = HolderKind::Citizen as i32),
            "holders[1].holderId: is an enterprise code but kind is HOLDER_KIND_CITIZEN"
        );
        assert_eq!(
            parcel_err(|p| p.holders[0].kind = HolderKind::Enterprise as i32),
            "holders[0].holderId: is a personal id but kind is HOLDER_KIND_ENTERPRISE"
        );
        assert_eq!(
            parcel_err(|p| p.holders[1].holder_id = "0300588568".into()),
            "holders[1].holderId: check digit is 8, expected 9"
        );
        assert_eq!(
            parcel_err(|p| p.holders[1] = p.holders[0].clone()),
            "holders[1].holderId: same holder as holders[0]"
        );
        assert_eq!(
            parcel_err(|p| p.holders[0].name.clear()),
            "holders[0].name: required"
        );
        assert!(
            parcel_err(|p| p.certificate.as_mut().unwrap().serial = "AA 0122457".into())
                .starts_with("certificate.serial: got 7 digits")
        );
        assert!(parcel_err(
            |p| p.certificate.as_mut().unwrap().registry_book_number = "XX01234".into()
        )
        .starts_with("certificate.registryBookNumber: must start with CS"));
        assert_eq!(
            parcel_err(|p| p.encumbrances[0].registered_on = None),
            "encumbrances[0].registeredOn: required"
        );
        assert_eq!(
            parcel_err(|p| p.encumbrances[0].released_on = date(2024, 9, 30)),
            "encumbrances[0].releasedOn: 2024-09-30 is before registeredOn 2024-10-01"
        );
    }

    #[test]
    fn land_use_areas_may_differ_by_rounding_only() {
        let mut p = good_parcel();
        p.land_uses[0].area_m2 = 100.009;
        assert_eq!(parcel(&mut p), Ok(()));
        // 0.01% of a large parcel is more than 0.01 m².
        let mut p = good_parcel();
        p.area_m2 = 200_000.0;
        p.land_uses[0].area_m2 = 49_999.0;
        p.land_uses[1].area_m2 = 150_010.0;
        assert_eq!(parcel(&mut p), Ok(()));
        p.land_uses[1].area_m2 = 150_030.0;
        assert!(parcel(&mut p).is_err());
        // No land uses recorded: nothing to add up.
        let mut p = good_parcel();
        p.land_uses.clear();
        assert_eq!(parcel(&mut p), Ok(()));
    }

    #[test]
    fn optional_parts_of_a_parcel_may_be_empty() {
        let mut p = good_parcel();
        p.address = None;
        p.certificate = Some(Certificate::default());
        p.encumbrances[0].released_on = None;
        assert_eq!(parcel(&mut p), Ok(()));
        p.certificate = Some(Certificate {
            serial: "DA 123456".into(),
            ..Certificate::default()
        });
        assert_eq!(parcel(&mut p), Ok(()));
    }

    #[test]
    fn enterprise_rules_name_the_field() {
        assert_eq!(
            enterprise_err(|e| e.enterprise_code = "0300588568".into()),
            "enterpriseCode: check digit is 8, expected 9"
        );
        assert_eq!(enterprise_err(|e| e.name.clear()), "name: required");
        assert_eq!(
            enterprise_err(|e| e.r#type = 0),
            "type: must be a known ENTERPRISE_TYPE_* value other than UNSPECIFIED, got ENTERPRISE_TYPE_UNSPECIFIED"
        );
        assert_eq!(
            enterprise_err(|e| e.status = 42),
            "status: must be a known ENTERPRISE_STATUS_* value other than UNSPECIFIED, got 42"
        );
        assert_eq!(
            enterprise_err(|e| e.founded_on = None),
            "foundedOn: required"
        );
        assert_eq!(
            enterprise_err(|e| e.founded_on = date(2010, 0, 4)),
            "foundedOn: 2010-00-04 is not a real date"
        );
        assert_eq!(
            enterprise_err(|e| e.charter_capital_vnd = -1),
            "charterCapitalVnd: must not be negative, got -1"
        );
        assert_eq!(
            enterprise_err(|e| e.head_office.as_mut().unwrap().province_code = "3".into()),
            "headOffice.provinceCode: must be 2 digits, got 1 characters"
        );
        assert!(
            enterprise_err(|e| e.legal_representatives[0].personal_id = "003085000123".into())
                .starts_with("legalRepresentatives[0].personalId: first 3 digits 003")
        );
        assert_eq!(
            enterprise_err(|e| e.legal_representatives[0].full_name.clear()),
            "legalRepresentatives[0].fullName: required"
        );
        assert_eq!(
            enterprise_err(|e| e.business_lines[1].vsic_code = "106".into()),
            "businessLines[1].vsicCode: must be a VSIC 2018 code of 4 or 5 digits, got \"106\""
        );
        assert_eq!(
            enterprise_err(|e| e.business_lines[1].main = true),
            "businessLines: exactly one line must have main set, found 2"
        );
        assert_eq!(
            enterprise_err(|e| e.business_lines[0].main = false),
            "businessLines: exactly one line must have main set, found 0"
        );
    }

    #[test]
    fn branches_and_enterprises_without_lines_are_valid() {
        let mut e = good_enterprise();
        e.enterprise_code = "0314409058-002".into();
        e.business_lines.clear();
        e.legal_representatives.clear();
        e.charter_capital_vnd = 0;
        assert_eq!(enterprise(&mut e), Ok(()));
    }

    #[test]
    fn real_dates_follow_the_calendar() {
        assert!(is_real_date(&Date {
            year: 2024,
            month: 2,
            day: 29
        }));
        assert!(!is_real_date(&Date {
            year: 2023,
            month: 2,
            day: 29
        }));
        assert!(!is_real_date(&Date::default()));
    }
}
