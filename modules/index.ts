import { ProviderRegistry } from '../core/registry.js';

/**
 * Every built-in (`type: inner`) module provider. Adding a module: a folder under modules/
 * with an index.ts exporting its provider, one line here, one block in config.yml.
 */
export function builtinProviders(): ProviderRegistry {
  return new ProviderRegistry();
}
