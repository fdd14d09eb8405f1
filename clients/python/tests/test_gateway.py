"""Every gateway method, called from Python stubs generated from proto/, over mutual TLS.

This file doubles as the tested Python example for client developers:

- `test_quickstart_get_citizen` shows a whole call: loading the CA, agency certificate and key,
  opening a `grpc.secure_channel`, building the `AccessContext` and `read_mask`;
- `error_details` shows how to read the `google.rpc.Status` details of an error
  (`ErrorInfo`, `BadRequest`, `ResourceInfo`) with grpcio-status.

Stubs: python -m grpc_tools.protoc -I proto --python_out=GEN --grpc_python_out=GEN \
       proto/interop/{common,citizen,land,business}/v1/*.proto   (see run.sh)
"""

from __future__ import annotations

from dataclasses import dataclass

import grpc
import pytest
from google.protobuf import field_mask_pb2, json_format
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status

from interop.audit.v1 import access_log_pb2, access_log_pb2_grpc
from interop.business.v1 import business_pb2, business_pb2_grpc
from interop.citizen.v1 import citizen_pb2, citizen_pb2_grpc
from interop.common.v1 import common_pb2
from interop.land.v1 import land_pb2, land_pb2_grpc

# Agencies of the committed dev config (gateway.toml).
LAND_OFFICE = "000.00.20.H13"  # grants: GetCitizen, GetParcel, ListParcelsByHolder for 1.004227
BUSINESS_OFFICE = "000.00.12.H13"  # grants: GetEnterprise, GetCitizen for 2.000815
NATIONAL_PORTAL = "000.00.00.G22"  # only ListAccessRecords (for 2.002154): no registry data

GET_CITIZEN = "interop.citizen.v1.CitizenRegistryService/GetCitizen"
GET_PARCEL = "interop.land.v1.LandRegistryService/GetParcel"
LIST_PARCELS_BY_HOLDER = "interop.land.v1.LandRegistryService/ListParcelsByHolder"
GET_ENTERPRISE = "interop.business.v1.BusinessRegistryService/GetEnterprise"

TIMEOUT_S = 10  # deadline of every call

# Well-formed identifiers that are not in the demo registry.
ABSENT_PERSONAL_ID = "092190000999"
BAD_CHECK_DIGIT_ENTERPRISE_CODE = "0300588568"  # the check digit of 030058856x is 9


# --- the example: one call over mTLS -------------------------------------------------------------


def test_quickstart_get_citizen(gateway, demo_citizens):
    certs = gateway.certs  # the dev PKI the gateway created on first start

    # Trust the CA that issued the gateway's certificate; present the agency's certificate and key.
    credentials = grpc.ssl_channel_credentials(
        root_certificates=(certs / "ca.pem").read_bytes(),
        private_key=(certs / "agencies" / "000.00.20.H13.key").read_bytes(),
        certificate_chain=(certs / "agencies" / "000.00.20.H13.pem").read_bytes(),
    )
    with grpc.secure_channel(gateway.addr, credentials) as channel:  # addr: "127.0.0.1:<port>"
        stub = citizen_pb2_grpc.CitizenRegistryServiceStub(channel)
        request = citizen_pb2.GetCitizenRequest(
            # Why the call is made: the procedure and the dossier it serves. Required.
            context=common_pb2.AccessContext(
                procedure_code="1.004227",
                dossier_id="000.00.20.H13-241205-0001",
                officer_id="cb-017",
            ),
            personal_id=demo_citizens[0]["personalId"],
            # Only the fields this dossier needs; an empty mask means every granted field.
            read_mask=field_mask_pb2.FieldMask(paths=["full_name", "permanent_address.province_code"]),
        )
        response = stub.GetCitizen(request, timeout=TIMEOUT_S)

    assert response.citizen.full_name == demo_citizens[0]["fullName"]
    assert response.citizen.permanent_address.province_code == demo_citizens[0]["permanentAddress"]["provinceCode"]
    assert not response.citizen.personal_id  # not asked for, so not disclosed
    assert not response.citizen.permanent_address.commune_code


