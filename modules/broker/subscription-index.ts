/**
 * The embedded broker's persistent-session subscriptions, lean. aedes stores the subscriptions of
 * every client that connects with `clean: false` (every agent of the agent module does, so its
 * downlink commands wait in its session while it is away) in its persistence, and asks the
 * persistence on every QoS 1 or 2 publish which stored subscriptions match the topic
 * (`subscriptionsByTopic`), to queue the message for them.
 *
 * aedes-persistence keeps them twice: a Map of topics per client, and a qlobber trie of every
 * filter. In the trie each agent's own topics (`gmq/command/down/<project>`, …) are leaves of
 * their own: per topic a trie node, a value object with its own Map of clients and a generator
 * closure, and a record. 1.7 KB of live heap per agent connection with its two subscriptions
 * (3 000 agent connections on a bare aedes with this project's session queues: 6.4 KB each with
 * `clean: true`, 8.0 KB with `clean: false`), and a trie walk that splits the topic and
 * allocates its answer on every publish.
 *
 * Here a filter without wildcards (`+` or `#` as a whole level: what qlobber treats as one) is
 * an entry of a Map keyed by the filter, whose value is the one subscriber (nearly always) or a
 * Map of them; only filters with wildcards (the bridge's `…/up/#`) go to a trie, aedes-
 * persistence's own QlobberSub. A topic's subscribers are the exact entry of the topic itself
 * plus the trie's matches, in the same shape as aedes-persistence's (`clientId`, the filter as
 * `topic`, `qos`, `rh`, `rap`, `nl`); the count of offline subscriptions and clients and the
 * per-client lists are the same. test/modules/broker/subscription-index.property.test.ts holds
 * the two against each other, operation by operation, with fast-check.
 */
import { createRequire } from 'node:module';
import { Readable } from 'node:stream';
import { FrozenRecords } from '../shared/frozen-records.js';

/** A subscription as aedes hands it in (a SUBSCRIBE's entry) and gets it back for a client. */
export interface ClientSubscription {
  topic: string;
  qos: number;
  rh?: number;
  rap?: boolean;
  nl?: boolean;
  subscriptionIdentifier?: number;
}

/** A stored subscription of a topic, as `subscriptionsByTopic` answers (aedes-persistence's shape). */
export interface TopicSubscriber {
  clientId: string;
  topic: string;
  qos: number;
  rh?: number;
  rap?: boolean;
  nl?: boolean;
}

/** The subscription methods of an aedes persistence, promise style (aedes calls them so). */
export interface SubscriptionMethods {
  addSubscriptions(client: { id: string }, subs: ClientSubscription[]): Promise<void>;
  removeSubscriptions(client: { id: string }, topics: string[]): Promise<void>;
  subscriptionsByClient(client: { id: string }): Promise<ClientSubscription[]>;
  countOffline(): Promise<{ subsCount: number; clientsCount: number }>;
  subscriptionsByTopic(topic: string): Promise<TopicSubscriber[]>;
  cleanSubscriptions(client: { id: string }): Promise<void>;
  getClientList(topic: string): Readable;
}

/** aedes-persistence's trie of filters (qlobber's QlobberSub), loaded from where aedes-persistence loads it. */
interface QlobberSub {
  subscriptionsCount: number;
  add(topic: string, sub: TopicSubscriber): void;
  remove(topic: string, sub: { clientId: string; topic: string }): void;
  match(topic: string): TopicSubscriber[];
}
const requireFromPersistence = createRequire(createRequire(import.meta.url).resolve('aedes-persistence'));
const QlobberSubClass = requireFromPersistence('qlobber/aedes/qlobber-sub') as new (options: object) => QlobberSub;
/** aedes-persistence's own trie options. */
const QLOBBER_OPTIONS = { wildcard_one: '+', wildcard_some: '#', separator: '/' };

/** Whether qlobber reads `filter` with wildcards: a level that is exactly `+` or `#`. */
export function hasWildcard(filter: string): boolean {
  if (!filter.includes('+') && !filter.includes('#')) return false;
  return filter.split('/').some((level) => level === '+' || level === '#');
}

/** A stored subscription's settings, by its filter in a client's list. */
type SubRecord = Omit<ClientSubscription, 'topic'>;

