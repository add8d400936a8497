/**
 * No interface operation can go unguarded: a REST route or a gRPC method without an access
 * declaration (permissions.ts) refuses the start with AUTH_ERR_UNDECLARED, naming it; the
 * shipped route table and the real .proto's methods are all declared.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { z } from 'zod';
import { errorCode } from '../../../core/errors.js';
import { createRootLogger } from '../../../core/log.js';
import { loadProto } from '../../../modules/grpc/proto.js';
import { ExchangeHubService, type ServiceDeps } from '../../../modules/grpc/service.js';
import { TokenGate } from '../../../modules/shared/interface-kit/token-gate.js';
import { webConfigSchema } from '../../../modules/web/config.js';
import { type AnyRoute, buildRoutes } from '../../../modules/web/routes.js';
import { buildServer, type ServerDeps } from '../../../modules/web/server.js';

const cfg = webConfigSchema.parse({});

/** A web server of `routes`; only what buildServer touches before the first request is real. */
function server(routes: AnyRoute[]) {
  return buildServer({
    cfg,
    log: createRootLogger({ level: 'silent' }),
    routes,
    gate: new TokenGate([]),
    statics: { list: () => [] },
    openapi: () => ({}),
    stopping: new AbortController().signal,
  } as unknown as ServerDeps);
}

const healthz: AnyRoute = {
  method: 'GET',
  url: '/healthz',
  summary: 'alive',
  tag: 'system',
  access: 'public',
  invalid: 'WEB_ERR_INVALID',
  response: z.object({}),
  handler: async () => ({}),
};

describe('an operation without an access declaration refuses the start', () => {
  test('REST: a route that declares no access (or an unknown one) fails ready(), naming it', async () => {
    for (const access of [undefined, 'token', 'write']) {
      const app = server([healthz, { ...healthz, url: '/api/exchange-hub/new-thing', access } as unknown as AnyRoute]);
      await assert.rejects(
        async () => {
          await app.ready();
        },
        (err: Error) => {
          assert.equal(errorCode(err), 'AUTH_ERR_UNDECLARED');
          assert.match(err.message, /GET \/api\/exchange-hub\/new-thing/);
          assert.doesNotMatch(err.message, /healthz/);
          return true;
        },
      );
      await app.close().catch(() => undefined);
    }
  });

  test('REST: the shipped route table is declared in full and starts', async () => {
    const routes = buildRoutes({
      name: 'web',
      cfg,
      bus: {} as never,
      waiter: {} as never,
      ready: async () => ({ ready: true, checks: {} }),
    });
    assert.ok(routes.every((r) => ['public', 'read', 'operate', 'admin'].includes(r.access)));
    const app = server(routes);
    await app.ready();
    await app.close();
  });

  test('gRPC: a proto method without a declared handler refuses the service, naming it', () => {
    const methods = Object.keys(loadProto().service);
    // only what the constructor and implementation() touch is real: the module's stop signal
    const deps = () => ({ ctx: { signal: new AbortController().signal } }) as unknown as ServiceDeps;
    const service = new ExchangeHubService(deps());
    assert.ok(methods.length >= 19, `${methods.length} methods`);
    service.implementation(methods); // every real method is declared
    assert.throws(
      () => new ExchangeHubService(deps()).implementation([...methods, 'BrandNewMethod']),
      (err: Error) => errorCode(err) === 'AUTH_ERR_UNDECLARED' && /BrandNewMethod/.test(err.message),
    );
  });
});
