/**
 * MQTT over WebSocket on the web port (`/mqtt` by default; seed 004's agent client connects over
 * WebSocket, and many sites let only HTTPS out).
 *
 * Why the hand-over goes through the bus: modules never import one another, and the web module
 * owns the HTTP port while the broker module owns aedes. So the web module does only the HTTP
 * part (the upgrade and the WebSocket handshake, subprotocol `mqtt`), turns the WebSocket into a
 * byte stream and hands that stream to whoever answers `BROKER.wsConnection` — the embedded
 * broker, which runs it through exactly the same aedes instance as a TCP socket: the same
 * CONNECT authentication, ACL, rate limit and packet limit, no second code path. The bus is
 * in-process for inner modules, so the stream object passes as it is. Without an embedded broker
 * nobody answers, and the WebSocket is closed with 1011 and a reason (an external broker brings
 * its own WebSocket listener; see the README).
 */
import type { IncomingMessage } from 'node:http';
import type { Duplex } from 'node:stream';
import { createWebSocketStream, type WebSocket, WebSocketServer } from 'ws';
import type { ModuleBus } from '../../core/bus.js';
import type { Logger } from '../../core/log.js';
import { BROKER, type BrokerWsConnection } from '../broker/contract/topics.js';

/** MQTT over WebSocket names its subprotocol `mqtt` (MQTT 3.1.1 §6) or `mqttv3.1` (3.1). */
const SUBPROTOCOLS = ['mqtt', 'mqttv3.1'];
/** The hand-over is one in-process request; a broker that does not answer in this time is not there. */
const HANDOVER_TIMEOUT_MS = 5_000;

export class MqttWsGate {
  private readonly wss: WebSocketServer;
  private readonly open = new Set<WebSocket>();
  private closed = false;

  constructor(
    private readonly bus: ModuleBus,
    private readonly log: Logger,
    /** The broker's own max_packet_bytes bounds MQTT packets; this bounds one WebSocket frame. */
    maxFrameBytes: number,
  ) {
    this.wss = new WebSocketServer({
      noServer: true,
      maxPayload: maxFrameBytes,
      perMessageDeflate: false,
      handleProtocols: (protocols) => SUBPROTOCOLS.find((p) => protocols.has(p)) ?? false,
    });
  }

  get size(): number {
    return this.open.size;
  }

  /** The HTTP server's 'upgrade' for the MQTT path (the caller checked the path). */
  onUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer): void {
    if (this.closed) {
      socket.end('HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nContent-Length: 0\r\n\r\n');
      return;
    }
    this.wss.handleUpgrade(req, socket, head, (ws) => this.accept(ws, req));
  }

  private accept(ws: WebSocket, req: IncomingMessage): void {
    if (this.closed) {
      ws.close(1001, 'server stopping');
      return;
    }
    this.open.add(ws);
    ws.once('close', () => this.open.delete(ws));
    const stream = createWebSocketStream(ws);
    // a reset peer must not become an unhandled 'error'; aedes sees the close
    stream.on('error', (err) => this.log.debug({ err: err.message }, 'MQTT WebSocket stream error'));
    const remote = req.socket.remoteAddress ?? '';
    const handover: BrokerWsConnection = { stream, remote_address: remote };
    this.bus.request(BROKER.wsConnection, handover, { timeoutMs: HANDOVER_TIMEOUT_MS }).then(
      () => this.log.debug({ remote }, 'MQTT over WebSocket handed to the broker'),
      (err: Error & { code?: string }) => {
        this.log.warn({ code: err.code, err: err.message }, 'MQTT over WebSocket refused: no embedded broker answered');
        ws.close(1011, 'no embedded MQTT broker on this hub');
        stream.destroy();
      },
    );
  }

  /** Stops accepting and closes the MQTT WebSocket connections this module opened. */
  close(): void {
    this.closed = true;
    for (const ws of this.open) ws.terminate();
    this.open.clear();
    this.wss.close();
  }
}
