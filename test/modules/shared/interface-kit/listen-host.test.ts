import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { isLoopback, listenHost } from '../../../../modules/shared/interface-kit/listen-host.js';

describe('interface kit: where a server listens', () => {
  test('loopback: localhost, ::1 (bracketed too), 127.0.0.0/8, 127.0.0.1 mapped into IPv6; nothing else', () => {
    for (const h of ['localhost', 'LOCALHOST', '::1', '[::1]', '127.0.0.1', '127.1.2.3', '::ffff:127.0.0.1']) {
      assert.equal(isLoopback(h), true, h);
    }
    for (const h of ['0.0.0.0', '::', '10.0.0.1', '128.0.0.1', '127.0.0.1.example', 'example.com', '']) {
      assert.equal(isLoopback(h), false, h);
    }
  });

  test('with a token: the configured host, every interface by default', () => {
    assert.deepEqual(listenHost(undefined, true), { host: '0.0.0.0' });
    assert.deepEqual(listenHost('10.0.0.1', true), { host: '10.0.0.1' });
  });

  test('without a token: loopback by default, a loopback host kept, any other refused for 127.0.0.1', () => {
    assert.deepEqual(listenHost(undefined, false), { host: '127.0.0.1' });
    assert.deepEqual(listenHost('::1', false), { host: '::1' });
    assert.deepEqual(listenHost('0.0.0.0', false), { host: '127.0.0.1', refused: '0.0.0.0' });
  });
});
