"""Signed receipts from Python: the answer's `x-interop-receipt` trailer is a compact JWS (EdDSA,
the access log's key) that a stock JOSE library verifies, and whose `sha256` is the hash of the
response message bytes exactly as received. The call is made with identity (de)serializers, so
the test hashes the raw bytes off the wire, not a re-encoding."""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess

import grpc
import jwt
import pytest
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    PublicFormat,
    load_pem_public_key,
)

from conftest import BIN
from interop.citizen.v1 import citizen_pb2
from interop.common.v1 import common_pb2

LAND_OFFICE = "000.00.20.H13"
GET_CITIZEN = "/interop.citizen.v1.CitizenRegistryService/GetCitizen"
TIMEOUT_S = 10


def b64url_sha256(data: bytes) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


@pytest.fixture(scope="module")
def answered(gateway, demo_citizens):
    """One GetCitizen answer as raw bytes, its trailing metadata and its request."""
    personal_id = demo_citizens[0]["personalId"]
    request = citizen_pb2.GetCitizenRequest(
        context=common_pb2.AccessContext(procedure_code="1.004227", dossier_id="000.00.20.H13-241205-0001"),
        personal_id=personal_id,
    )
    with gateway.channel(LAND_OFFICE) as channel:
        raw = channel.unary_unary(GET_CITIZEN, request_serializer=None, response_deserializer=None)
        response_bytes, call = raw.with_call(request.SerializeToString(), timeout=TIMEOUT_S)
    trailers = dict(call.trailing_metadata())
    headers = dict(call.initial_metadata())
    return response_bytes, trailers, headers, personal_id


def audit_public_key_pem(gateway) -> bytes:
    return (gateway.home / gateway.config["data_dir"] / "audit" / "audit.pub").read_bytes()


def test_receipt_verifies_with_a_jose_library_against_the_raw_response(gateway, answered):
    response_bytes, trailers, headers, personal_id = answered
    receipt = trailers["x-interop-receipt"]
    key = load_pem_public_key(audit_public_key_pem(gateway))

    decoded = jwt.PyJWS().decode_complete(receipt, key=key, algorithms=["EdDSA"])
    header = decoded["header"]
    claims = json.loads(decoded["payload"])
    assert header["alg"] == "EdDSA"
    assert header["kid"] == hashlib.sha256(key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)).hexdigest()

    assert claims["sha256"] == b64url_sha256(response_bytes)
    assert claims["rid"] == headers["x-request-id"]
    assert claims["agency"] == LAND_OFFICE
    assert claims["method"] == GET_CITIZEN.lstrip("/")
    assert claims["procedure"] == "1.004227"
    assert claims["dossier"] == "000.00.20.H13-241205-0001"
    assert claims["subjects"] == [personal_id]
    assert claims["fields"] == sorted(gateway.granted_fields(LAND_OFFICE, GET_CITIZEN.lstrip("/")))
    assert claims["outcome"] == "OK"
    # The bytes are the message itself: they parse as the response.
    assert citizen_pb2.GetCitizenResponse.FromString(response_bytes).citizen.personal_id == personal_id


def test_an_altered_receipt_does_not_verify(gateway, answered):
    _, trailers, _, _ = answered
    header, payload, signature = trailers["x-interop-receipt"].split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["fields"].append("id_card")
    forged_payload = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    key = load_pem_public_key(audit_public_key_pem(gateway))
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.PyJWS().decode_complete(f"{header}.{forged_payload}.{signature}", key=key, algorithms=["EdDSA"])


def test_the_gateway_cli_verifies_the_kept_receipt_and_response(gateway, answered, tmp_path):
    response_bytes, trailers, _, _ = answered
    (tmp_path / "receipt.jws").write_text(trailers["x-interop-receipt"])
    (tmp_path / "response.bin").write_bytes(response_bytes)
    public_key = gateway.home / gateway.config["data_dir"] / "audit" / "audit.pub"
    args = [str(BIN), "receipt", "verify", "--public-key", str(public_key),
            "--receipt", str(tmp_path / "receipt.jws"), "--response-file", str(tmp_path / "response.bin")]
    ok = subprocess.run(args, capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["agency"] == LAND_OFFICE
    (tmp_path / "response.bin").write_bytes(response_bytes + b"\x00")
    bad = subprocess.run(args, capture_output=True, text=True)
    assert bad.returncode == 1
    assert "response does not match the receipt" in bad.stderr
