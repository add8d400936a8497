/**
 * Where an interface module listens. Without a token the API is open, so only this machine may
 * reach it: the default address is loopback and a non-loopback one is refused (docs/architecture.md#web-and-grpc).
 */

/** Loopback addresses: `localhost`, `::1` (bracketed or not), 127.0.0.0/8, and 127.0.0.1 mapped into IPv6. */
export function isLoopback(host: string): boolean {
  const h = host.replace(/^\[|\]$/g, '').toLowerCase();
  return h === 'localhost' || h === '::1' || h === '::ffff:127.0.0.1' || /^127(\.\d{1,3}){3}$/.test(h);
}

/** The address to bind, and the configured one when it was refused (no token, not loopback). */
export interface ListenHost {
  host: string;
  refused?: string;
}

/**
 * The listen address from the `host` setting: its default is every interface with a token and
 * 127.0.0.1 without one; without a token a non-loopback address is replaced by 127.0.0.1. The
 * module says so in its log, in its own words.
 */
export function listenHost(configured: string | undefined, authEnabled: boolean): ListenHost {
  const host = configured ?? (authEnabled ? '0.0.0.0' : '127.0.0.1');
  if (authEnabled || isLoopback(host)) return { host };
  return { host: '127.0.0.1', refused: host };
}
