"""Server reflection: calling the gateway with no generated code at all.

Everything here comes from the descriptors the gateway serves (grpcio-reflection's client side);
this module imports none of the stubs generated from proto/.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from google.protobuf import descriptor_pb2, descriptor_pool, json_format
from google.protobuf.message_factory import GetMessageClass
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

REPO = Path(__file__).resolve().parents[3]
LAND_OFFICE = "000.00.20.H13"
CITIZEN_SERVICE = "interop.citizen.v1.CitizenRegistryService"
TIMEOUT_S = 10


def test_reflection_lists_every_service(gateway):
    with gateway.channel(LAND_OFFICE) as channel:
        services = set(ProtoReflectionDescriptorDatabase(channel).get_services())
    assert {
        "interop.citizen.v1.CitizenRegistryService",
        "interop.land.v1.LandRegistryService",
        "interop.business.v1.BusinessRegistryService",
        "grpc.health.v1.Health",
    } <= services


def test_get_citizen_from_reflected_descriptors(gateway):
    first_citizen = json.loads(gateway.demo_extract("citizens")[0])

    with gateway.channel(LAND_OFFICE) as channel:
        # A descriptor pool that asks the server for whatever it does not know yet.
        pool = descriptor_pool.DescriptorPool(ProtoReflectionDescriptorDatabase(channel))
        service = pool.FindServiceByName(CITIZEN_SERVICE)
        method = service.methods_by_name["GetCitizen"]
        request_class = GetMessageClass(method.input_type)
        response_class = GetMessageClass(method.output_type)

        # read_mask is a google.protobuf.FieldMask: it too must resolve through reflection.
        read_mask_type = method.input_type.fields_by_name["read_mask"].message_type
        assert read_mask_type.full_name == "google.protobuf.FieldMask"
        assert read_mask_type.file.name == "google/protobuf/field_mask.proto"

        request = request_class()
        request.context.procedure_code = "1.004227"
        request.context.dossier_id = "000.00.20.H13-241205-0001"
        request.personal_id = first_citizen["personalId"]
        request.read_mask.paths.extend(["full_name", "permanent_address.province_code"])

        get_citizen = channel.unary_unary(
            f"/{CITIZEN_SERVICE}/GetCitizen",
            request_serializer=request_class.SerializeToString,
            response_deserializer=response_class.FromString,
        )
        response = get_citizen(request, timeout=TIMEOUT_S)

    answer = json_format.MessageToDict(response)
    # The dev config declares no owner: provenance says only when the record was current.
    assert set(answer.pop("provenance")) == {"asOf"}
    assert answer == {
        "citizen": {
            "fullName": first_citizen["fullName"],
            "permanentAddress": {"provinceCode": first_citizen["permanentAddress"]["provinceCode"]},
        }
    }


def _compiled_from_proto_dir(tmp_path) -> dict[str, descriptor_pb2.FileDescriptorProto]:
    """FileDescriptorProtos of proto/interop/**, compiled by grpc_tools' protoc."""
    out = tmp_path / "interop.pb"
    protos = sorted(str(p.relative_to(REPO / "proto")) for p in (REPO / "proto").glob("interop/*/v1/*.proto"))
    subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", f"-I{REPO / 'proto'}", f"--descriptor_set_out={out}", *protos],
        check=True,
    )
    files = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes()).file
    return {f.name: f for f in files}


def test_reflected_descriptors_match_the_proto_files(gateway, tmp_path):
    """What the binary serves is what proto/ says: client code generated from either agrees."""
    compiled = _compiled_from_proto_dir(tmp_path)
    assert set(compiled) == {
        "interop/common/v1/common.proto",
        "interop/citizen/v1/citizen.proto",
        "interop/land/v1/land.proto",
        "interop/business/v1/business.proto",
        "interop/audit/v1/access_log.proto",
        "interop/audit/v1/witness.proto",
        "interop/catalog/v1/catalog.proto",
    }
    with gateway.channel(LAND_OFFICE) as channel:
        database = ProtoReflectionDescriptorDatabase(channel)
        for name, expected in compiled.items():
            served = descriptor_pb2.FileDescriptorProto()
            served.CopyFrom(database.FindFileByName(name))
            served.ClearField("source_code_info")
            expected.ClearField("source_code_info")
            assert served == expected, f"{name}: the gateway serves a different descriptor than proto/"
