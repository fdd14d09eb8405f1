// Conformance tests: the gateway's proto files, loaded at run time by
// @grpc/proto-loader and called with @grpc/grpc-js over mutual TLS, against
// the real gateway binary (a fresh dev PKI and demo store per run).
//
// Run: npm test (the binary is $INTEROP_GATEWAY_BIN, default
// <repo>/target/release/interop-gateway).

import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';

import grpc from '@grpc/grpc-js';
import { compactVerify, importSPKI } from 'jose';

import { call, connect, errorDetails, loadServices, pick, readJsonl, startGateway } from './support.js';

// Agencies of the committed gateway.toml and the procedures their grants serve.
const LAND_OFFICE = '000.00.20.H13'; // Văn phòng Đăng ký đất đai TP Cần Thơ
const BUSINESS_OFFICE = '000.00.12.H13'; // Phòng Đăng ký kinh doanh TP Cần Thơ
const NATIONAL_PORTAL = '000.00.00.G22'; // configured, but without any data grant

// Every data call names the procedure and the dossier it serves.
const LAND_CONTEXT = {
  procedureCode: '1.004227',
  dossierId: '000.00.20.H13-241205-0001',
  officerId: 'cb-017', // optional
};
const BUSINESS_CONTEXT = {
  procedureCode: '2.000815',
  dossierId: '000.00.12.H13-241205-0001',
};

// Granted fields (gateway.toml), as lowerCamelCase response keys.
const LAND_OFFICE_CITIZEN_FIELDS = ['personalId', 'fullName', 'dateOfBirth', 'permanentAddress'];
const LAND_OFFICE_LIST_FIELDS = ['ref', 'address', 'areaM2', 'landUses', 'holders'];

const ERROR_DOMAIN = 'interop-gateway';

// The tests dial the address the gateway logged (127.0.0.1:<port>). grpc-js
// would send that IP as the TLS server name, which Node deprecates (DEP0123,
// RFC 6066 allows host names only); so name the host the dev certificate
// covers, `localhost`, and verify the certificate against it. Not needed when
// dialling a gateway by its host name.
const CHANNEL_OPTIONS = { 'grpc.ssl_target_name_override': 'localhost' };

let gateway;
let demo; // the demo extract the gateway imported: { citizens, parcels, enterprises }
const clients = {};

before(async () => {
  gateway = await startGateway();
  demo = {
    citizens: readJsonl(path.join(gateway.demoDir, 'citizens.jsonl')),
    parcels: readJsonl(path.join(gateway.demoDir, 'parcels.jsonl')),
    enterprises: readJsonl(path.join(gateway.demoDir, 'enterprises.jsonl')),
  };

  const { CitizenRegistryService, LandRegistryService, BusinessRegistryService, CatalogService } = loadServices();
  const connectAs = (Service, agency) => connect(Service, gateway.addr, gateway.certsDir, agency, CHANNEL_OPTIONS);
  clients.citizensAsLandOffice = connectAs(CitizenRegistryService, LAND_OFFICE);
  clients.citizensAsPortal = connectAs(CitizenRegistryService, NATIONAL_PORTAL);
  clients.land = connectAs(LandRegistryService, LAND_OFFICE);
  clients.business = connectAs(BusinessRegistryService, BUSINESS_OFFICE);
  clients.catalogAsLandOffice = connectAs(CatalogService, LAND_OFFICE);
}, { timeout: 60_000 }); // a bound on a broken start, not a wait: readiness is the log line

after(async () => {
  for (const client of Object.values(clients)) client.close();
  if (!gateway) return;
  const { code, signal } = await gateway.stop();
  assert.deepEqual(
    { code, signal },
    { code: 0, signal: null },
    `gateway did not exit 0 on SIGTERM; its log:\n${gateway.logs.join('\n')}`,
  );
  gateway.cleanup();
}, { timeout: 30_000 });

/** Awaits a call that must fail and returns its grpc-js error. */
async function rpcError(promise) {
  try {
    const response = await promise;
    assert.fail(`expected an error, got ${JSON.stringify(response)}`);
  } catch (err) {
    if (err instanceof assert.AssertionError) throw err;
    return err;
  }
}

