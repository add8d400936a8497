/**
 * Where an MQTT session connects and the socket it connects with. mqtt.js's own TCP and TLS
 * builders leave Nagle on, and without TCP_NODELAY a 0.2 ms round trip becomes ~40 ms (Nagle +
 * delayed ACK, docs/architecture.md#performance-decisions), so TCP and TLS sockets are opened
 * here; WebSocket URLs keep mqtt.js's builder (the socket under it gets TCP_NODELAY once open).
 */
import net from 'node:net';
import tls from 'node:tls';
import { holdWritesPerTurn } from './write-hold.js';

export interface BrokerAddress {
  scheme: string;
  host: string;
  port: number;
  tls: boolean;
  /** ws:// or wss://: mqtt.js builds the stream. */
  websocket: boolean;
}

/** Where a session connects, without credentials: safe to log. */
export function brokerAddress(url: string): BrokerAddress {
  const u = new URL(url);
  const websocket = u.protocol === 'ws:' || u.protocol === 'wss:';
  const secure = u.protocol === 'mqtts:' || u.protocol === 'tls:' || u.protocol === 'ssl:' || u.protocol === 'wss:';
  // URL keeps IPv6 literals in brackets; net wants them bare
  const host = u.hostname.replace(/^\[(.*)\]$/, '$1') || 'localhost';
  const defaultPort = websocket ? (secure ? 443 : 80) : secure ? 8883 : 1883;
  return { scheme: u.protocol.slice(0, -1), host, port: u.port ? Number(u.port) : defaultPort, tls: secure, websocket };
}

/** A TCP or TLS socket to `address` with TCP_NODELAY set, its writes held per turn (write-hold.ts). */
export function openSocket(address: BrokerAddress): net.Socket {
  const { host, port } = address;
  if (address.tls) {
    const socket = tls.connect({ host, port, servername: net.isIP(host) ? undefined : host });
    socket.setNoDelay(true);
    return holdWritesPerTurn(socket);
  }
  return holdWritesPerTurn(net.createConnection({ host, port, noDelay: true }));
}

/** The URL without credentials, for logs. */
export function redactUrl(url: string): string {
  try {
    const u = new URL(url);
    u.username = '';
    u.password = '';
    return u.toString();
  } catch {
    return '(invalid url)';
  }
}