/**
 * The settings records every client shares: a SUBSCRIBE's settings take few values (QoS 0–2;
 * MQTT 5's retain handling 0–2, retain-as-published and no-local flags, or none of them), and
 * 10 000 agents with two subscriptions each held 20 000 equal records of 56 bytes. A record is
 * never changed once stored (a resubscribe stores another), so it is frozen. Settings outside
 * those values, or with a subscription identifier (MQTT 5, one per SUBSCRIBE), get a record of
 * their own.
 */
const sharedRecords = new FrozenRecords<SubRecord>();
function recordOf(sub: ClientSubscription): SubRecord {
  const { qos, rh, rap, nl, subscriptionIdentifier } = sub;
  const common =
    subscriptionIdentifier === undefined &&
    (qos === 0 || qos === 1 || qos === 2) &&
    (rh === undefined || rh === 0 || rh === 1 || rh === 2) &&
    (rap === undefined || typeof rap === 'boolean') &&
    (nl === undefined || typeof nl === 'boolean');
  if (!common) {
    const own: SubRecord = { qos, rh, rap, nl };
    // MQTT 5's subscription identifier is restored with the client's list, never matched by topic
    if (subscriptionIdentifier !== undefined) own.subscriptionIdentifier = subscriptionIdentifier;
    return own;
  }
  return sharedRecords.get(`${qos}${rh}${rap}${nl}`, () => ({ qos, rh, rap, nl }));
}

/**
 * One client's subscriptions by filter, in the order first subscribed: a flat array
 * `[filter, record, filter, record, …]` of exactly its length while they are few (an agent has
 * two: 80 bytes, where a Map of two is about 280 with its table), a Map past FEW_FILTERS. The array
 * is made again, not pushed to or spliced, on every change: a push would give it room for 17 more,
 * and a client's subscriptions change only when it subscribes or unsubscribes.
 */
type ClientFilters = Array<string | SubRecord> | Map<string, SubRecord>;
const FEW_FILTERS = 8;

function filterRecord(list: ClientFilters, topic: string): SubRecord | undefined {
  if (list instanceof Map) return list.get(topic);
  for (let i = 0; i < list.length; i += 2) if (list[i] === topic) return list[i + 1] as SubRecord;
  return undefined;
}

/** The list with `topic` set to `record` (kept in place when it was there): the same list, or a new one. */
function withFilter(list: ClientFilters, topic: string, record: SubRecord): ClientFilters {
  if (list instanceof Map) return list.set(topic, record);
  for (let i = 0; i < list.length; i += 2)
    if (list[i] === topic) {
      const next = list.slice();
      next[i + 1] = record;
      return next;
    }
  if (list.length / 2 >= FEW_FILTERS) {
    const map = new Map<string, SubRecord>();
    for (let i = 0; i < list.length; i += 2) map.set(list[i] as string, list[i + 1] as SubRecord);
    return map.set(topic, record);
  }
  const next: Array<string | SubRecord> = new Array(list.length + 2);
  for (let i = 0; i < list.length; i++) next[i] = list[i];
  next[list.length] = topic;
  next[list.length + 1] = record;
  return next;
}

/** The list without `topic`: the same list, or a new one. */
function withoutFilter(list: ClientFilters, topic: string): ClientFilters {
  if (list instanceof Map) {
    list.delete(topic);
    return list;
  }
  const at = list.indexOf(topic);
  // a filter is at an even index; a record is never a string
  if (at < 0) return list;
  const next: Array<string | SubRecord> = new Array(list.length - 2);
  for (let i = 0, j = 0; i < list.length; i++) if (i !== at && i !== at + 1) next[j++] = list[i];
  return next;
}

const filterCount = (list: ClientFilters): number => (list instanceof Map ? list.size : list.length / 2);

function* filterEntries(list: ClientFilters): Generator<[string, SubRecord]> {
  if (list instanceof Map) yield* list;
  else for (let i = 0; i < list.length; i += 2) yield [list[i] as string, list[i + 1] as SubRecord];
}