describe('CitizenRegistryService/GetCitizen', () => {
  test('returns exactly the granted fields', async () => {
    const expected = demo.citizens[0];
    const { citizen } = await call(clients.citizensAsLandOffice, 'GetCitizen', {
      context: LAND_CONTEXT,
      personalId: expected.personalId,
    });

    assert.deepEqual(citizen, pick(expected, LAND_OFFICE_CITIZEN_FIELDS));
    // Spelled out: every granted field is there...
    for (const field of LAND_OFFICE_CITIZEN_FIELDS) {
      assert.notEqual(citizen[field], undefined, `${field} is granted`);
    }
    // ...and none of the others, although the record has them.
    for (const field of ['sex', 'nationality', 'ethnicity', 'hometown', 'currentAddress', 'householdId', 'idCard']) {
      assert.ok(field in expected, `demo record has ${field}`);
      assert.equal(citizen[field], undefined, `${field} must not be disclosed`);
    }
  });

  test('read_mask narrows the answer to the requested fields', async () => {
    const expected = demo.citizens[0];
    const { citizen } = await call(clients.citizensAsLandOffice, 'GetCitizen', {
      context: LAND_CONTEXT,
      personalId: expected.personalId,
      readMask: { paths: ['full_name'] }, // FieldMask paths are proto (snake_case) field names
    });
    assert.deepEqual(citizen, { fullName: expected.fullName });
  });

  test('read_mask with a nested path returns only that sub-field', async () => {
    const expected = demo.citizens[0];
    const { citizen } = await call(clients.citizensAsLandOffice, 'GetCitizen', {
      context: LAND_CONTEXT,
      personalId: expected.personalId,
      readMask: { paths: ['permanent_address.province_code'] },
    });
    assert.deepEqual(citizen, {
      permanentAddress: { provinceCode: expected.permanentAddress.provinceCode },
    });
  });
});

describe('LandRegistryService', () => {
  /** Parcels of the demo extract held by `holderId`, in the gateway's list order. */
  function parcelsOf(holderId) {
    const key = (p) => [p.ref.communeCode, p.ref.mapSheet, p.ref.parcelNumber];
    return demo.parcels
      .filter((p) => (p.holders ?? []).some((h) => h.holderId === holderId))
      .sort((a, b) => {
        const [ka, kb] = [key(a), key(b)];
        return ka[0] < kb[0] ? -1 : ka[0] > kb[0] ? 1 : ka[1] - kb[1] || ka[2] - kb[2];
      });
  }

  /** A parcel with a certificate and encumbrances whose first holder holds other parcels too. */
  function sampleParcel() {
    const parcel = demo.parcels.find(
      (p) => p.certificate && p.encumbrances?.length && parcelsOf(p.holders[0].holderId).length >= 2,
    );
    assert.ok(parcel, 'demo extract has a parcel with a certificate, encumbrances and a multi-parcel holder');
    return parcel;
  }

  test('GetParcel returns the whole parcel (every field is granted)', async () => {
    const expected = sampleParcel();
    const { parcel } = await call(clients.land, 'GetParcel', {
      context: LAND_CONTEXT,
      parcel: expected.ref, // { communeCode, mapSheet, parcelNumber }
    });
    assert.deepEqual(parcel, expected);
  });

  test('ListParcelsByHolder pages through every parcel of a holder', async () => {
    const holderId = sampleParcel().holders[0].holderId;
    const expected = parcelsOf(holderId).map((p) => pick(p, LAND_OFFICE_LIST_FIELDS));

    const seen = [];
    let pageToken = '';
    for (let pages = 1; ; pages++) {
      assert.ok(pages <= expected.length, 'more pages than parcels');
      const { parcels, nextPageToken } = await call(clients.land, 'ListParcelsByHolder', {
        context: LAND_CONTEXT,
        holderId,
        pageSize: 1,
        pageToken,
      });
      assert.equal(parcels?.length, 1, `page ${pages} holds one parcel`);
      seen.push(...parcels);
      if (!nextPageToken) break; // absent (empty) on the last page
      pageToken = nextPageToken;
    }
    // Ordered by commune code, map sheet, parcel number; no certificate or
    // encumbrances (not in this grant).
    assert.deepEqual(seen, expected);
  });
});

