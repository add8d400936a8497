/**
 * The embedded broker's live subscriptions, lean. aedes routes every publish through mqemitter,
 * which keeps each subscription of a connected client (its handler) in a qlobber trie and asks the
 * trie for a topic's handlers on every publish. Each agent's own downlink filters
 * (`wdd/RDMC/command/down/<project>`, …) are leaves of their own there: per filter a Map for its
 * last level and one holding its values array, about 270 bytes of live heap, 550 a connected
 * agent (5.5 MB with 10 000 online, heap snapshot of bench `memory`), and a topic split and a walk
 * of five levels on every publish.
 *
 * As for the stored subscriptions (subscription-index.ts), a filter without wildcards (`+` or `#`
 * as a whole level, what qlobber treats as one) is here an entry of a Map keyed by the filter,
 * whose value is its one handler (nearly always) or an array of them; only filters with wildcards
 * (the bridge's, aedes' own `$SYS/+/…`) stay in the trie. A topic's handlers are the trie's
 * matches plus the topic's exact entry: the same multiset as the trie alone answers, and the same
 * add and remove rules (a handler added twice is there twice; removing one takes its last copy;
 * removing none takes all of the filter's). The order in which different subscribers are told is
 * not a contract: mqemitter calls them all at once. test/modules/broker/topic-matcher.property.test.ts
 * holds the two against each other with fast-check.
 */
import { hasWildcard } from './subscription-index.js';

/** A subscriber's handler as mqemitter keeps it. */
// biome-ignore lint/suspicious/noExplicitAny: aedes' handlers take its own packet class
export type Handler = (...args: any[]) => unknown;

/** What mqemitter asks of its matcher (qlobber's Qlobber). */
export interface TopicMatcher {
  add(topic: string, handler: Handler): unknown;
  /** without `handler`: every handler of the filter */
  remove(topic: string, handler?: Handler): unknown;
  /** The handlers of every filter matching `topic`; the caller reads it and never changes it. */
  match(topic: string): Handler[];
}

export class ExactFirstMatcher implements TopicMatcher {
  /** exact filter → its one handler, or its handlers in the order they were added */
  private readonly exact = new Map<string, Handler | Handler[]>();

  /** `trie`: the matcher it stands in front of, for filters with wildcards (and any exact ones it held before). */
  constructor(private readonly trie: TopicMatcher) {}

  /** How many exact filters have handlers here. */
  get exactFilters(): number {
    return this.exact.size;
  }

  add(topic: string, handler: Handler): this {
    if (hasWildcard(topic)) {
      this.trie.add(topic, handler);
      return this;
    }
    const held = this.exact.get(topic);
    if (held === undefined) this.exact.set(topic, handler);
    else if (Array.isArray(held)) held.push(handler);
    else this.exact.set(topic, [held, handler]);
    return this;
  }

  remove(topic: string, handler?: Handler): this {
    const held = hasWildcard(topic) ? undefined : this.exact.get(topic);
    // The trie is asked too when the map does not have it: a filter the trie held before this
    // matcher stood in front of it is still the trie's (added earlier, so the map's copies are the later ones)
    if (held === undefined) this.trie.remove(topic, handler);
    else if (handler === undefined) {
      this.exact.delete(topic);
      this.trie.remove(topic);
    } else if (!Array.isArray(held)) {
      if (held === handler) this.exact.delete(topic);
      else this.trie.remove(topic, handler);
    } else {
      const at = held.lastIndexOf(handler);
      if (at < 0) this.trie.remove(topic, handler);
      else if (held.length === 1) this.exact.delete(topic);
      else held.splice(at, 1);
    }
    return this;
  }

  match(topic: string): Handler[] {
    const wild = this.trie.match(topic);
    const held = this.exact.get(topic);
    if (held === undefined) return wild;
    // the trie may answer with its own array: never add to it
    if (wild.length > 0) return wild.concat(held);
    return Array.isArray(held) ? held : [held];
  }
}

function isMatcher(x: unknown): x is TopicMatcher {
  const m = x as Partial<TopicMatcher> | null;
  return (
    typeof m === 'object' &&
    m !== null &&
    typeof m.add === 'function' &&
    typeof m.remove === 'function' &&
    typeof m.match === 'function'
  );
}

/**
 * Puts an ExactFirstMatcher in front of an mqemitter's trie (its `_matcher`); false, and nothing
 * changed, when `mq` has no such matcher (another mqemitter than the one this was written for).
 */
export function exactFirstTopics(mq: object): boolean {
  const holder = mq as { _matcher?: unknown };
  if (holder._matcher instanceof ExactFirstMatcher) return true;
  if (!isMatcher(holder._matcher)) return false;
  holder._matcher = new ExactFirstMatcher(holder._matcher);
  return true;
}
