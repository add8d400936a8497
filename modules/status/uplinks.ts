import type { ModuleBus } from '../../core/bus.js';
import type { Logger } from '../../core/log.js';
import type { Clock } from '../../core/module.js';
import {
  BRIDGE,
  type BridgeRejectedEvent,
  type MqttPublishRequest,
  type UplinkEvent,
} from '../mqtt-bridge/contract/topics.js';
import type { UplinkHandlers, UplinkMessage } from '../mqtt-bridge/contract/uplink-routes.js';
import {
  buildData,
  type DataMessage,
  type DownlinkDataType,
  isValidProjectId,
  messageDownTopic,
  type RegisterCommand,
  type RegisterPayload,
  TOPIC_COMMAND_UP,
  toWire,
} from '../shared/protocol.js';
import { TokenBucket } from '../shared/token-bucket.js';
import type { StatusConfig } from './config.js';
import type { UplinkCounters } from './contract/stats.js';
import { STATUS } from './contract/topics.js';
import type { Presence, PresenceEntry } from './presence.js';
import type { ProjectRecord, ProjectStore } from './projects.js';
import type { PresenceSync } from './sync.js';

/** The reasons a `register_ack` refusal carries (agents show them to operators). */
export const REFUSAL = {
  unknown: 'unknown project',
  disabled: 'project disabled',
  PROTO_ERR_SIGNATURE: 'bad signature',
  PROTO_ERR_CLOCK: 'timestamp outside the allowed window',
  PROTO_ERR_REPLAY: 'message replayed',
} as const;

/** What a register the bridge's verification step refused is answered with, by its code. */
const REFUSAL_BY_CODE: Record<string, string> = {
  PROTO_ERR_UNKNOWN_PROJECT: REFUSAL.unknown,
  PROTO_ERR_PROJECT_DISABLED: REFUSAL.disabled,
  PROTO_ERR_SIGNATURE: REFUSAL.PROTO_ERR_SIGNATURE,
  PROTO_ERR_UNSIGNED: 'signature required',
  PROTO_ERR_CLOCK: REFUSAL.PROTO_ERR_CLOCK,
  PROTO_ERR_REPLAY: REFUSAL.PROTO_ERR_REPLAY,
};

const DOWNLINK_TIMEOUT_MS = 10_000;
/** Answers to refused registers per project and second at most; a flood gets few (the rest are counted). */
const REFUSED_REGISTER_ANSWERS_PER_S = 5;
/** A refusal reason is cut to this many characters (it names the field and the problem; agents show it). */
const MAX_REASON_CHARS = 300;

function newCounters(): UplinkCounters {
  return {
    registers: 0,
    registers_accepted: 0,
    registers_refused: 0,
    registers_superseded: 0,
    registers_duplicate: 0,
    register_completed: 0,
    heartbeats: 0,
    monitors: 0,
    alerts: 0,
    disconnects: 0,
    stale_wills: 0,
    data_unknown_project: 0,
    data_disabled_project: 0,
    data_ignored: 0,
    malformed: 0,
    reregisters_sent: 0,
    reregisters_throttled: 0,
    reregisters_deferred: 0,
    downlinks_sent: 0,
    downlinks_failed: 0,
    lookup_failures: 0,
    registers_rejected: 0,
    registers_rejected_throttled: 0,
    uplinks_rejected: 0,
    uplinks_rejected_unattributed: 0,
  };
}

type UplinkData = DataMessage<string, unknown>;

export interface UplinkDeps {
  cfg: StatusConfig;
  clock: Clock;
  log: Logger;
  bus: ModuleBus;
  projects: ProjectStore;
  presence: Presence;
  /**
   * Set when other hub instances may write presence (driver pg): what the read model cannot place
   * (a heartbeat of a project it does not show online, a register_complete without its handshake)
   * is checked against the row before anything is decided.
   */
  sync: PresenceSync | null;
}