# --- reading errors ------------------------------------------------------------------------------


@dataclass
class ErrorDetails:
    code: grpc.StatusCode
    info: error_details_pb2.ErrorInfo | None = None
    bad_request: error_details_pb2.BadRequest | None = None
    resource: error_details_pb2.ResourceInfo | None = None

    @property
    def bad_fields(self) -> list[str]:
        return [v.field for v in self.bad_request.field_violations] if self.bad_request else []


def error_details(err: grpc.RpcError) -> ErrorDetails:
    """Decodes the google.rpc.Status the gateway sends in the `grpc-status-details-bin` trailer."""
    status = rpc_status.from_call(err)  # checks that code and message agree with the call's
    assert status is not None, f"{err.code()} without google.rpc.Status details: {err.details()}"
    details = ErrorDetails(code=err.code())
    for detail in status.details:  # each one a google.protobuf.Any
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            details.info = error_details_pb2.ErrorInfo()
            detail.Unpack(details.info)
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            details.bad_request = error_details_pb2.BadRequest()
            detail.Unpack(details.bad_request)
        elif detail.Is(error_details_pb2.ResourceInfo.DESCRIPTOR):
            details.resource = error_details_pb2.ResourceInfo()
            detail.Unpack(details.resource)
    # Every gateway error carries an ErrorInfo of the gateway's domain: switch on its reason.
    assert details.info is not None, f"no ErrorInfo in {status}"
    assert details.info.domain == "interop-gateway"
    return details


def call_error(method, request) -> ErrorDetails:
    """Calls `method`, expecting an error; returns its decoded details."""
    with pytest.raises(grpc.RpcError) as caught:
        method(request, timeout=TIMEOUT_S)
    return error_details(caught.value)


# --- helpers and fixtures ------------------------------------------------------------------------


def land_context() -> common_pb2.AccessContext:
    return common_pb2.AccessContext(procedure_code="1.004227", dossier_id="000.00.20.H13-241205-0001")


def business_context() -> common_pb2.AccessContext:
    return common_pb2.AccessContext(procedure_code="2.000815", dossier_id="000.00.12.H13-241205-0002")


def mask(*paths: str) -> field_mask_pb2.FieldMask:
    return field_mask_pb2.FieldMask(paths=list(paths))


def only(record, paths):
    """`record` reduced to `paths`: what the gateway must answer for that set of field paths."""
    reduced = type(record)()
    field_mask_pb2.FieldMask(paths=list(paths)).MergeMessage(record, reduced)
    return reduced


def ref_key(ref: land_pb2.ParcelRef) -> tuple[str, int, int]:
    return (ref.commune_code, ref.map_sheet, ref.parcel_number)


@pytest.fixture(scope="module")
def land_office(gateway):
    with gateway.channel(LAND_OFFICE) as channel:
        yield channel


@pytest.fixture(scope="module")
def business_office(gateway):
    with gateway.channel(BUSINESS_OFFICE) as channel:
        yield channel


@pytest.fixture(scope="module")
def national_portal(gateway):
    with gateway.channel(NATIONAL_PORTAL) as channel:
        yield channel


@pytest.fixture(scope="module")
def citizen(demo_citizens) -> citizen_pb2.Citizen:
    """The first citizen of the demo extract (proto3 JSON parses into the generated message)."""
    return json_format.ParseDict(demo_citizens[0], citizen_pb2.Citizen())


@pytest.fixture(scope="module")
def parcels(demo_parcels) -> list[land_pb2.Parcel]:
    return [json_format.ParseDict(p, land_pb2.Parcel()) for p in demo_parcels]


@pytest.fixture(scope="module")
def parcel(parcels) -> land_pb2.Parcel:
    """A parcel with every field set, encumbrances included."""
    return next(p for p in parcels if p.HasField("certificate") and p.encumbrances and p.land_uses)


@pytest.fixture(scope="module")
def enterprise(demo_enterprises) -> business_pb2.Enterprise:
    return json_format.ParseDict(demo_enterprises[0], business_pb2.Enterprise())


