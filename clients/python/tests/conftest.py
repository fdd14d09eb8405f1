"""Session fixtures: one real gateway process, its dev PKI and its demo extract.

The gateway runs from a temporary folder with a copy of the committed dev config
(`gateway.toml`, listening on an ephemeral port of 127.0.0.1). Being a dev config, the first
`serve` creates the dev PKI under `certs/` and the demo store and extract under `data/`.

The binary comes from $INTEROP_GATEWAY_BIN (default: <repo>/target/release/interop-gateway).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import threading
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest

REPO = Path(__file__).resolve().parents[3]
BIN = Path(os.environ.get("INTEROP_GATEWAY_BIN") or REPO / "target" / "release" / "interop-gateway").absolute()

# How long the gateway may take to start (it creates a PKI and imports the demo extract first)
# and to stop. These are upper bounds on waiting for an event, not sleeps.
START_TIMEOUT_S = 60
STOP_TIMEOUT_S = 30

# An agency the dev CA can issue a certificate for, but that the config does not know.
UNKNOWN_AGENCY = "000.00.99.H13"

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_SERVING_ADDR = re.compile(r"\baddr=(\S+)")


@dataclass
class Gateway:
    """A running gateway: its folder, address, parsed config and log."""

    home: Path
    addr: str
    config: dict
    log: list[str] = field(default_factory=list)

    @property
    def certs(self) -> Path:
        return self.home / "certs"

    def credentials(self, agency: str) -> grpc.ChannelCredentials:
        """mTLS credentials of a dev agency certificate.

        Trust root: the CA that issued the gateway's certificate. Client identity: the agency's
        certificate and key, whose URI SAN spiffe://<trust_domain>/agency/<code> names the agency.
        """
        return grpc.ssl_channel_credentials(
            root_certificates=(self.certs / "ca.pem").read_bytes(),
            private_key=(self.certs / "agencies" / f"{agency}.key").read_bytes(),
            certificate_chain=(self.certs / "agencies" / f"{agency}.pem").read_bytes(),
        )

    def channel(self, agency: str) -> grpc.Channel:
        """A secure channel to the gateway as `agency` (the gateway certificate covers 127.0.0.1)."""
        return grpc.secure_channel(self.addr, self.credentials(agency))

    def granted_fields(self, agency: str, method: str) -> list[str]:
        """The `fields` of the config's grant for (agency, full method name)."""
        grants = [g for g in self.config["grant"] if g["agency"] == agency and g["method"] == method]
        assert len(grants) == 1, f"expected one grant for {agency} {method} in the config, got {grants}"
        return list(grants[0]["fields"])

    def demo_extract(self, name: str) -> list[str]:
        """Lines (one proto3-JSON record each) of data/demo/<name>.jsonl."""
        path = self.home / self.config["data_dir"] / "demo" / f"{name}.jsonl"
        return [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def dev_config() -> str:
    """The committed dev config, listening on an ephemeral port of 127.0.0.1."""
    text = (REPO / "gateway.toml").read_text(encoding="utf-8")
    text, replaced = re.subn(r'(?m)^listen\s*=\s*"[^"]*"', 'listen = "127.0.0.1:0"', text)
    assert replaced == 1, "gateway.toml has no single top-level `listen` key"
    assert tomllib.loads(text).get("dev") is True, "gateway.toml is expected to be a dev config"
    return text


@contextlib.contextmanager
def running_gateway(home: Path, config_text: str):
    """Writes `config_text` to <home>/gateway.toml, starts `interop-gateway serve` on it, yields
    the running Gateway, and stops it with SIGTERM afterwards (checking a clean exit)."""
    if not BIN.is_file() or not os.access(BIN, os.X_OK):
        pytest.exit(
            f"no gateway binary at {BIN}: run `cargo build --release`, or set INTEROP_GATEWAY_BIN",
            returncode=2,
        )

    config_path = home / "gateway.toml"
    config_path.write_text(config_text, encoding="utf-8")

    env = dict(os.environ, RUST_LOG="info", NO_COLOR="1")
    env.pop("INTEROP_GATEWAY_CONFIG", None)
    process = subprocess.Popen(
        [str(BIN), "serve", "--config", str(config_path)],
        cwd=home,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        encoding="utf-8",
        errors="replace",
    )

    # One thread reads stderr for the whole session: it reports the readiness line
    # ("serving ... addr=<ip:port>") and keeps draining the log so the gateway never blocks on it.
    log: list[str] = []
    found: dict[str, str] = {}
    ready = threading.Event()

    def drain() -> None:
        for raw in process.stderr:
            line = _ANSI.sub("", raw.rstrip("\n"))
            log.append(line)
            match = _SERVING_ADDR.search(line)
            if not ready.is_set() and "serving" in line and match:
                found["addr"] = match.group(1)
                ready.set()
        ready.set()  # end of stderr: the gateway exited

    drainer = threading.Thread(target=drain, name="gateway-stderr", daemon=True)
    drainer.start()

    if not ready.wait(START_TIMEOUT_S) or "addr" not in found:
        process.kill()
        process.wait()
        drainer.join(5)
        pytest.fail(
            f"gateway did not report `serving ... addr=` (exit code {process.returncode}):\n"
            + "\n".join(log),
            pytrace=False,
        )

    gw = Gateway(home=home, addr=found["addr"], config=tomllib.loads(config_path.read_text("utf-8")), log=log)
    assert gw.addr.startswith("127.0.0.1:"), f"gateway listens on {gw.addr}, expected 127.0.0.1"
    try:
        yield gw
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            code = process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            code = process.wait()
            pytest.fail(f"gateway did not stop within {STOP_TIMEOUT_S}s of SIGTERM", pytrace=False)
        drainer.join(5)
        tail = "\n".join(log[-20:])
        assert code == 0, f"gateway exited with {code} after SIGTERM; log tail:\n{tail}"
        assert not [l for l in log if "panicked" in l], f"gateway panicked:\n{tail}"


@pytest.fixture(scope="session")
def gateway(tmp_path_factory: pytest.TempPathFactory):
    """The dev-config gateway shared by the session."""
    home = tmp_path_factory.mktemp("gateway")
    with running_gateway(home, dev_config()) as gw:
        yield gw


@pytest.fixture(scope="session")
def unknown_agency(gateway: Gateway) -> str:
    """Issues a dev certificate for an agency the config does not name; returns its code."""
    subprocess.run(
        [str(BIN), "certs", "issue", "--config", str(gateway.home / "gateway.toml"), "--agency", UNKNOWN_AGENCY],
        cwd=gateway.home,
        check=True,
        capture_output=True,
        text=True,
    )
    return UNKNOWN_AGENCY


@pytest.fixture(scope="session")
def demo_citizens(gateway: Gateway) -> list[dict]:
    return [json.loads(line) for line in gateway.demo_extract("citizens")]


@pytest.fixture(scope="session")
def demo_parcels(gateway: Gateway) -> list[dict]:
    return [json.loads(line) for line in gateway.demo_extract("parcels")]


@pytest.fixture(scope="session")
def demo_enterprises(gateway: Gateway) -> list[dict]:
    return [json.loads(line) for line in gateway.demo_extract("enterprises")]
