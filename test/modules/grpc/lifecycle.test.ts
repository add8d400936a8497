import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import net from 'node:net';
import path from 'node:path';
import { describe, test } from 'node:test';
import * as grpc from '@grpc/grpc-js';
import { loadSync } from '@grpc/proto-loader';
import { protoPath as healthProtoPath } from 'grpc-health-check';
import { errorCode } from '../../../core/errors.js';
import { ProviderRegistry } from '../../../core/registry.js';
import { provider as grpcProvider } from '../../../modules/grpc/index.js';
import { startHost } from '../../helpers/host.js';
import { until, withTimeout } from '../../helpers/wait.js';
import { call, ExchangeHubClient, fails, type Msg, startHub, watch } from './harness.js';

const require = createRequire(import.meta.url);
const reflectionDir = path.join(path.dirname(require.resolve('@grpc/reflection')), '..', 'proto');
const OPTS = { keepCase: true, longs: Number, enums: String, defaults: true, oneofs: true };

type Ctor = grpc.ServiceClientConstructor;
const health = grpc.loadPackageDefinition(loadSync(healthProtoPath, OPTS)) as unknown as {
  grpc: { health: { v1: { Health: Ctor } } };
};
const reflection = grpc.loadPackageDefinition(
  loadSync(['grpc/reflection/v1/reflection.proto', 'grpc/reflection/v1alpha/reflection.proto'], {
    ...OPTS,
    includeDirs: [reflectionDir],
  }),
) as unknown as { grpc: { reflection: { v1: { ServerReflection: Ctor }; v1alpha: { ServerReflection: Ctor } } } };

type Fn = (...a: unknown[]) => unknown;

/** The `name` of a serialized FileDescriptorProto: field 1, a length-delimited string, comes first. */
function descriptorName(b: Buffer): string {
  assert.equal(b[0], 0x0a);
  let len = 0;
  let at = 1;
  for (let shift = 0; ; shift += 7) {
    const byte = b[at++];
    len |= (byte & 0x7f) << shift;
    if (byte < 0x80) break;
  }
  return b.subarray(at, at + len).toString('utf8');
}
const method = (c: grpc.Client, name: string) => (c as unknown as Record<string, Fn>)[name].bind(c);

/** One request on a reflection stream (v1 or v1alpha), its one response. */
function reflect(client: grpc.Client, req: Msg): Promise<Msg> {
  return new Promise((resolve, reject) => {
    const s = method(client, 'ServerReflectionInfo')() as grpc.ClientDuplexStream<Msg, Msg>;
    s.on('data', (res: Msg) => {
      resolve(res);
      s.end();
    });
    s.on('error', reject);
    s.write(req);
  });
}