/**
 * The agent side of presence (docs/wire-protocol.md#registration-and-presence): the registration handshake, heartbeats, disconnects
 * (including MQTT last wills), monitor and alert data, the silence sweep, and the downlinks
 * (`register_ack`, `reregister`) it answers with through the bridge.
 *
 * Handlers return synchronously when the project is cached (the hot path) and a promise only
 * when it must be read from the database; the mailbox keeps their order either way.
 */
export class Uplinks {
  readonly counters = newCounters();
  /** Last `reregister` per project: at most one per heartbeat interval, so a flood gets few answers. */
  private readonly reregistered = new Map<string, number>();
  /** Fleet-wide `reregister` asks (cfg.reregister_per_s, burst one second's worth), made at the first ask. */
  private reregisterAsks: TokenBucket | null = null;
  /** Answers to refused registers per project (REFUSED_REGISTER_ANSWERS_PER_S); a full bucket is forgotten. */
  private readonly refusalAnswers = new Map<string, TokenBucket>();

  constructor(private readonly d: UplinkDeps) {}

  /**
   * One handler per uplink type status owns in the uplink table (index.ts subscribes them with
   * subscribeUplinks); the compiler refuses a map that misses one.
   */
  readonly handlers = {
    register: (ev) => this.onRegister(ev),
    register_complete: (ev) => this.onData(ev, (msg, rec) => this.registerComplete(msg, rec)),
    heartbeat: (ev) => this.onData(ev, (msg, rec) => this.heartbeat(msg, rec)),
    disconnect: (ev) => this.onData(ev, (msg) => this.disconnect(msg)),
    monitor: (ev) => this.onData(ev, (msg) => this.monitor(msg)),
    alert: (ev) => this.onData(ev, (msg) => this.alert(msg)),
  } satisfies UplinkHandlers<'status'>;

  private now(): number {
    return Math.floor(this.d.clock.now());
  }

  /** Runs `fn` with the project (null: not provisioned), without a promise when it is cached. */
  private withProject(projectId: string, fn: (rec: ProjectRecord | null) => void): void | Promise<void> {
    let r: ReturnType<ProjectStore['lookup']>;
    try {
      r = this.d.projects.lookup(projectId);
    } catch (err) {
      this.lookupFailed(projectId, err);
      return;
    }
    if (!(r instanceof Promise)) return fn(r);
    return r.then(fn, (err) => this.lookupFailed(projectId, err));
  }

  private lookupFailed(projectId: string, err: unknown): void {
    this.counters.lookup_failures++;
    // No answer to the agent: it retries, and by then the database may be back.
    this.d.log.error({ err, project_id: projectId }, 'project lookup failed; uplink dropped');
  }

  // ─── registration ────────────────────────────────────────────────────────────────────────

  onRegister(ev: UplinkEvent<RegisterCommand>): void | Promise<void> {
    const msg = ev?.msg;
    if (!msg || typeof msg !== 'object' || msg.command_type !== 'register' || !isValidProjectId(msg.project_id)) {
      this.counters.malformed++;
      this.d.log.warn('register event without a valid message dropped');
      return;
    }
    this.counters.registers++;
    return this.withProject(msg.project_id, (rec) => this.register(msg, rec));
  }

