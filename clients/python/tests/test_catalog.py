"""The catalogue from Python: any configured agency asks what the gateway serves and what its
own grants allow, with no grant of its own and without learning anything of other agencies'."""

from __future__ import annotations

import grpc
import pytest

from interop.catalog.v1 import catalog_pb2, catalog_pb2_grpc

LAND_OFFICE = "000.00.20.H13"
NATIONAL_PORTAL = "000.00.00.G22"
TIMEOUT_S = 10


def catalog(gateway, agency: str):
    return catalog_pb2_grpc.CatalogServiceStub(gateway.channel(agency))


def test_list_services_describes_methods_and_field_paths(gateway):
    # The portal has no registry grant, yet may read the catalogue.
    services = catalog(gateway, NATIONAL_PORTAL).ListServices(catalog_pb2.ListServicesRequest(), timeout=TIMEOUT_S).services
    by_name = {s.name: s for s in services}
    citizen = by_name["interop.citizen.v1.CitizenRegistryService"]
    assert citizen.description.startswith("Read access to citizen records.")
    get = next(m for m in citizen.methods if m.name.endswith("/GetCitizen"))
    assert get.record_type == "interop.citizen.v1.Citizen"
    paths = {f.path: f for f in get.fields}
    assert paths["permanent_address.province_code"].type == "string"
    assert paths["permanent_address"].type == "interop.common.v1.Address"
    assert all(f.description for f in get.fields)


def test_list_my_grants_matches_the_config_for_the_caller_only(gateway):
    mine = catalog(gateway, LAND_OFFICE).ListMyGrants(catalog_pb2.ListMyGrantsRequest(), timeout=TIMEOUT_S)
    assert mine.agency_code == LAND_OFFICE
    expected = {(g["method"], tuple(g["procedures"]), tuple(sorted(g.get("fields", []))))
                for g in gateway.config["grant"] if g["agency"] == LAND_OFFICE}
    got = {(g.method, tuple(g.procedures), tuple(g.fields)) for g in mine.grants}
    assert got == expected
    verify = next(g for g in mine.grants if g.method.endswith("/VerifyCitizen"))
    assert {l.name for l in verify.limits} >= {"verify_failures_per_subject", "verify_failures_per_agency_hour"}
    size = next(l for l in verify.limits if l.name == "max_request_bytes")
    assert size.value == 64 * 1024 and size.exact_value == 64 * 1024.0


def test_unknown_agency_gets_no_catalogue(gateway, unknown_agency):
    # The gateway closes the connection of a certificate naming no configured agency right after
    # the handshake: no catalogue, and no gRPC status from a service.
    with pytest.raises(grpc.RpcError) as caught:
        catalog(gateway, unknown_agency).ListMyGrants(catalog_pb2.ListMyGrantsRequest(), timeout=TIMEOUT_S)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
