/**
 * Topic filters in a trie keyed by level, so matching a topic costs its depth (and the `+`
 * branches it meets), not the number of filters. The bus caches routes by topic, but uplink
 * topics carry a project id, so with many projects most topics are new to the cache; without an
 * index every miss tested every filter of every mailbox (bench `heartbeat`: 7 000/s at 20 000
 * projects fell to 2 600/s at 100 000).
 *
 * Same semantics as compilePattern: `+` one level, `#` the rest including the parent level
 * (`a/#` matches `a`). [MQTT-4.7.1]
 */
interface TrieNode<T> {
  children: Map<string, TrieNode<T>>;
  plus: TrieNode<T> | null;
  /** Values whose filter ends here with `#`. */
  rest: T[];
  /** Values whose filter ends exactly here. */
  here: T[];
}

const node = <T>(): TrieNode<T> => ({ children: new Map(), plus: null, rest: [], here: [] });

export class TopicIndex<T> {
  private readonly root: TrieNode<T> = node();

  /** Adds `value` under a valid filter (callers validate with assertPattern). */
  add(filter: string, value: T): void {
    let n = this.root;
    for (const level of filter.split('/')) {
      if (level === '#') {
        n.rest.push(value);
        return;
      }
      if (level === '+') {
        n.plus ??= node();
        n = n.plus;
      } else {
        let next = n.children.get(level);
        if (!next) {
          next = node();
          n.children.set(level, next);
        }
        n = next;
      }
    }
    n.here.push(value);
  }

  /** Every value whose filter matches the topic's levels (a value added under two matching filters comes twice). */
  match(levels: readonly string[]): T[] {
    const out: T[] = [];
    this.walk(this.root, levels, 0, out, false);
    return out;
  }

  /** Whether any filter matches. */
  test(levels: readonly string[]): boolean {
    return this.walk(this.root, levels, 0, [], true);
  }

  private walk(n: TrieNode<T>, levels: readonly string[], i: number, out: T[], first: boolean): boolean {
    if (n.rest.length > 0) {
      if (first) return true;
      out.push(...n.rest);
    }
    if (i === levels.length) {
      if (n.here.length > 0) {
        if (first) return true;
        out.push(...n.here);
      }
      return false;
    }
    const child = n.children.get(levels[i]);
    if (child && this.walk(child, levels, i + 1, out, first)) return true;
    if (n.plus && this.walk(n.plus, levels, i + 1, out, first)) return true;
    return false;
  }
}

/**
 * Route keys: a topic with each level that no filter names literally at that depth replaced by
 * `+` (which no publish topic holds and no filter has as a literal). A filter tests a level
 * against a literal or not at all (`+`, `#`), so topics with one key are matched by the same
 * filters, and a route cache keyed this way holds one entry for
 * `hub/uplink/{project_id}/data/heartbeat` instead of one per project. Keyed by topic, the bus's
 * and the mailboxes' caches (8 192 and 4 096 entries) thrashed with a fleet: a publish cost
 * 0.26 µs at 1 000 projects and 4.9 µs at 20 000, most of it clearing and refilling them.
 */
export class RouteKeys {
  /** The literal levels of the filters, by depth and then by length (compared in place, no slicing). */
  private readonly literals: Array<Map<number, string[]> | undefined> = [];

  constructor(filters: Iterable<string>) {
    for (const f of filters) {
      const levels = f.split('/');
      for (let i = 0; i < levels.length; i++) {
        const l = levels[i];
        if (l === '+' || l === '#') continue;
        let byLength = this.literals[i];
        if (byLength === undefined) {
          byLength = new Map();
          this.literals[i] = byLength;
        }
        const same = byLength.get(l.length);
        if (same === undefined) byLength.set(l.length, [l]);
        else if (!same.includes(l)) same.push(l);
      }
    }
  }

  /**
   * The topic's key as a string (the topic itself when every level is some filter's literal):
   * the definition RouteCache follows level by level (literalAt) without building it. The tests
   * hold the keying sound with it; nothing on the hot path calls it.
   */
  key(topic: string): string {
    // one scan without slicing or hashing levels: the key is built only once a level is not a literal
    let out: string | null = null;
    let copied = 0;
    let start = 0;
    for (let depth = 0; ; depth++) {
      let end = topic.indexOf('/', start);
      if (end === -1) end = topic.length;
      if (this.literalAt(topic, start, end, depth) === null) {
        out = `${out ?? ''}${topic.slice(copied, start)}+`;
        copied = end;
      }
      if (end === topic.length) break;
      start = end + 1;
    }
    return out === null ? topic : out + topic.slice(copied);
  }

  /** The filters' literal equal to `topic[start, end)` at this depth (the filter's own string), or null. */
  literalAt(topic: string, start: number, end: number, depth: number): string | null {
    const same = this.literals[depth]?.get(end - start);
    if (same === undefined) return null;
    for (let i = 0; i < same.length; i++) if (topic.startsWith(same[i], start)) return same[i];
    return null;
  }
}

/** A route key as a path of levels: each a filter's literal or `+` (RouteKeys), the route at its end. */
interface KeyNode<T> {
  next: Map<string, KeyNode<T>>;
  route: T | undefined;
}

const keyNode = <T>(): KeyNode<T> => ({ next: new Map(), route: undefined });

/**
 * What the bus and each mailbox cache their routes in: one entry per route key (RouteKeys),
 * found by walking the topic's levels through a tree of keys, each level a filter's literal
 * (the filter's own string, whose hash V8 keeps) or `+`. Nothing is built or hashed per topic:
 * a cache keyed by topic string missed for almost every topic of a large fleet, and hashing
 * each new topic, then building and hashing its key, was 6 % of the hub's CPU under bench
 * heartbeat (three lookups per uplink: the bus's, and the mailbox's at offer and at dispatch).
 * Cleared whole when the filters change, or past `max` keys.
 */
export class RouteCache<T> {
  private root: KeyNode<T> = keyNode();
  private size = 0;
  private keys: RouteKeys | null = null;

  /**
   * @param filters the filters routes are computed from (read again after a clear)
   * @param compute the route of a topic whose key has none yet
   * @param admit checks every topic looked up (throws to refuse it)
   */
  constructor(
    private readonly max: number,
    private readonly filters: () => Iterable<string>,
    private readonly compute: (topic: string) => T,
    private readonly admit: (topic: string) => void = () => {},
  ) {}

  get(topic: string): T {
    this.admit(topic);
    this.keys ??= new RouteKeys(this.filters());
    const keys = this.keys;
    let node = this.root;
    let start = 0;
    for (let depth = 0; ; depth++) {
      let end = topic.indexOf('/', start);
      if (end === -1) end = topic.length;
      const level = keys.literalAt(topic, start, end, depth) ?? '+';
      let next = node.next.get(level);
      if (next === undefined) {
        next = keyNode();
        node.next.set(level, next);
      }
      node = next;
      if (end === topic.length) break;
      start = end + 1;
    }
    let route = node.route;
    if (route === undefined) {
      route = this.compute(topic);
      if (this.size >= this.max) {
        // a new tree: this topic's path in the old one is not reachable from it
        this.clear();
        return route;
      }
      node.route = route;
      this.size++;
    }
    return route;
  }

  /** Forgets every route (the filters changed). */
  clear(): void {
    this.root = keyNode();
    this.size = 0;
    this.keys = null;
  }
}