describe('BusinessRegistryService/GetEnterprise', () => {
  test('returns the enterprise with every granted field', async () => {
    const expected = demo.enterprises[0];
    const { enterprise } = await call(clients.business, 'GetEnterprise', {
      context: BUSINESS_CONTEXT,
      enterpriseCode: expected.enterpriseCode,
    });
    assert.deepEqual(enterprise, expected);
    assert.equal(typeof enterprise.charterCapitalVnd, 'string'); // int64 with longs: String
  });
});

describe('errors carry google.rpc details', () => {
  test('PERMISSION_DENIED / METHOD_NOT_GRANTED for an agency without a grant', async () => {
    const err = await rpcError(
      call(clients.citizensAsPortal, 'GetCitizen', {
        context: LAND_CONTEXT,
        personalId: demo.citizens[0].personalId,
      }),
    );
    assert.equal(err.code, grpc.status.PERMISSION_DENIED);
    const { status, errorInfo } = errorDetails(err);
    assert.equal(status.code, grpc.status.PERMISSION_DENIED);
    assert.equal(errorInfo.reason, 'METHOD_NOT_GRANTED');
    assert.equal(errorInfo.domain, ERROR_DOMAIN);
    assert.equal(errorInfo.metadata.agency, NATIONAL_PORTAL);
    assert.equal(errorInfo.metadata.method, 'interop.citizen.v1.CitizenRegistryService/GetCitizen');
  });

  test('PERMISSION_DENIED / FIELD_NOT_GRANTED lists the fields outside the grant', async () => {
    const err = await rpcError(
      call(clients.citizensAsLandOffice, 'GetCitizen', {
        context: LAND_CONTEXT,
        personalId: demo.citizens[0].personalId,
        readMask: { paths: ['full_name', 'id_card'] },
      }),
    );
    assert.equal(err.code, grpc.status.PERMISSION_DENIED);
    const { errorInfo } = errorDetails(err);
    assert.equal(errorInfo.reason, 'FIELD_NOT_GRANTED');
    assert.equal(errorInfo.domain, ERROR_DOMAIN);
    assert.equal(errorInfo.metadata.fields, 'id_card');
  });

  test('INVALID_ARGUMENT / INVALID_FIELD_MASK for a camelCase read_mask path', async () => {
    // keepCase: false renames message fields, not FieldMask paths: those stay
    // proto field names (`full_name`), and the gateway rejects `fullName`.
    const err = await rpcError(
      call(clients.citizensAsLandOffice, 'GetCitizen', {
        context: LAND_CONTEXT,
        personalId: demo.citizens[0].personalId,
        readMask: { paths: ['fullName'] },
      }),
    );
    assert.equal(err.code, grpc.status.INVALID_ARGUMENT);
    const { errorInfo, badRequest } = errorDetails(err);
    assert.equal(errorInfo.reason, 'INVALID_FIELD_MASK');
    assert.equal(errorInfo.domain, ERROR_DOMAIN);
    assert.deepEqual(
      badRequest.fieldViolations.map((v) => v.field),
      ['read_mask.paths[0]'],
    );
  });

  test('INVALID_ARGUMENT with BadRequest naming personal_id', async () => {
    const err = await rpcError(
      call(clients.citizensAsLandOffice, 'GetCitizen', { context: LAND_CONTEXT, personalId: '123' }),
    );
    assert.equal(err.code, grpc.status.INVALID_ARGUMENT);
    const { errorInfo, badRequest } = errorDetails(err);
    assert.equal(errorInfo.reason, 'INVALID_ARGUMENT');
    assert.equal(errorInfo.domain, ERROR_DOMAIN);
    assert.deepEqual(
      badRequest.fieldViolations.map((v) => v.field),
      ['personal_id'],
    );
    assert.ok(badRequest.fieldViolations[0].description, 'the violation says what is wrong');
  });

  test('NOT_FOUND / RECORD_NOT_FOUND for a well-formed id that is not registered', async () => {
    const absent = '092190000999';
    assert.ok(!demo.citizens.some((c) => c.personalId === absent), 'the id is not in the demo extract');
    const err = await rpcError(
      call(clients.citizensAsLandOffice, 'GetCitizen', { context: LAND_CONTEXT, personalId: absent }),
    );
    assert.equal(err.code, grpc.status.NOT_FOUND);
    const { errorInfo, resourceInfo } = errorDetails(err);
    assert.equal(errorInfo.reason, 'RECORD_NOT_FOUND');
    assert.equal(errorInfo.domain, ERROR_DOMAIN);
    assert.equal(resourceInfo?.resourceType, 'interop.citizen.v1.Citizen');
    assert.equal(resourceInfo?.resourceName, absent);
  });
});