  private register(msg: RegisterCommand, rec: ProjectRecord | null): void {
    const pid = msg.project_id;
    if (!rec) {
      this.refuse(pid, null, REFUSAL.unknown);
      return;
    }
    if (!rec.enabled) {
      this.refuse(pid, rec, REFUSAL.disabled);
      return;
    }

    const { presence } = this.d;
    const e = presence.ensure(pid);
    const inHandshake = e.handshake !== null && (e.state === 'connecting' || e.state === 'verifying');
    // The bridge verified the message before it reached the bus (signature, clock window, replay:
    // mqtt-bridge/verify.ts), once for every module. A copy of the register that opened the
    // handshake going on, or the session online now, can still arrive while the first is being
    // written (the broker delivers it again to a new connection of the hub's session before the
    // first one's PUBACK): it changes nothing, and the first one's answer is the answer. (The
    // row's condition, persist.ts `x_register_ts`, refuses the session's own register too, but
    // lets an equal handshake timestamp through, and only after the entry changed in memory.)
    if (
      (inHandshake && e.handshake!.registered_ts === msg.timestamp) ||
      (e.state === 'online' && e.session_started_at === msg.timestamp)
    ) {
      this.counters.registers_duplicate++;
      this.d.log.debug({ project_id: pid, message_id: msg.message_id }, 'a second copy of a register ignored');
      return;
    }
    const now = this.now();
    const p = msg.payload as RegisterPayload;
    const before = inHandshake ? e.handshake!.before : e.state;
    const steps: Array<['connecting' | 'verifying', string]> = inHandshake
      ? []
      : [
          ['connecting', 'register received'],
          ['verifying', 'verifying registration'],
        ];
    const registration = {
      node_name: p.node_name,
      instance_id: p.instance_id,
      version: p.version,
      node_version: p.node_version,
      pid: p.pid,
      start_time: p.start_time,
      capabilities: p.capabilities,
      metadata: p.metadata,
      registered_at: now,
    };
    // The register_ack goes once the handshake is in PostgreSQL: the agent's register_complete
    // may land on another hub instance, which must find it there.
    presence.change(
      e,
      steps,
      { register_ts: msg.timestamp },
      {
        handshake: { before: before === 'online' ? 'online' : 'offline', registered_ts: msg.timestamp },
        registration: { instance_id: p.instance_id, agent_version: p.version, registration },
      },
      (version) => {
        if (version === null) {
          this.counters.registers_superseded++;
          this.d.log.info({ project_id: pid, instance_id: p.instance_id }, 'registration superseded by a newer one');
          return;
        }
        this.counters.registers_accepted++;
        this.d.log.info({ project_id: pid, instance_id: p.instance_id, version: p.version }, 'registration accepted');
        this.send(
          pid,
          'register_ack',
          { accepted: true, heartbeat_interval_s: this.d.cfg.heartbeat_interval_s },
          rec.secret,
        );
      },
    );
  }

  private refuse(pid: string, rec: ProjectRecord | null, reason: string): void {
    this.counters.registers_refused++;
    if (!rec) this.d.log.warn({ project_id: pid, reason }, 'registration refused');
    this.send(
      pid,
      'register_ack',
      { accepted: false, reason, heartbeat_interval_s: this.d.cfg.heartbeat_interval_s },
      rec?.secret,
    );
  }

  /**
   * An uplink the bridge refused (`mqtt/rejected`): by its parser (a malformed message, whose
   * project and type the bridge read when it could) or by its verification step (signature,
   * clock, replay, unknown or disabled project). Every registration gets an answer: a refused
   * register is answered with `register_ack {accepted: false, reason}` naming why — for a
   * malformed one the code, the field and the problem — signed when the project is known, at most
   * REFUSED_REGISTER_ANSWERS_PER_S per project and second. Any refused uplink of a provisioned
   * project (but a replayed copy, which is QoS 1 at work, not the agent's mistake) is counted on
   * the project and shown in its status view (`rejected_uplinks`, `last_rejected`). A heartbeat or
   * register_complete from a project that is not provisioned asks for a register, whose refusal
   * then tells the agent why. Without a readable project id there is nobody to answer; the
   * bridge's counters have it.
   */
  onRejected(ev: BridgeRejectedEvent): void | Promise<void> {
    if (!ev || typeof ev !== 'object' || !isValidProjectId(ev.project_id)) {
      this.counters.uplinks_rejected_unattributed++;
      return;
    }
    const pid = ev.project_id;
    const code = String(ev.code);
    const type = typeof ev.type === 'string' ? ev.type : null;
    // only `register` travels on the command uplink: a refused message there is a registration attempt
    const isRegister = type === 'register' || (type === null && ev.topic === TOPIC_COMMAND_UP);
    if (code === 'PROTO_ERR_UNKNOWN_PROJECT') {
      this.counters.uplinks_rejected_unattributed++;
      if (isRegister) {
        this.answerRefusedRegister(pid, null, REFUSAL.unknown);
      } else if (type === 'heartbeat' || type === 'register_complete') {
        this.counters.data_unknown_project++;
        this.reregister(pid, undefined, 'unknown project');
      }
      return;
    }
    const reason = REFUSAL_BY_CODE[code] ?? `${code}: ${String(ev.reason)}`.slice(0, MAX_REASON_CHARS);
    return this.withProject(pid, (rec) => {
      if (!rec) {
        this.counters.uplinks_rejected_unattributed++;
      } else if (code !== 'PROTO_ERR_REPLAY') {
        this.counters.uplinks_rejected++;
        const e = this.d.presence.ensure(pid);
        e.rejected_uplinks = (e.rejected_uplinks ?? 0) + 1;
        e.last_rejected = {
          type: type ?? (isRegister ? 'register' : null),
          code,
          reason: `${code}: ${String(ev.reason)}`.slice(0, MAX_REASON_CHARS),
          at: new Date(this.now()).toISOString(),
        };
      }
      if (isRegister) this.answerRefusedRegister(pid, rec, reason);
      else this.d.log.debug({ project_id: pid, type, code }, 'refused uplink counted');
    });
  }

