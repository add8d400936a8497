import { ProviderRegistry } from '../core/registry.js';
// every domain's error codes, registered before any module runs (the bus's refusal test reads them)
import './contracts.js';
import { provider as agent } from './agent/index.js';
import { provider as audit } from './audit/index.js';
import { provider as broker } from './broker/index.js';
import { provider as command } from './command/index.js';
import { provider as grpc } from './grpc/index.js';
import { provider as jobs } from './jobs/index.js';
import { provider as mqttBridge } from './mqtt-bridge/index.js';
import { provider as status } from './status/index.js';
import { provider as web } from './web/index.js';

/**
 * Every built-in (`type: inner`) module provider. Adding a module: a folder under modules/
 * with an index.ts exporting its provider, one line here, one block in config.yml.
 */
export function builtinProviders(): ProviderRegistry {
  return new ProviderRegistry()
    .register(broker)
    .register(mqttBridge)
    .register(status)
    .register(command)
    .register(jobs)
    .register(audit)
    .register(web)
    .register(grpc)
    .register(agent);
}