/** The subscription methods over a map of exact filters and a trie of the rest (see the file comment). */
export function indexedSubscriptions(): SubscriptionMethods {
  /** clientId → its subscriptions by filter (QoS 0 ones too: aedes restores them on reconnect). */
  const byClient = new Map<string, ClientFilters>();
  /** exact filter → its one subscriber, or a Map of them by client id */
  const exact = new Map<string, TopicSubscriber | Map<string, TopicSubscriber>>();
  const wild = new QlobberSubClass(QLOBBER_OPTIONS);
  let exactCount = 0;

  const addExact = (s: TopicSubscriber): void => {
    const held = exact.get(s.topic);
    if (held === undefined) {
      exact.set(s.topic, s);
      exactCount++;
    } else if (held instanceof Map) {
      if (!held.has(s.clientId)) exactCount++;
      held.set(s.clientId, s);
    } else if (held.clientId === s.clientId) {
      exact.set(s.topic, s);
    } else {
      exact.set(
        s.topic,
        new Map([
          [held.clientId, held],
          [s.clientId, s],
        ]),
      );
      exactCount++;
    }
  };
  const removeExact = (clientId: string, topic: string): void => {
    const held = exact.get(topic);
    if (held === undefined) return;
    if (held instanceof Map) {
      if (!held.delete(clientId)) return;
      exactCount--;
      if (held.size === 0) exact.delete(topic);
    } else if (held.clientId === clientId) {
      exact.delete(topic);
      exactCount--;
    }
  };
  const index = (clientId: string, sub: ClientSubscription): void => {
    const s: TopicSubscriber = { clientId, topic: sub.topic, qos: sub.qos, rh: sub.rh, rap: sub.rap, nl: sub.nl };
    if (hasWildcard(sub.topic)) wild.add(sub.topic, s);
    else addExact(s);
  };
  const unindex = (clientId: string, topic: string): void => {
    if (hasWildcard(topic)) wild.remove(topic, { clientId, topic });
    else removeExact(clientId, topic);
  };

  return {
    async addSubscriptions(client, subs) {
      let stored = byClient.get(client.id) ?? [];
      for (const sub of subs) {
        const before = filterRecord(stored, sub.topic);
        const record = recordOf(sub);
        if (sub.qos > 0) index(client.id, sub);
        else if (before !== undefined && before.qos > 0) unindex(client.id, sub.topic);
        stored = withFilter(stored, sub.topic, record);
      }
      byClient.set(client.id, stored);
    },
    async removeSubscriptions(client, topics) {
      let stored = byClient.get(client.id);
      if (!stored) return;
      for (const topic of topics) {
        const before = filterRecord(stored, topic);
        if (before === undefined) continue;
        if (before.qos > 0) unindex(client.id, topic);
        stored = withoutFilter(stored, topic);
      }
      if (filterCount(stored) === 0) byClient.delete(client.id);
      else byClient.set(client.id, stored);
    },
    async subscriptionsByClient(client) {
      const out: ClientSubscription[] = [];
      const stored = byClient.get(client.id);
      if (stored) for (const [topic, record] of filterEntries(stored)) out.push({ topic, ...record });
      return out;
    },
    async countOffline() {
      return { subsCount: exactCount + wild.subscriptionsCount, clientsCount: byClient.size };
    },
    async subscriptionsByTopic(topic) {
      const out = wild.match(topic);
      const held = exact.get(topic);
      // copies, as aedes-persistence hands out: what a caller does with them stays out of the store
      if (held instanceof Map) for (const s of held.values()) out.push({ ...s });
      else if (held !== undefined) out.push({ ...held });
      return out;
    },
    async cleanSubscriptions(client) {
      const stored = byClient.get(client.id);
      if (!stored) return;
      for (const [topic, record] of filterEntries(stored)) if (record.qos > 0) unindex(client.id, topic);
      byClient.delete(client.id);
    },
    getClientList(topic) {
      const ids: string[] = [];
      for (const [clientId, stored] of byClient) if (filterRecord(stored, topic) !== undefined) ids.push(clientId);
      return Readable.from(ids);
    },
  };
}

/** Puts the indexed subscription methods on an aedes persistence instance (aedes-persistence's `memory()`). */
export function indexSubscriptions<P extends object>(persistence: P): P {
  return Object.assign(persistence, indexedSubscriptions());
}