  private answerRefusedRegister(pid: string, rec: ProjectRecord | null, reason: string): void {
    this.counters.registers_rejected++;
    if (!this.mayAnswerRefusal(pid)) {
      this.counters.registers_rejected_throttled++;
      return;
    }
    if (rec) this.d.log.warn({ project_id: pid, reason }, 'registration refused');
    this.refuse(pid, rec, reason);
  }

  private mayAnswerRefusal(pid: string): boolean {
    const now = this.now();
    let bucket = this.refusalAnswers.get(pid);
    if (!bucket) {
      bucket = new TokenBucket(REFUSED_REGISTER_ANSWERS_PER_S, REFUSED_REGISTER_ANSWERS_PER_S, now);
      this.refusalAnswers.set(pid, bucket);
    }
    return bucket.take(now);
  }

  // ─── data ────────────────────────────────────────────────────────────────────────────────

  /**
   * The steps every data uplink of status goes through before its own handler: a well-formed
   * message, a provisioned and enabled project. Its signature, clock and message id were checked
   * by the bridge (mqtt-bridge/verify.ts) before the bus carried it here.
   */
  private onData<M extends UplinkData>(
    ev: UplinkEvent<M>,
    handle: (msg: M, rec: ProjectRecord) => void | Promise<void>,
  ): void | Promise<void> {
    const msg = ev?.msg;
    if (!msg || typeof msg !== 'object' || typeof msg.data_type !== 'string' || !isValidProjectId(msg.project_id)) {
      this.counters.malformed++;
      this.d.log.warn('data event without a valid message dropped');
      return;
    }
    return this.withProject(msg.project_id, (rec) => this.data(msg, rec, handle));
  }

  private data<M extends UplinkData>(
    msg: M,
    rec: ProjectRecord | null,
    handle: (msg: M, rec: ProjectRecord) => void | Promise<void>,
  ): void | Promise<void> {
    const pid = msg.project_id;
    const type = msg.data_type;
    if (!rec) {
      this.counters.data_unknown_project++;
      this.d.log.debug({ project_id: pid, data_type: type }, 'data from an unknown project');
      // The agent learns why from the refusal of the register this asks for.
      if (type === 'heartbeat' || type === 'register_complete') this.reregister(pid, undefined, 'unknown project');
      return;
    }
    if (!rec.enabled) {
      this.counters.data_disabled_project++;
      this.d.log.debug({ project_id: pid, data_type: type }, 'data from a disabled project dropped');
      return;
    }
    return handle(msg, rec);
  }

