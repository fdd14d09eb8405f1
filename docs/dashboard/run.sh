#!/usr/bin/env bash
# Makes docs/dashboard.png from a real run: a front gateway forwarding citizen lookups to an
# owner's gateway (both the dev config, both with [admin]), a Prometheus scraping both every 2 s,
# about three minutes of traffic (granted calls from `load`, refused calls, clients without a
# certificate or with an unknown agency's, the owner stopped for a while), then render.py
# draws grafana.json's panels from that Prometheus.
#
#   docs/dashboard/run.sh            # from the repository root
#
# Needs the release binary (cargo build --release), Debian's `prometheus`, curl, and a Python
# with matplotlib (PYTHON=/path/to/venv/bin/python). Not run in CI.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
BIN="${INTEROP_GATEWAY_BIN:-$REPO/target/release/interop-gateway}"
PYTHON="${PYTHON:-python3}"
PROMETHEUS="${PROMETHEUS:-prometheus}"
OUT="${OUT:-$REPO/docs/dashboard.png}"
WORK="$(mktemp -d)"
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

serving() { until grep -qs serving "$1"; do kill -0 "$2" || { cat "$1"; return 1; }; sleep 0.2; done; }

mkdir -p "$WORK/owner" "$WORK/front" "$WORK/prom"
sed 's/^listen = .*/listen = "127.0.0.1:50161"/' "$REPO/gateway.toml" > "$WORK/owner/gateway.toml"
cat >> "$WORK/owner/gateway.toml" <<'EOF'

[admin]
listen = "127.0.0.1:9465"

[[agency]]
code = "000.00.00.H13"
name = "Front gateway"
relay = true

[[registry]]
service = "interop.citizen.v1.CitizenRegistryService"
owner = "000.00.00.G04"
EOF
start_owner() {
  "$BIN" serve --config "$WORK/owner/gateway.toml" 2>> "$WORK/owner/serve.log" &
  OWNER_PID=$!
  PIDS+=("$OWNER_PID")
  serving "$WORK/owner/serve.log" "$OWNER_PID"
}
start_owner
"$BIN" certs issue --config "$WORK/owner/gateway.toml" --agency 000.00.00.H13 >/dev/null

sed 's/^listen = .*/listen = "127.0.0.1:50151"/' "$REPO/gateway.toml" > "$WORK/front/gateway.toml"
cat >> "$WORK/front/gateway.toml" <<EOF

[admin]
listen = "127.0.0.1:9464"

[[registry]]
service = "interop.citizen.v1.CitizenRegistryService"
owner = "000.00.00.G04"
upstream = { address = "127.0.0.1:50161", server_name = "localhost", ca = "$WORK/owner/certs/ca.pem", cert = "$WORK/owner/certs/agencies/000.00.00.H13.pem", key = "$WORK/owner/certs/agencies/000.00.00.H13.key" }
EOF
"$BIN" serve --config "$WORK/front/gateway.toml" 2> "$WORK/front/serve.log" &
PIDS+=("$!")
serving "$WORK/front/serve.log" "$!"
# A certificate from the front's own CA for an agency it does not know.
"$BIN" certs issue --config "$WORK/front/gateway.toml" --agency 000.00.99.H99 >/dev/null 2>&1

cat > "$WORK/prom/prometheus.yml" <<'EOF'
global:
  scrape_interval: 2s
scrape_configs:
  - job_name: interop-gateway
    static_configs:
      - targets: ["127.0.0.1:9464", "127.0.0.1:9465"]
EOF
"$PROMETHEUS" --config.file="$WORK/prom/prometheus.yml" --storage.tsdb.path="$WORK/prom/data" \
  --web.listen-address=127.0.0.1:9099 2> "$WORK/prom/prometheus.log" &
PIDS+=("$!")
until curl -sf http://127.0.0.1:9099/-/ready >/dev/null; do sleep 0.5; done

START=$(date +%s)
FRONT=(--config "$WORK/front/gateway.toml")
CTX=(--procedure 1.004227 --dossier 000.00.20.H13-241205-0001)
# Granted calls from the land office: forwarded citizen lookups, parcels from the front's store.
"$BIN" load "${FRONT[@]}" "${CTX[@]}" --agency 000.00.20.H13 --mix GetCitizen=3,GetParcel=2,ListParcelsByHolder=1 \
  --rate 400 --duration 170s --warmup 0s > "$WORK/load-land.txt" 2>&1 &
PIDS+=("$!")
LOAD_PID=$!
sleep 20
# The portal has no grants: PERMISSION_DENIED.
"$BIN" load "${FRONT[@]}" "${CTX[@]}" --agency 000.00.00.G22 --method GetCitizen --rate 30 --duration 60s \
  --warmup 0s > "$WORK/load-portal.txt" 2>&1 || true
# Clients without a certificate, and with one naming an unknown agency.
for _ in $(seq 1 60); do
  curl -sk --http2 https://127.0.0.1:50151/ >/dev/null 2>&1 || true
  "$BIN" call "${FRONT[@]}" --agency 000.00.99.H99 GetCitizen '{}' >/dev/null 2>&1 || true
  sleep 0.3
done
# The owner stops for 25 s: forwarded lookups get no answer.
kill "$OWNER_PID"; wait "$OWNER_PID" 2>/dev/null || true
sleep 25
start_owner
wait "$LOAD_PID" || true
END=$(date +%s)
sleep 3

"$PYTHON" "$REPO/docs/dashboard/render.py" --prometheus http://127.0.0.1:9099 \
  --start "$START" --end "$END" --out "$OUT" --instance "${INSTANCE:-.*}"
cat "$WORK/load-land.txt" | tail -5
