// Helpers for the conformance tests: start the real gateway binary on a free
// loopback port with a fresh dev PKI, load the protos at run time, build mTLS
// clients per agency, and decode the google.rpc error details.
//
// Everything a Node client of the gateway needs is in `loadServices`,
// `connect` and `errorDetails`; `startGateway` is test scaffolding.

import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import readline from 'node:readline';
import { fileURLToPath } from 'node:url';

import grpc from '@grpc/grpc-js';
import protoLoader from '@grpc/proto-loader';
import protobuf from 'protobufjs';

const HERE = path.dirname(fileURLToPath(import.meta.url));
export const REPO_ROOT = path.resolve(HERE, '..', '..', '..');
export const PROTO_DIR = path.join(REPO_ROOT, 'proto');

/** The gateway binary under test: $INTEROP_GATEWAY_BIN, else the release build. */
export function gatewayBinary() {
  return process.env.INTEROP_GATEWAY_BIN || path.join(REPO_ROOT, 'target', 'release', 'interop-gateway');
}

// ---------------------------------------------------------------------------
// Loading the contract
// ---------------------------------------------------------------------------

// One set of options for every proto the tests load. keepCase: false (the
// proto-loader default) gives lowerCamelCase field names in requests and
// responses (`personalId`, `readMask`), the same names as proto3 JSON and the
// demo extract files. FieldMask *paths* are strings and stay snake_case proto
// field names (`permanent_address.province_code`) whatever keepCase says.
export const LOADER_OPTIONS = {
  keepCase: false,
  longs: String, // int64 charter_capital_vnd arrives as "258000000000"
  enums: String, // "SEX_FEMALE", "HOLDER_KIND_CITIZEN"
  defaults: false, // fields the gateway did not send stay absent
  oneofs: true,
  includeDirs: [PROTO_DIR], // google/protobuf/field_mask.proto comes bundled with proto-loader
};

/** Loads the three registry services and the catalogue from proto/ and returns their client constructors. */
export function loadServices() {
  const definition = protoLoader.loadSync(
    [
      'interop/citizen/v1/citizen.proto',
      'interop/land/v1/land.proto',
      'interop/business/v1/business.proto',
      'interop/catalog/v1/catalog.proto',
    ],
    LOADER_OPTIONS,
  );
  const pkg = grpc.loadPackageDefinition(definition);
  return {
    CitizenRegistryService: pkg.interop.citizen.v1.CitizenRegistryService,
    LandRegistryService: pkg.interop.land.v1.LandRegistryService,
    BusinessRegistryService: pkg.interop.business.v1.BusinessRegistryService,
    CatalogService: pkg.interop.catalog.v1.CatalogService,
  };
}

// ---------------------------------------------------------------------------
// Connecting as an agency (mutual TLS)
// ---------------------------------------------------------------------------

/**
 * mTLS channel credentials for one agency of the dev PKI: the CA that issued
 * the gateway's certificate as trust root, the agency certificate and key as
 * the client identity (its URI SAN spiffe://<trust domain>/agency/<code> is
 * what the gateway authorises).
 */
export function agencyCredentials(certsDir, agencyCode) {
  return grpc.credentials.createSsl(
    fs.readFileSync(path.join(certsDir, 'ca.pem')),
    fs.readFileSync(path.join(certsDir, 'agencies', `${agencyCode}.key`)),
    fs.readFileSync(path.join(certsDir, 'agencies', `${agencyCode}.pem`)),
  );
}

/**
 * A client of `Service` at `addr` ("host:port"), authenticated as `agencyCode`.
 * `channelOptions` are grpc-js channel options.
 */
export function connect(Service, addr, certsDir, agencyCode, channelOptions = {}) {
  return new Service(addr, agencyCredentials(certsDir, agencyCode), channelOptions);
}

/** Calls a unary method and resolves with the response (rejects with the grpc-js error). */
export function call(client, method, request, { timeoutMs = 10_000 } = {}) {
  return new Promise((resolve, reject) => {
    client[method](request, { deadline: Date.now() + timeoutMs }, (err, response) =>
      err ? reject(err) : resolve(response),
    );
  });
}

// ---------------------------------------------------------------------------
// Reading errors: google.rpc.Status from the grpc-status-details-bin trailer
// ---------------------------------------------------------------------------

// googleapis' own status.proto and error_details.proto (shared with the C++ and
// Java clients); any.proto and duration.proto are bundled with protobufjs.
const rpcTypes = protobuf.loadSync(
  ['status.proto', 'error_details.proto'].map((f) => path.join(HERE, '../../googleapis/google/rpc', f)),
);
const Status = rpcTypes.lookupType('google.rpc.Status');