  /**
   * Runs `decide` with the entry, first bringing it up to date from its row when the read model
   * cannot place the message (`placed` false) and other instances may have written it: the
   * announcement of their change may not have arrived yet. Nothing of ours on its way: then the
   * read model is ahead of the row, not behind.
   */
  private placed(
    pid: string,
    placed: (e: PresenceEntry | undefined) => boolean,
    decide: (e: PresenceEntry | undefined) => void,
  ): void | Promise<void> {
    const e = this.d.presence.get(pid);
    const { sync } = this.d;
    if (!sync || placed(e) || (e && e.pending > 0)) return decide(e);
    return sync.check(pid).then(decide, (err) => {
      this.counters.lookup_failures++;
      // No answer to the agent: it sends again (heartbeat) or registers again, and by then the database may be back.
      this.d.log.error({ err, project_id: pid }, 'presence check failed; uplink dropped');
    });
  }

  private registerComplete(msg: UplinkMessage<'register_complete'>, rec: ProjectRecord): void | Promise<void> {
    const pid = msg.project_id;
    return this.placed(
      pid,
      (e) => (e?.state === 'verifying' && e.handshake !== null) || e?.state === 'online',
      (e) => {
        if (e?.state === 'verifying' && e.handshake) {
          const hs = e.handshake;
          const now = this.now();
          this.d.presence.change(
            e,
            [['online', 'registration complete']],
            { states: ['verifying'], handshake_ts: hs.registered_ts },
            { handshake: null, session_started_at: hs.registered_ts, last_heartbeat_at: now },
          );
          this.counters.register_completed++;
          return;
        }
        if (e?.state === 'online') {
          this.counters.data_ignored++; // a QoS 1 redelivery
          return;
        }
        this.reregister(pid, rec.secret, 'no registration in progress');
      },
    );
  }

  private heartbeat(msg: UplinkMessage<'heartbeat'>, rec: ProjectRecord): void | Promise<void> {
    this.counters.heartbeats++;
    const pid = msg.project_id;
    const registering = (e: PresenceEntry | undefined) =>
      e?.handshake != null && (e.state === 'connecting' || e.state === 'verifying');
    return this.placed(
      pid,
      (e) => e?.state === 'online' || registering(e),
      (e) => {
        if (e?.state === 'online') {
          const now = this.now();
          e.last_heartbeat_at = Math.max(e.last_heartbeat_at ?? now, now);
          const metrics = msg.payload?.metrics;
          if (metrics && typeof metrics === 'object') {
            e.metrics = metrics;
            e.metrics_at = now;
          }
          this.d.presence.touch(e);
          return;
        }
        // Registering right now: the heartbeat is early, not a sign of a lost session.
        if (registering(e)) return;
        this.reregister(pid, rec.secret, 'heartbeat while not online');
      },
    );
  }

  private disconnect(msg: UplinkMessage<'disconnect'>): void | Promise<void> {
    this.counters.disconnects++;
    const live = (e: PresenceEntry | undefined): e is PresenceEntry =>
      e !== undefined && e.state !== 'offline' && e.state !== 'disconnecting';
    return this.placed(msg.project_id, live, (e) => {
      if (live(e)) this.disconnectSession(msg, e);
    });
  }

  private disconnectSession(msg: UplinkData, e: PresenceEntry): void {
    const { presence } = this.d;
    const sessionStart = e.state === 'online' ? e.session_started_at : (e.handshake?.registered_ts ?? null);
    const payload = (msg.payload ?? {}) as { reason?: unknown; instance_id?: unknown };
    // An agent that names its instance (SubNodeSync `{node_name}-{hostname}-{pid}`) is checked by
    // name too: a will left by an earlier process never ends the session of its successor.
    const current = e.state === 'online' || e.handshake ? e.instance_id : null;
    const otherInstance =
      typeof payload.instance_id === 'string' && current !== null && payload.instance_id !== current;
    const tooOld = sessionStart !== null && msg.timestamp < sessionStart - this.d.cfg.will_grace_ms;
    if (otherInstance || tooOld) {
      this.counters.stale_wills++;
      this.d.log.info(
        {
          project_id: msg.project_id,
          message_ts: msg.timestamp,
          session_ts: sessionStart,
          instance_id: typeof payload.instance_id === 'string' ? payload.instance_id : undefined,
          current_instance_id: current,
        },
        'disconnect from an earlier connection ignored (stale last will)',
      );
      return;
    }
    const why = payload.reason;
    const reason = typeof why === 'string' && why.length > 0 ? `disconnect: ${why.slice(0, 200)}` : 'disconnect';
    // Conditional on the session judged here: a disconnect never ends a session that replaced it.
    const expect =
      e.state === 'online'
        ? { states: [e.state], session_started_at: e.session_started_at }
        : e.handshake
          ? { states: [e.state], handshake_ts: e.handshake.registered_ts }
          : { states: [e.state] };
    presence.change(
      e,
      [
        ['disconnecting', reason],
        ['offline', reason],
      ],
      expect,
      { handshake: null },
    );
  }

