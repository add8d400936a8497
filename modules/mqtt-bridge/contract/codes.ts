/**
 * The mqtt-bridge module's error codes (MQTT.publish and the bridge's session).
 * Each code's HTTP and gRPC status and whether it is a caller's mistake, declared once
 * (core/errors.ts `defineCodes`); REST, gRPC and the bus read them from here.
 */
import { type CodesOf, defineCodes } from '../../../core/errors.js';

export const MQTT_CODES = defineCodes({
  /** no broker connection within the publish wait, or the bridge is stopping: retry */
  MQTT_ERR_OFFLINE: { http: 503, grpc: 'UNAVAILABLE' },
  /** the broker did not acknowledge a publish in time, or refused it */
  MQTT_ERR_PUBLISH: { http: 500, grpc: 'INTERNAL' },
  /** a publish request the bridge refuses (topic, payload) */
  MQTT_ERR_INVALID: { http: 400, grpc: 'INVALID_ARGUMENT' },
});

declare module '../../../core/errors.js' {
  interface HubErrorCodes extends CodesOf<typeof MQTT_CODES> {}
}
