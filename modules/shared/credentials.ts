import { createHmac } from 'node:crypto';

/**
 * An agent's MQTT password is derived from its project secret, so provisioning hands out one
 * secret and rotating it rotates both; the broker never needs the secret on the wire.
 * password = lowercase hex HMAC-SHA256(secret, "mqtt:" + project_id); username = project_id.
 */
export function deriveMqttPassword(projectId: string, secret: string): string {
  return createHmac('sha256', secret).update(`mqtt:${projectId}`).digest('hex');
}