  private monitor(msg: UplinkMessage<'monitor'>): void {
    this.counters.monitors++;
    const e = this.d.presence.ensure(msg.project_id);
    const at = this.now();
    e.metrics = msg.payload.metrics;
    e.metrics_at = at;
    this.d.presence.touch(e);
    void this.d.bus.publish(STATUS.monitor(msg.project_id), { project_id: msg.project_id, metrics: e.metrics, at });
  }

  private alert(msg: UplinkMessage<'alert'>): void {
    this.counters.alerts++;
    const e = this.d.presence.ensure(msg.project_id);
    const at = this.now();
    e.last_alert = msg.payload;
    e.last_alert_at = at;
    this.d.presence.touch(e);
    this.d.log.info({ project_id: msg.project_id, level: msg.payload.level }, 'agent alert');
    void this.d.bus.publish(STATUS.alert(msg.project_id), { project_id: msg.project_id, alert: msg.payload, at });
  }

  // ─── throttles ───────────────────────────────────────────────────────────────────────────

  /** The reregister and refusal throttles forget old entries (the silence sweep is timeouts.ts). */
  forgetThrottles(): void {
    const now = this.now();
    const gap = this.d.cfg.heartbeat_interval_s * 1000;
    for (const [pid, at] of this.reregistered) if (now - at >= gap || now < at) this.reregistered.delete(pid);
    for (const [pid, bucket] of this.refusalAnswers) if (bucket.full(now)) this.refusalAnswers.delete(pid);
  }

  // ─── downlinks ───────────────────────────────────────────────────────────────────────────

  private reregister(pid: string, secret: string | undefined, reason: string): void {
    const now = this.now();
    const last = this.reregistered.get(pid);
    if (last !== undefined && now - last < this.d.cfg.heartbeat_interval_s * 1000 && now >= last) {
      this.counters.reregisters_throttled++;
      return;
    }
    // fleet-wide: the agents not asked now are asked at one of their next heartbeats
    this.reregisterAsks ??= new TokenBucket(this.d.cfg.reregister_per_s, this.d.cfg.reregister_per_s, now);
    if (!this.reregisterAsks.take(now)) {
      this.counters.reregisters_deferred++;
      return;
    }
    this.reregistered.set(pid, now);
    this.counters.reregisters_sent++;
    this.d.log.debug({ project_id: pid, reason }, 'asking the agent to register again');
    this.send(pid, 'reregister', { reason }, secret);
  }

  /**
   * Publishes a downlink data message through the bridge, signed with the project's current
   * secret when there is one. Not awaited: the mailbox must not wait for a broker PUBACK.
   */
  private send(pid: string, type: DownlinkDataType, payload: unknown, secret: string | undefined): void {
    let req: MqttPublishRequest;
    try {
      const msg = buildData(pid, type, payload, { secret, now: this.now() });
      req = { topic: messageDownTopic(pid), payload: toWire(msg), qos: 1 };
    } catch (err) {
      this.counters.downlinks_failed++;
      this.d.log.error({ err, project_id: pid, data_type: type }, 'downlink could not be built');
      return;
    }
    this.d.bus.request(BRIDGE.publish, req, { timeoutMs: DOWNLINK_TIMEOUT_MS }).then(
      () => {
        this.counters.downlinks_sent++;
      },
      (err) => {
        this.counters.downlinks_failed++;
        this.d.log.warn({ err, project_id: pid, data_type: type }, 'downlink publish failed');
      },
    );
  }
}