def parcels_by_holder(parcels) -> dict[str, list[land_pb2.Parcel]]:
    held: dict[str, list[land_pb2.Parcel]] = {}
    for p in parcels:
        for holder in p.holders:
            held.setdefault(holder.holder_id, []).append(p)
    return held


# --- CitizenRegistryService.GetCitizen -----------------------------------------------------------


@pytest.mark.parametrize(
    "agency, context",
    [(LAND_OFFICE, land_context()), (BUSINESS_OFFICE, business_context())],
    ids=["land-office", "business-office"],
)
def test_get_citizen_empty_read_mask_returns_exactly_the_granted_fields(gateway, citizen, agency, context):
    with gateway.channel(agency) as channel:
        stub = citizen_pb2_grpc.CitizenRegistryServiceStub(channel)
        response = stub.GetCitizen(
            citizen_pb2.GetCitizenRequest(context=context, personal_id=citizen.personal_id), timeout=TIMEOUT_S
        )
    granted = gateway.granted_fields(agency, GET_CITIZEN)
    assert response.citizen == only(citizen, granted)
    assert not response.citizen.HasField("id_card")  # in no grant
    assert not response.citizen.household_id


@pytest.mark.parametrize(
    "paths",
    [
        ["permanent_address.province_code"],
        ["full_name", "date_of_birth"],
        ["permanent_address"],
        ["personal_id", "permanent_address.commune_code", "permanent_address.commune_name"],
    ],
    ids=lambda paths: ",".join(paths),
)
def test_get_citizen_read_mask_returns_only_those_paths(land_office, citizen, paths):
    stub = citizen_pb2_grpc.CitizenRegistryServiceStub(land_office)
    response = stub.GetCitizen(
        citizen_pb2.GetCitizenRequest(context=land_context(), personal_id=citizen.personal_id, read_mask=mask(*paths)),
        timeout=TIMEOUT_S,
    )
    assert response.citizen == only(citizen, paths)


def test_get_citizen_nested_path_alone(land_office, citizen):
    stub = citizen_pb2_grpc.CitizenRegistryServiceStub(land_office)
    response = stub.GetCitizen(
        citizen_pb2.GetCitizenRequest(
            context=land_context(), personal_id=citizen.personal_id, read_mask=mask("permanent_address.province_code")
        ),
        timeout=TIMEOUT_S,
    )
    expected = citizen_pb2.Citizen(
        permanent_address=common_pb2.Address(province_code=citizen.permanent_address.province_code)
    )
    assert response.citizen == expected
    assert [f.name for f, _ in response.citizen.ListFields()] == ["permanent_address"]


# --- LandRegistryService.GetParcel ---------------------------------------------------------------


def test_get_parcel_empty_read_mask_returns_exactly_the_granted_fields(gateway, land_office, parcel):
    stub = land_pb2_grpc.LandRegistryServiceStub(land_office)
    response = stub.GetParcel(land_pb2.GetParcelRequest(context=land_context(), parcel=parcel.ref), timeout=TIMEOUT_S)
    assert response.parcel == only(parcel, gateway.granted_fields(LAND_OFFICE, GET_PARCEL))
    assert response.parcel.encumbrances  # granted to GetParcel, and this parcel has some


def test_get_parcel_read_mask(land_office, parcel):
    stub = land_pb2_grpc.LandRegistryServiceStub(land_office)
    paths = ["area_m2", "certificate.serial", "holders"]
    response = stub.GetParcel(
        land_pb2.GetParcelRequest(context=land_context(), parcel=parcel.ref, read_mask=mask(*paths)), timeout=TIMEOUT_S
    )
    assert response.parcel == only(parcel, paths)
    assert response.parcel.certificate.serial and not response.parcel.certificate.issued_by


# --- LandRegistryService.ListParcelsByHolder -----------------------------------------------------


