import { HubError } from './errors.js';
import type { ModuleProvider } from './module.js';

/** Providers keyed by name; an unknown name fails at load naming the config key. (docs/conventions.md#a-registry-keyed-by-name) */
export class ProviderRegistry {
  private readonly providers = new Map<string, ModuleProvider<unknown>>();

  // biome-ignore lint/suspicious/noExplicitAny: providers of any settings type live in one map
  register(provider: ModuleProvider<any>): this {
    if (this.providers.has(provider.name)) {
      throw new HubError('HOST_ERR_UNKNOWN_MODULE', `provider ${provider.name} is registered twice`);
    }
    this.providers.set(provider.name, provider as ModuleProvider<unknown>);
    return this;
  }

  has(name: string): boolean {
    return this.providers.has(name);
  }

  names(): string[] {
    return [...this.providers.keys()];
  }

  resolve(name: string, configPath: string): ModuleProvider<unknown> {
    const p = this.providers.get(name);
    if (!p) {
      throw new HubError(
        'HOST_ERR_UNKNOWN_MODULE',
        `${configPath}: no module provider named "${name}" (known: ${this.names().join(', ') || 'none'})`,
        { path: configPath },
      );
    }
    return p;
  }
}
