/**
 * The error-code registry (core/errors.ts `defineCodes`, one `contract/codes.ts` per domain):
 * every code declares an HTTP status, a gRPC status and whether it is a caller's mistake; REST
 * (web/errors.ts), gRPC (grpc/errors.ts) and the bus (`isClientMistake`) answer exactly what it
 * declares, for every code; and the two statuses of a code say the same thing.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { status } from '@grpc/grpc-js';
import { CORE_CODES, defineCodes, HubError, isClientMistake, registeredCodes } from '../../core/errors.js';
import { DOMAIN_CODES } from '../../modules/contracts.js';
import { grpcStatusOf, isExpected, toServiceError } from '../../modules/grpc/errors.js';
import { httpStatusOf, RETRY_AFTER_S, toHttpError } from '../../modules/web/errors.js';

/** The gRPC statuses an HTTP status may go with (google.rpc.Code ↔ HTTP, as grpc-gateway maps them). */
const AGREES: Record<number, readonly string[]> = {
  400: ['INVALID_ARGUMENT'],
  401: ['UNAUTHENTICATED'],
  403: ['PERMISSION_DENIED'],
  404: ['NOT_FOUND'],
  409: ['FAILED_PRECONDITION', 'ALREADY_EXISTS'],
  413: ['RESOURCE_EXHAUSTED'],
  415: ['INVALID_ARGUMENT'],
  426: ['FAILED_PRECONDITION'],
  500: ['INTERNAL'],
  // overloaded or not running: retry later, over either interface
  503: ['UNAVAILABLE', 'RESOURCE_EXHAUSTED'],
  504: ['DEADLINE_EXCEEDED'],
};

const all = [...registeredCodes()];

describe('error codes: one declaration, every interface', () => {
  test('every table is registered, each code once, and nothing else is', () => {
    const declared = [CORE_CODES, ...DOMAIN_CODES].flatMap((t) => Object.keys(t));
    assert.equal(new Set(declared).size, declared.length, 'a code declared by two domains');
    assert.deepEqual(new Set(declared), new Set(registeredCodes().keys()));
    assert.ok(declared.length >= 67, `${declared.length} codes`);
  });

  test('a code declared twice or not shaped AREA_ERR_WHAT is refused at load', () => {
    assert.throws(() => defineCodes({ CMD_ERR_INVALID: { http: 400, grpc: 'INVALID_ARGUMENT' } }), {
      message: /CMD_ERR_INVALID is declared twice/,
    });
    assert.throws(() => defineCodes({ 'cmd-invalid': { http: 400, grpc: 'INVALID_ARGUMENT' } }), {
      message: /not shaped AREA_ERR_WHAT/,
    });
  });

  test('a code no domain declares does not compile where it is thrown', () => {
    // @ts-expect-error the typo is the point: ErrorCode is the registry's keys
    const e = new HubError('CMD_ERR_INVALD', 'x');
    assert.equal(httpStatusOf(e.code), 500);
  });

  for (const [code, spec] of all) {
    test(`${code}: HTTP ${spec.http}, gRPC ${spec.grpc}${spec.client ? ', a caller’s mistake' : ''}`, () => {
      assert.ok(Number.isInteger(spec.http) && spec.http >= 400 && spec.http <= 599, `HTTP ${spec.http}`);
      assert.equal(typeof status[spec.grpc], 'number', `gRPC ${spec.grpc}`);
      assert.ok(AGREES[spec.http]?.includes(spec.grpc), `HTTP ${spec.http} and gRPC ${spec.grpc} disagree`);
      assert.equal(spec.client, spec.http < 500, 'a caller’s mistake is exactly a 4xx');

      const err = new HubError(code as never, `${code} happened`, { field: 'f' });
      // REST
      assert.equal(httpStatusOf(code), spec.http);
      const http = toHttpError(err);
      assert.equal(http.status, spec.http);
      assert.deepEqual(http.body, { error: { code, message: `${code} happened`, field: 'f' } });
      assert.equal(http.headers['retry-after'], spec.http === 503 ? String(RETRY_AFTER_S) : undefined);
      // gRPC
      assert.equal(grpcStatusOf(code), status[spec.grpc]);
      const se = toServiceError(err);
      assert.equal(se.code, status[spec.grpc]);
      assert.equal(se.details, `${code} happened`);
      assert.deepEqual(se.metadata?.get('error-code'), [code]);
      assert.equal(se.metadata?.get('retry-after').length, spec.grpc === 'UNAVAILABLE' ? 1 : 0);
      assert.equal(isExpected(err), spec.grpc !== 'INTERNAL');
      // the bus
      assert.equal(isClientMistake(err), spec.client);
    });
  }

  test('anything without a declared code is a 500 / INTERNAL that says nothing of itself', () => {
    for (const err of [
      new Error('pg: relation "x" does not exist'),
      Object.assign(new Error('x'), { code: '23505' }),
    ]) {
      assert.equal(toHttpError(err).status, 500);
      assert.deepEqual(toHttpError(err).body, { error: { code: 'WEB_ERR_INTERNAL', message: 'internal error' } });
      const se = toServiceError(err);
      assert.equal(se.code, status.INTERNAL);
      assert.equal(se.details, 'internal error');
      assert.equal(isExpected(err), false);
      assert.equal(isClientMistake(err), false);
    }
  });
});