@pytest.mark.parametrize("page_size", [1, 2, 0])
def test_list_parcels_by_holder_pages_through_every_parcel(gateway, land_office, parcels, page_size):
    held = parcels_by_holder(parcels)
    # The holder with the most parcels (ties: the smallest id), so that there are several pages.
    holder_id = min(held, key=lambda h: (-len(held[h]), h))
    expected = sorted(held[holder_id], key=lambda p: ref_key(p.ref))  # commune, map sheet, number
    assert len(expected) >= 3, "the demo extract should have a holder with several parcels"
    granted = gateway.granted_fields(LAND_OFFICE, LIST_PARCELS_BY_HOLDER)

    stub = land_pb2_grpc.LandRegistryServiceStub(land_office)
    seen: list[land_pb2.Parcel] = []
    pages = 0
    token = ""
    while True:
        response = stub.ListParcelsByHolder(
            land_pb2.ListParcelsByHolderRequest(
                context=land_context(), holder_id=holder_id, page_size=page_size, page_token=token
            ),
            timeout=TIMEOUT_S,
        )
        pages += 1
        assert len(response.parcels) <= (page_size or 20)
        seen.extend(response.parcels)
        token = response.next_page_token
        if not token:
            break
        assert pages <= len(expected), "next_page_token never ends"

    keys = [ref_key(p.ref) for p in seen]
    assert len(keys) == len(set(keys)), f"a parcel was returned twice: {keys}"
    assert keys == [ref_key(p.ref) for p in expected]
    assert seen == [only(p, granted) for p in expected]  # no certificate, no encumbrances
    effective_size = page_size or 20
    assert pages == max(1, -(-len(expected) // effective_size))


def test_list_parcels_by_holder_read_mask(land_office, parcels):
    held = parcels_by_holder(parcels)
    holder_id = min(held, key=lambda h: (-len(held[h]), h))
    stub = land_pb2_grpc.LandRegistryServiceStub(land_office)
    response = stub.ListParcelsByHolder(
        land_pb2.ListParcelsByHolderRequest(
            context=land_context(), holder_id=holder_id, page_size=100, read_mask=mask("ref", "area_m2")
        ),
        timeout=TIMEOUT_S,
    )
    expected = sorted(held[holder_id], key=lambda p: ref_key(p.ref))
    assert list(response.parcels) == [only(p, ["ref", "area_m2"]) for p in expected]
    assert response.next_page_token == ""


def test_list_parcels_of_an_enterprise_holder(land_office, parcels):
    held = parcels_by_holder(parcels)
    enterprise_holders = sorted(
        {h.holder_id for p in parcels for h in p.holders if h.kind == land_pb2.HOLDER_KIND_ENTERPRISE}
    )
    assert enterprise_holders, "the demo extract should have parcels held by enterprises"
    holder_id = enterprise_holders[0]
    stub = land_pb2_grpc.LandRegistryServiceStub(land_office)
    response = stub.ListParcelsByHolder(
        land_pb2.ListParcelsByHolderRequest(context=land_context(), holder_id=holder_id, read_mask=mask("ref")),
        timeout=TIMEOUT_S,
    )
    assert [ref_key(p.ref) for p in response.parcels] == sorted(ref_key(p.ref) for p in held[holder_id])


def test_list_parcels_of_a_holder_without_parcels_is_empty(land_office, parcels, demo_citizens):
    held = parcels_by_holder(parcels)
    holder_id = next(c["personalId"] for c in demo_citizens if c["personalId"] not in held)
    stub = land_pb2_grpc.LandRegistryServiceStub(land_office)
    response = stub.ListParcelsByHolder(
        land_pb2.ListParcelsByHolderRequest(context=land_context(), holder_id=holder_id), timeout=TIMEOUT_S
    )
    assert list(response.parcels) == []
    assert response.next_page_token == ""


def test_page_token_is_valid_only_for_its_holder(land_office, parcels):
    held = parcels_by_holder(parcels)
    first, second = sorted(held, key=lambda h: (-len(held[h]), h))[:2]
    stub = land_pb2_grpc.LandRegistryServiceStub(land_office)
    page = stub.ListParcelsByHolder(
        land_pb2.ListParcelsByHolderRequest(context=land_context(), holder_id=first, page_size=1), timeout=TIMEOUT_S
    )
    assert page.next_page_token

    details = call_error(
        stub.ListParcelsByHolder,
        land_pb2.ListParcelsByHolderRequest(
            context=land_context(), holder_id=second, page_size=1, page_token=page.next_page_token
        ),
    )
    assert details.code == grpc.StatusCode.INVALID_ARGUMENT
    assert details.info.reason == "INVALID_ARGUMENT"
    assert details.bad_fields == ["page_token"]


# --- BusinessRegistryService.GetEnterprise -------------------------------------------------------


def test_get_enterprise_empty_read_mask_returns_exactly_the_granted_fields(gateway, business_office, enterprise):
    stub = business_pb2_grpc.BusinessRegistryServiceStub(business_office)
    response = stub.GetEnterprise(
        business_pb2.GetEnterpriseRequest(context=business_context(), enterprise_code=enterprise.enterprise_code),
        timeout=TIMEOUT_S,
    )
    assert response.enterprise == only(enterprise, gateway.granted_fields(BUSINESS_OFFICE, GET_ENTERPRISE))


def test_get_enterprise_read_mask(business_office, enterprise):
    stub = business_pb2_grpc.BusinessRegistryServiceStub(business_office)
    paths = ["name", "status", "head_office.province_code", "business_lines"]
    response = stub.GetEnterprise(
        business_pb2.GetEnterpriseRequest(
            context=business_context(), enterprise_code=enterprise.enterprise_code, read_mask=mask(*paths)
        ),
        timeout=TIMEOUT_S,
    )
    assert response.enterprise == only(enterprise, paths)
    assert sum(line.main for line in response.enterprise.business_lines) == 1


def test_grant_covers_a_provinces_version_of_the_procedure(business_office, enterprise):
    # A grant for 2.000815 also covers 2.000815.<agency code>, a province's version of it.
    stub = business_pb2_grpc.BusinessRegistryServiceStub(business_office)
    context = common_pb2.AccessContext(procedure_code="2.000815.000.00.00.H55", dossier_id="000.00.12.H13-241205-0003")
    response = stub.GetEnterprise(
        business_pb2.GetEnterpriseRequest(
            context=context, enterprise_code=enterprise.enterprise_code, read_mask=mask("name")
        ),
        timeout=TIMEOUT_S,
    )
    assert response.enterprise == business_pb2.Enterprise(name=enterprise.name)


# --- grpc.health.v1.Health -----------------------------------------------------------------------


def test_health_check_serving(land_office):
    stub = health_pb2_grpc.HealthStub(land_office)
    response = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=TIMEOUT_S)
    assert response.status == health_pb2.HealthCheckResponse.SERVING


# --- INVALID_ARGUMENT ----------------------------------------------------------------------------


def test_missing_context_is_invalid_argument(land_office, citizen):
    stub = citizen_pb2_grpc.CitizenRegistryServiceStub(land_office)
    details = call_error(stub.GetCitizen, citizen_pb2.GetCitizenRequest(personal_id=citizen.personal_id))
    assert details.code == grpc.StatusCode.INVALID_ARGUMENT
    assert details.info.reason == "INVALID_ARGUMENT"
    assert details.bad_fields == ["context"]


def test_malformed_personal_id_is_invalid_argument(land_office):
    stub = citizen_pb2_grpc.CitizenRegistryServiceStub(land_office)
    details = call_error(stub.GetCitizen, citizen_pb2.GetCitizenRequest(context=land_context(), personal_id="12345"))
    assert details.code == grpc.StatusCode.INVALID_ARGUMENT
    assert details.info.reason == "INVALID_ARGUMENT"
    assert details.bad_fields == ["personal_id"]
    assert details.bad_request.field_violations[0].description  # says what is wrong


def test_enterprise_code_with_wrong_check_digit_is_invalid_argument(business_office):
    stub = business_pb2_grpc.BusinessRegistryServiceStub(business_office)
    details = call_error(
        stub.GetEnterprise,
        business_pb2.GetEnterpriseRequest(context=business_context(), enterprise_code=BAD_CHECK_DIGIT_ENTERPRISE_CODE),
    )
    assert details.code == grpc.StatusCode.INVALID_ARGUMENT
    assert details.info.reason == "INVALID_ARGUMENT"
    assert details.bad_fields == ["enterprise_code"]


def test_malformed_parcel_ref_names_each_field(land_office):
    stub = land_pb2_grpc.LandRegistryServiceStub(land_office)
    bad_ref = land_pb2.ParcelRef(commune_code="3112", map_sheet=0, parcel_number=1)
    details = call_error(stub.GetParcel, land_pb2.GetParcelRequest(context=land_context(), parcel=bad_ref))
    assert details.code == grpc.StatusCode.INVALID_ARGUMENT
    assert details.bad_fields == ["parcel.commune_code", "parcel.map_sheet"]


def test_unknown_read_mask_path_is_invalid_field_mask(land_office, citizen):
    stub = citizen_pb2_grpc.CitizenRegistryServiceStub(land_office)
    details = call_error(
        stub.GetCitizen,
        citizen_pb2.GetCitizenRequest(context=land_context(), personal_id=citizen.personal_id, read_mask=mask("nickname")),
    )
    assert details.code == grpc.StatusCode.INVALID_ARGUMENT
    assert details.info.reason == "INVALID_FIELD_MASK"
    assert details.bad_fields == ["read_mask.paths[0]"]


# --- PERMISSION_DENIED ---------------------------------------------------------------------------


def test_agency_without_grant_is_method_not_granted(national_portal, citizen):
    stub = citizen_pb2_grpc.CitizenRegistryServiceStub(national_portal)
    details = call_error(
        stub.GetCitizen, citizen_pb2.GetCitizenRequest(context=land_context(), personal_id=citizen.personal_id)
    )
    assert details.code == grpc.StatusCode.PERMISSION_DENIED
    assert details.info.reason == "METHOD_NOT_GRANTED"


def test_other_procedure_is_procedure_not_granted(land_office, citizen):
    stub = citizen_pb2_grpc.CitizenRegistryServiceStub(land_office)
    context = common_pb2.AccessContext(procedure_code="1.000001", dossier_id="000.00.20.H13-241205-0001")
    details = call_error(stub.GetCitizen, citizen_pb2.GetCitizenRequest(context=context, personal_id=citizen.personal_id))
    assert details.code == grpc.StatusCode.PERMISSION_DENIED
    assert details.info.reason == "PROCEDURE_NOT_GRANTED"


def test_read_mask_beyond_the_grant_is_field_not_granted(land_office, citizen):
    stub = citizen_pb2_grpc.CitizenRegistryServiceStub(land_office)
    details = call_error(
        stub.GetCitizen,
        citizen_pb2.GetCitizenRequest(context=land_context(), personal_id=citizen.personal_id, read_mask=mask("id_card")),
    )
    assert details.code == grpc.StatusCode.PERMISSION_DENIED
    assert details.info.reason == "FIELD_NOT_GRANTED"
    assert details.info.metadata["fields"] == "id_card"


# --- NOT_FOUND -----------------------------------------------------------------------------------


def test_absent_personal_id_is_record_not_found(land_office):
    stub = citizen_pb2_grpc.CitizenRegistryServiceStub(land_office)
    details = call_error(
        stub.GetCitizen, citizen_pb2.GetCitizenRequest(context=land_context(), personal_id=ABSENT_PERSONAL_ID)
    )
    assert details.code == grpc.StatusCode.NOT_FOUND
    assert details.info.reason == "RECORD_NOT_FOUND"
    assert details.resource is not None
    assert details.resource.resource_type == "interop.citizen.v1.Citizen"
    assert details.resource.resource_name == ABSENT_PERSONAL_ID


# --- UNAUTHENTICATED and the TLS handshake -------------------------------------------------------


def test_unknown_agency_is_closed_after_the_handshake(gateway, unknown_agency, citizen):
    # A certificate the CA signed that names no agency configured here: the gateway closes the
    # connection right after the handshake (its log says why), so no gRPC status comes from it.
    with gateway.channel(unknown_agency) as channel:
        stub = citizen_pb2_grpc.CitizenRegistryServiceStub(channel)
        with pytest.raises(grpc.RpcError) as caught:
            stub.GetCitizen(
                citizen_pb2.GetCitizenRequest(context=land_context(), personal_id=citizen.personal_id),
                timeout=TIMEOUT_S,
            )
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE


def test_no_client_certificate_fails_the_handshake(gateway, citizen):
    # Without a client certificate there is no gRPC status from the gateway: the handshake fails.
    credentials = grpc.ssl_channel_credentials(root_certificates=(gateway.certs / "ca.pem").read_bytes())
    with grpc.secure_channel(gateway.addr, credentials) as channel:
        stub = citizen_pb2_grpc.CitizenRegistryServiceStub(channel)
        with pytest.raises(grpc.RpcError) as caught:
            stub.GetCitizen(
                citizen_pb2.GetCitizenRequest(context=land_context(), personal_id=citizen.personal_id),
                timeout=TIMEOUT_S,
            )
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE


# --- verify instead of read, and the citizen's view of the access log -----------------------------


def test_verify_citizen_answers_match_without_record_data(gateway, demo_citizens):
    citizen = demo_citizens[0]
    dob = citizen["dateOfBirth"]
    with gateway.channel(LAND_OFFICE) as channel:
        stub = citizen_pb2_grpc.CitizenRegistryServiceStub(channel)
        context = common_pb2.AccessContext(procedure_code="1.004227", dossier_id="000.00.20.H13-241205-0002")
        ok = stub.VerifyCitizen(
            citizen_pb2.VerifyCitizenRequest(
                context=context,
                personal_id=citizen["personalId"],
                full_name="  " + citizen["fullName"].replace(" ", "   ") + " ",  # whitespace is folded
                date_of_birth=common_pb2.Date(year=dob["year"], month=dob["month"], day=dob["day"]),
            ),
            timeout=TIMEOUT_S,
        )
        assert ok.match and list(ok.mismatched_fields) == []
        wrong = stub.VerifyCitizen(
            citizen_pb2.VerifyCitizenRequest(
                context=context,
                personal_id=citizen["personalId"],
                full_name="Không Phải Tên",
                date_of_birth=common_pb2.Date(year=dob["year"] - 1, month=dob["month"], day=dob["day"]),
            ),
            timeout=TIMEOUT_S,
        )
    assert not wrong.match
    assert list(wrong.mismatched_fields) == ["full_name", "date_of_birth"]
    assert citizen["fullName"].encode() not in wrong.SerializeToString()


def test_citizen_sees_who_read_their_record(gateway, demo_citizens):
    subject = demo_citizens[1]["personalId"]
    with gateway.channel(LAND_OFFICE) as channel:
        citizen_pb2_grpc.CitizenRegistryServiceStub(channel).GetCitizen(
            citizen_pb2.GetCitizenRequest(
                context=common_pb2.AccessContext(
                    procedure_code="1.004227", dossier_id="000.00.20.H13-241205-0003", officer_id="cb-017"
                ),
                personal_id=subject,
                read_mask=field_mask_pb2.FieldMask(paths=["full_name"]),
            ),
            timeout=TIMEOUT_S,
        )
    with gateway.channel(NATIONAL_PORTAL) as channel:
        response = access_log_pb2_grpc.AccessLogServiceStub(channel).ListAccessRecords(
            access_log_pb2.ListAccessRecordsRequest(
                context=common_pb2.AccessContext(procedure_code="2.002154", dossier_id="000.00.00.G22-241205-0001"),
                subject_id=subject,
                page_size=10,
            ),
            timeout=TIMEOUT_S,
        )
    reads = [r for r in response.records if r.dossier_id == "000.00.20.H13-241205-0003"]
    assert len(reads) == 1
    assert reads[0].agency_code == LAND_OFFICE
    assert reads[0].method == GET_CITIZEN
    assert list(reads[0].fields) == ["full_name"]
    assert reads[0].outcome == "OK"
    assert b"cb-017" not in response.SerializeToString()  # officer ids stay in the log
