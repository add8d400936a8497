import { LRUCache } from 'lru-cache';

/**
 * An LRU cache of at most `max` entries whose storage grows with what it holds.
 *
 * Given `max`, lru-cache allocates its key, value and link arrays for `max` entries up front:
 * 2.7 MB for 100 000, held while the cache is empty. The hub keeps five such caches of commands
 * and projects, most of them nearly empty on a hub whose fleet sends few commands (the memory
 * suite: 10 MB of its live heap). Bounded by `maxSize` with every entry of size 1 instead,
 * lru-cache grows plain arrays as entries come and evicts the least recently used past `max`
 * the same way (docs/benchmarks.md "Bounded maps that stay fast when full"). Full, it holds about 1.3 MB
 * more per 100 000 entries than the preallocated form: memory follows use, at a small cost when
 * full.
 *
 * @example
 *   const owners = growingLru<string, string>(100_000);
 *   owners.set(commandId, projectId);
 */
export function growingLru<K extends {}, V extends {}>(max: number): LRUCache<K, V> {
  return new LRUCache<K, V>({ maxSize: max, sizeCalculation: sizeOne });
}

const sizeOne = (): number => 1;