/**
 * Decodes the rich error model of a failed call: the google.rpc.Status in the
 * `grpc-status-details-bin` trailer, and each of its `details` (Any values)
 * by type, e.g. `{ status, errorInfo, badRequest, resourceInfo }`.
 * Field names are lowerCamelCase (`fieldViolations`, `resourceName`).
 */
export function errorDetails(err) {
  const [bin] = err.metadata?.get('grpc-status-details-bin') ?? [];
  if (!bin) throw new Error(`no grpc-status-details-bin trailer on: ${err.message}`);
  const status = Status.decode(bin);
  const out = { status: Status.toObject(status, { defaults: true }) };
  for (const any of status.details) {
    // type_url is "type.googleapis.com/google.rpc.ErrorInfo": the type is after the last "/".
    // (protobufjs's bundled google.protobuf.Any keeps the snake_case name `type_url`.)
    const typeName = any.type_url.slice(any.type_url.lastIndexOf('/') + 1);
    const type = rpcTypes.lookupType(typeName);
    const key = typeName.slice(typeName.lastIndexOf('.') + 1); // "ErrorInfo"
    out[key[0].toLowerCase() + key.slice(1)] = type.toObject(type.decode(any.value), {
      defaults: true,
      arrays: true,
      objects: true,
    });
  }
  return out;
}

// ---------------------------------------------------------------------------
// Running the gateway
// ---------------------------------------------------------------------------

const ANSI = /\x1b\[[0-9;]*m/g;

/**
 * Writes a dev config into a fresh temp dir (the committed gateway.toml with
 * `listen = "127.0.0.1:0"`), starts `serve` on it and waits for the log line
 * announcing `serving ... addr=<ip:port>`. With `dev = true` the gateway
 * creates certs/ (dev PKI) and data/ (demo store and demo/*.jsonl extract)
 * next to the config.
 */
export async function startGateway() {
  const bin = gatewayBinary();
  if (!fs.existsSync(bin)) throw new Error(`gateway binary not found: ${bin} (set INTEROP_GATEWAY_BIN)`);

  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'interop-gateway-node-'));
  const committed = fs.readFileSync(path.join(REPO_ROOT, 'gateway.toml'), 'utf8');
  const config = committed.replace(/^listen = .*$/m, 'listen = "127.0.0.1:0"');
  if (config === committed) throw new Error('gateway.toml has no `listen = ...` line to replace');
  const configPath = path.join(dir, 'gateway.toml');
  fs.writeFileSync(configPath, config);

  const child = spawn(bin, ['serve', '--config', configPath], {
    cwd: dir,
    env: { ...process.env, RUST_LOG: 'info' },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  const exited = new Promise((resolve) =>
    child.once('close', (code, signal) => resolve({ code, signal })), // exited, stderr drained
  );
  const logs = [];

  // Keep reading stderr for the whole run (a full pipe would block the
  // gateway's logging); the first "serving ... addr=" line is the signal.
  const ready = new Promise((resolve, reject) => {
    const lines = readline.createInterface({ input: child.stderr });
    lines.on('line', (raw) => {
      const line = raw.replace(ANSI, '');
      logs.push(line);
      const m = /\bserving\b.*\baddr=(\S+)/.exec(line);
      if (m) resolve(m[1]);
    });
    child.once('error', reject); // e.g. the binary cannot be executed
    exited.then(({ code, signal }) =>
      reject(new Error(`gateway exited before serving (code ${code}, signal ${signal}):\n${logs.join('\n')}`)),
    );
  });
  let addr;
  try {
    addr = await ready;
  } catch (err) {
    fs.rmSync(dir, { recursive: true, force: true }); // the error carries the log
    throw err;
  }

  return {
    dir,
    addr,
    certsDir: path.join(dir, 'certs'),
    demoDir: path.join(dir, 'data', 'demo'),
    logs,
    /** SIGTERM, then resolves with `{ code, signal }` once the process has exited. */
    async stop() {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
      return exited;
    },
    cleanup() {
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** Reads a proto3-JSON-lines file (the demo extract) into an array of objects. */
export function readJsonl(file) {
  return fs
    .readFileSync(file, 'utf8')
    .split('\n')
    .filter((line) => line.trim() !== '')
    .map((line) => JSON.parse(line));
}

/** The object with only the given (lowerCamelCase) keys that are present. */
export function pick(obj, keys) {
  return Object.fromEntries(keys.filter((k) => k in obj).map((k) => [k, obj[k]]));
}