describe('CatalogService', () => {
  test('ListServices describes every registry method and its field paths', async () => {
    const { services } = await call(clients.catalogAsLandOffice, 'ListServices', {});
    const citizen = services.find((s) => s.name === 'interop.citizen.v1.CitizenRegistryService');
    assert.ok(citizen.description.startsWith('Read access to citizen records.'));
    const get = citizen.methods.find((m) => m.name.endsWith('/GetCitizen'));
    assert.equal(get.recordType, 'interop.citizen.v1.Citizen');
    const province = get.fields.find((f) => f.path === 'permanent_address.province_code');
    assert.equal(province.type, 'string');
    assert.ok(province.description.length > 0);
  });

  test('ListMyGrants lists the calling agency\'s own grants only', async () => {
    const mine = await call(clients.catalogAsLandOffice, 'ListMyGrants', {});
    assert.equal(mine.agencyCode, LAND_OFFICE);
    const get = mine.grants.find((g) => g.method === 'interop.citizen.v1.CitizenRegistryService/GetCitizen');
    assert.deepEqual(get.procedures, [LAND_CONTEXT.procedureCode]);
    assert.deepEqual([...get.fields].sort(), ['date_of_birth', 'full_name', 'permanent_address', 'personal_id']);
    assert.ok(!mine.grants.some((g) => g.method.endsWith('/GetEnterprise')));
    assert.ok(!mine.grants.some((g) => g.method.endsWith('/ListAccessRecords')));
  });
});

describe('signed receipts', () => {
  test('an answer carries a receipt that jose verifies against the raw response bytes', async () => {
    const { CitizenRegistryService } = loadServices();
    const method = CitizenRegistryService.service.GetCitizen;
    const personalId = demo.citizens[0].personalId;
    // Identity deserializer: the response bytes exactly as received.
    let status;
    const bytes = await new Promise((resolve, reject) => {
      const call = clients.citizensAsLandOffice.makeUnaryRequest(
        method.path,
        method.requestSerialize,
        (b) => b,
        { context: LAND_CONTEXT, personalId },
        new grpc.Metadata(),
        { deadline: Date.now() + 10_000 },
        (err, response) => (err ? reject(err) : resolve(response)),
      );
      call.on('status', (s) => {
        status = s;
      });
    });
    await new Promise((resolve) => setImmediate(resolve)); // 'status' follows the callback
    const [receipt] = status.metadata.get('x-interop-receipt');
    assert.ok(receipt, 'no x-interop-receipt trailer');

    const pem = fs.readFileSync(path.join(gateway.dir, 'data', 'audit', 'audit.pub'), 'utf8');
    const { payload, protectedHeader } = await compactVerify(receipt, await importSPKI(pem, 'EdDSA'));
    assert.equal(protectedHeader.alg, 'EdDSA');
    const spki = crypto.createPublicKey(pem).export({ type: 'spki', format: 'der' });
    assert.equal(protectedHeader.kid, crypto.createHash('sha256').update(spki).digest('hex'));
    const claims = JSON.parse(new TextDecoder().decode(payload));
    assert.equal(claims.sha256, crypto.createHash('sha256').update(bytes).digest('base64url'));
    assert.equal(claims.agency, LAND_OFFICE);
    assert.deepEqual(claims.subjects, [personalId]);
    assert.deepEqual(claims.fields, ['date_of_birth', 'full_name', 'permanent_address', 'personal_id']);
    assert.equal(claims.outcome, 'OK');
  });
});
