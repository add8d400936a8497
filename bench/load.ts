/**
 * The heartbeat load generator: many simulated projects multiplexed over a few hundred MQTT
 * connections (as a gateway, or many agents behind one NAT, would look to the broker), each
 * connection publishing signed QoS 1 heartbeats round-robin over its projects, with a bounded
 * number in flight per connection and an optional total rate.
 */
import type { MqttClient } from 'mqtt';
import { connectMqtt, endClient, heartbeatPayload, signedData } from './agents.js';
import type { Provisioned } from './env.js';

interface Conn {
  client: MqttClient;
  projects: Provisioned[];
  next: number;
  inflight: number;
}

export interface LoadCounters {
  /** publishes the broker acknowledged (PUBACK) */
  acked: number;
  /** publishes that failed (connection lost before PUBACK) */
  failed: number;
}

export class HeartbeatLoad {
  readonly counters: LoadCounters = { acked: 0, failed: 0 };
  private conns: Conn[] = [];
  private tokens = 0;
  private running = false;
  private refill?: NodeJS.Timeout;
  private idle?: () => void;
  private rate = Number.POSITIVE_INFINITY;
  private wake?: () => void;

  constructor(
    private readonly url: string,
    private readonly window = 16,
    private readonly topic = 'wdd/RDMC/message/up',
  ) {}

  /** Opens `connections` connections and splits `projects` between them. */
  async open(projects: Provisioned[], connections: number): Promise<void> {
    const per = Math.ceil(projects.length / connections);
    const tasks: Promise<void>[] = [];
    let next = 0;
    const worker = async () => {
      for (let c = next++; c < connections; c = next++) {
        const client = await connectMqtt(this.url, { clientId: `bench-gw-${process.pid}-${c}`, keepalive: 120 });
        this.conns[c] = { client, projects: projects.slice(c * per, (c + 1) * per), next: 0, inflight: 0 };
      }
    };
    for (let i = 0; i < 32; i++) tasks.push(worker());
    await Promise.all(tasks);
    this.conns = this.conns.filter((c) => c.projects.length > 0);
  }

  get inflight(): number {
    let n = 0;
    for (const c of this.conns) n += c.inflight;
    return n;
  }

  /**
   * Publishes for `ms` at `rate` messages/s in total (Infinity: as fast as the PUBACKs come back,
   * `window` in flight per connection), then waits for the outstanding PUBACKs.
   */
  async run(ms: number, rate = Number.POSITIVE_INFINITY): Promise<void> {
    this.rate = rate;
    this.running = true;
    this.tokens = Number.isFinite(rate) ? rate / 200 : 0;
    if (Number.isFinite(rate)) {
      let last = performance.now();
      this.refill = setInterval(() => {
        const now = performance.now();
        // at most 50 ms worth at once: a stalled loop does not turn into a burst
        this.tokens = Math.min(this.tokens + ((now - last) / 1000) * rate, rate / 20);
        last = now;
        for (const c of this.conns) this.pump(c);
      }, 5);
    }
    for (const c of this.conns) this.pump(c);
    await new Promise<void>((r) => {
      const t = setTimeout(r, ms);
      this.wake = () => {
        clearTimeout(t);
        r();
      };
    });
    this.wake = undefined;
    this.running = false;
    clearInterval(this.refill);
    if (this.inflight > 0) {
      await Promise.race([
        new Promise<void>((r) => {
          this.idle = r;
        }),
        new Promise((r) => setTimeout(r, 60_000)),
      ]);
    }
    this.idle = undefined;
  }

  /** Ends a `run` before its time (it still waits for the outstanding PUBACKs). */
  stop(): void {
    this.wake?.();
  }

  private pump(c: Conn): void {
    const limited = Number.isFinite(this.rate);
    while (this.running && c.inflight < this.window && (!limited || this.tokens >= 1)) {
      if (limited) this.tokens -= 1;
      const p = c.projects[c.next];
      c.next = (c.next + 1) % c.projects.length;
      c.inflight++;
      const text = signedData(p.project_id, p.secret, 'heartbeat', heartbeatPayload(p.project_id));
      c.client.publish(this.topic, text, { qos: 1 }, (err) => {
        c.inflight--;
        if (err) this.counters.failed++;
        else this.counters.acked++;
        if (this.running) this.pump(c);
        else if (this.idle && this.inflight === 0) this.idle();
      });
    }
  }

  async close(): Promise<void> {
    await Promise.all(this.conns.map((c) => endClient(c.client)));
  }
}
