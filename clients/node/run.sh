#!/usr/bin/env bash
# Installs the pinned dependencies from package-lock.json and runs the Node
# conformance tests against the gateway binary in $INTEROP_GATEWAY_BIN
# (default: <repo>/target/release/interop-gateway). Exit code: the tests'.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
npm ci --no-audit --no-fund --loglevel=error
npm test