describe('grpc: lifecycle, health, reflection', () => {
  test('health is SERVING, then NOT_SERVING when the host stops; open streams end with UNAVAILABLE', async () => {
    const hub = await startHub({ tokens: ['tok'], host: '127.0.0.1' }, { fakes: ['status'] });
    const h = new health.grpc.health.v1.Health(`127.0.0.1:${hub.port}`, grpc.credentials.createInsecure());
    try {
      // health needs no token
      for (const service of ['', 'exchangehub.v1.ExchangeHub']) {
        const res = await new Promise<Msg>((resolve, reject) =>
          method(h, 'check')({ service }, (e: Error | null, r: Msg) => (e ? reject(e) : resolve(r))),
        );
        assert.equal(res.status, 'SERVING');
      }
      const seen: string[] = [];
      const w = method(h, 'watch')({ service: '' }) as grpc.ClientReadableStream<Msg>;
      w.on('data', (r: Msg) => {
        seen.push(String(r.status));
        if (r.status === 'NOT_SERVING') w.cancel();
      });
      w.on('error', () => undefined);
      await until(() => seen.length === 1, 5000, 'first health status');

      const events = watch(hub.client, { all: true }, 'tok');
      const ended = new Promise<grpc.ServiceError>((resolve) => events.once('error', resolve));
      events.on('data', () => undefined);
      await withTimeout(new Promise((r) => events.once('metadata', r)), 5000, 'stream open');

      // the host itself, so the client (and its stream) stays open
      await hub.th.host.stop();
      assert.deepEqual(seen, ['SERVING', 'NOT_SERVING']);
      const err = await withTimeout(ended, 5000, 'the stream to end');
      assert.equal(err.code, grpc.status.UNAVAILABLE);
    } finally {
      h.close();
      await hub.stop();
    }
  });

  test('reflection (v1 and v1alpha) lists the services and describes them, without a token', async () => {
    const hub = await startHub({ tokens: ['tok'], host: '127.0.0.1' }, { fakes: [] });
    const clients = [reflection.grpc.reflection.v1, reflection.grpc.reflection.v1alpha].map(
      (v) => new v.ServerReflection(`127.0.0.1:${hub.port}`, grpc.credentials.createInsecure()),
    );
    try {
      for (const c of clients) {
        const res = await reflect(c, { list_services: '*' });
        const names = (res.list_services_response as { service: { name: string }[] }).service.map((s) => s.name);
        assert.ok(names.includes('exchangehub.v1.ExchangeHub'), names.join());
        assert.ok(names.includes('grpc.health.v1.Health'), names.join());
        const file = await reflect(c, { file_containing_symbol: 'exchangehub.v1.ExchangeHub' });
        const protos = (file.file_descriptor_response as { file_descriptor_proto: Buffer[] }).file_descriptor_proto;
        assert.ok(protos.length >= 1);
        // @grpc/reflection names files by package (exchangehub_v1.proto); the service is inside
        const all = Buffer.concat(protos).toString('latin1');
        assert.ok(protos.map(descriptorName).some((n) => n.startsWith('exchangehub')));
        for (const word of [
          'ExchangeHub',
          'WatchEvents',
          'SendSyncCommand',
          'FeedEvent',
          'RestartModule',
          'MailboxStats',
        ])
          assert.ok(all.includes(word), word);
      }
    } finally {
      for (const c of clients) c.close();
      await hub.stop();
    }
  });

  test('a port in use fails the start with HOST_ERR_PORT_IN_USE naming the port and the variable', async () => {
    const blocker = net.createServer();
    await new Promise<void>((r) => blocker.listen(0, '127.0.0.1', r));
    const port = (blocker.address() as net.AddressInfo).port;
    try {
      await assert.rejects(
        startHost(`modules:\n  grpc: { port: ${port} }`, new ProviderRegistry().register(grpcProvider)),
        (err: Error) => {
          assert.equal(errorCode(err), 'HOST_ERR_PORT_IN_USE');
          // the test's file has a literal port: the hint names that key, not a variable the file does not use
          assert.match(
            err.message,
            new RegExp(`^port ${port} is in use \\(change modules\\.grpc\\.port in .*config\\.yml\\)$`),
          );
          return true;
        },
      );
    } finally {
      blocker.close();
    }
  });

  test('without a token a non-loopback address is refused: it listens on 127.0.0.1', async () => {
    const hub = await startHub({ host: '0.0.0.0' }, { fakes: [] });
    try {
      const s = await hub.stats();
      assert.equal(s.host, '127.0.0.1');
      assert.equal(s.auth, false);
    } finally {
      await hub.stop();
    }
    const withToken = await startHub({ token: 'x' }, { fakes: [] });
    try {
      assert.equal((await withToken.stats()).host, '0.0.0.0');
    } finally {
      await withToken.stop();
    }
  });

  test('a sync wait cut by a module restart answers UNAVAILABLE with the command id; restarts leak nothing', async () => {
    const hub = await startHub({});
    try {
      const pending = fails(
        call(hub.client, 'SendSyncCommand', { project_id: 'p-online', command_type: 'never', wait_ms: 60_000 }),
        grpc.status.UNAVAILABLE,
      );
      await until(async () => (await hub.stats()).sync_waiting === 1, 5000, 'the sync wait');
      await hub.th.host.restartModule('grpc');
      const e = await pending;
      assert.match(String(e.metadata.get('command-id')[0]), /^[0-9a-f-]{36}$/);

      const resources = () => process.getActiveResourcesInfo().filter((r) => r !== 'TTYWrap').length;
      const before = resources();
      for (let i = 0; i < 20; i++) {
        await hub.th.host.restartModule('grpc');
        const { port } = await hub.stats();
        const c = new ExchangeHubClient(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
        const v = await call(c, 'GetProjectStatus', { project_id: 'p-online' });
        assert.equal(v.project_id, 'p-online');
        c.close();
      }
      await until(() => resources() <= before, 5000, `active resources back to ${before}`);
    } finally {
      await hub.stop();
    }
  });
});
