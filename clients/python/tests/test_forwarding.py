"""A forwarded lookup from Python: the client calls a front gateway that holds no registry; the
front forwards to the registry owner's gateway over mutual TLS and the answer carries the owner
as its provenance. Both gateways are the real binary on dev configs, set up as
docs/deployment.md describes (the owner knows the front as a relay; the front's client
certificate toward the owner is issued by the owner's CA).
"""

from __future__ import annotations

import json
import subprocess

import grpc
import pytest
from google.protobuf import field_mask_pb2

from conftest import BIN, dev_config, running_gateway
from interop.citizen.v1 import citizen_pb2, citizen_pb2_grpc
from interop.common.v1 import common_pb2

LAND_OFFICE = "000.00.20.H13"
FRONT = "000.00.00.H13"  # the front gateway's agency code at the owner
CITIZEN_OWNER = "000.00.00.G04"
TIMEOUT_S = 10


@pytest.fixture(scope="module")
def owner_and_front(tmp_path_factory):
    owner_home = tmp_path_factory.mktemp("owner")
    owner_config = dev_config() + f"""
[[agency]]
code = "{FRONT}"
name = "Front gateway of the province"
relay = true

[[registry]]
service = "interop.citizen.v1.CitizenRegistryService"
owner = "{CITIZEN_OWNER}"
"""
    with running_gateway(owner_home, owner_config) as owner:
        subprocess.run(
            [str(BIN), "certs", "issue", "--config", str(owner_home / "gateway.toml"), "--agency", FRONT],
            check=True,
            capture_output=True,
            text=True,
        )
        relay = owner_home / "certs" / "agencies"
        front_config = dev_config() + f"""
[[registry]]
service = "interop.citizen.v1.CitizenRegistryService"
owner = "{CITIZEN_OWNER}"
upstream = {{ address = "{owner.addr}", ca = "{owner_home / 'certs' / 'ca.pem'}", cert = "{relay / (FRONT + '.pem')}", key = "{relay / (FRONT + '.key')}", timeout_ms = 3000 }}
"""
        with running_gateway(tmp_path_factory.mktemp("front"), front_config) as front:
            yield owner, front


def test_forwarded_get_citizen_comes_from_the_owner_with_provenance(owner_and_front):
    owner, front = owner_and_front
    citizen = json.loads(owner.demo_extract("citizens")[0])
    with front.channel(LAND_OFFICE) as channel:
        stub = citizen_pb2_grpc.CitizenRegistryServiceStub(channel)
        response, call = stub.GetCitizen.with_call(
            citizen_pb2.GetCitizenRequest(
                context=common_pb2.AccessContext(
                    procedure_code="1.004227", dossier_id="000.00.20.H13-241205-0001"
                ),
                personal_id=citizen["personalId"],
                read_mask=field_mask_pb2.FieldMask(paths=["full_name"]),
            ),
            timeout=TIMEOUT_S,
        )
    assert response.citizen.full_name == citizen["fullName"]
    assert not response.citizen.personal_id
    assert response.provenance.source_agency == CITIZEN_OWNER
    assert response.provenance.HasField("as_of")
    request_id = dict(call.initial_metadata())["x-request-id"]

    # The owner recorded the same call, naming the consumer and the relay.
    exported = subprocess.run(
        [str(BIN), "audit", "export", "--config", str(owner.home / "gateway.toml")],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    records = [json.loads(line)["record"] for line in exported.splitlines()]
    at_owner = [r for r in records if r["request_id"] == request_id]
    assert len(at_owner) == 1, records
    assert at_owner[0]["agency_code"] == LAND_OFFICE
    assert at_owner[0]["relay_agency_code"] == FRONT
    assert at_owner[0]["fields"] == ["full_name"]


def test_the_front_refuses_what_its_own_grants_do_not_allow(owner_and_front):
    _, front = owner_and_front
    with front.channel("000.00.00.G22") as channel:
        stub = citizen_pb2_grpc.CitizenRegistryServiceStub(channel)
        with pytest.raises(grpc.RpcError) as denied:
            stub.GetCitizen(
                citizen_pb2.GetCitizenRequest(
                    context=common_pb2.AccessContext(
                        procedure_code="2.002154", dossier_id="000.00.00.G22-241205-0001"
                    ),
                    personal_id="092085000123",
                ),
                timeout=TIMEOUT_S,
            )
    assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
