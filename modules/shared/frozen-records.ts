/**
 * Small records that many connections hold with equal contents (a subscription's settings, a
 * CONNECT's protocol version): one frozen record per key, shared, instead of one each. 10 000
 * agents on the embedded broker held tens of thousands of such equal records (docs/benchmarks.md
 * "Autovacuum's samples, smaller"). Keys must come from a few known values: the table never
 * forgets one.
 */
export class FrozenRecords<T extends object> {
  private readonly byKey = new Map<string, Readonly<T>>();

  /** The shared record for `key`, made frozen from `make()` the first time. */
  get(key: string, make: () => T): Readonly<T> {
    let shared = this.byKey.get(key);
    if (shared === undefined) {
      shared = Object.freeze(make());
      this.byKey.set(key, shared);
    }
    return shared;
  }
}
