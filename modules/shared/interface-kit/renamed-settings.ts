import { z } from 'zod';
import type { Logger } from '../../../core/log.js';
import { interfaceSettings } from './settings.js';

/**
 * Settings renamed so that web and grpc use one name each (issue 12): old name → new name. The
 * old names are still read, with one warning when the module starts on them.
 */
export const RENAMED_SETTINGS = {
  sync_wait_ms_max: 'max_sync_wait_ms',
  stop_grace_ms: 'close_grace_ms',
} as const;

export type OldSettingName = keyof typeof RENAMED_SETTINGS;
export type NewSettingName = (typeof RENAMED_SETTINGS)[OldSettingName];

/** The zod shape of a module's old names (each a number, validated like its new name). */
export function oldSettingNames<const O extends OldSettingName>(
  names: readonly O[],
): { [K in O]: z.ZodOptional<z.ZodNumber> } {
  return Object.fromEntries(names.map((n) => [n, interfaceSettings[RENAMED_SETTINGS[n]]])) as {
    [K in O]: z.ZodOptional<z.ZodNumber>;
  };
}

type Renamable = { [K in NewSettingName]?: number } & { [K in OldSettingName]?: number };
export type Resolved<T> = Omit<T, OldSettingName | NewSettingName> & { [K in NewSettingName]: number };

/** The old names each parsed config was given in, until the module has warned about them. */
const usedOldNames = new WeakMap<object, OldSettingName[]>();

/**
 * A zod transform for a module schema: each renamed setting takes its new name's value, else its
 * old name's, else `defaults`; the old names leave the parsed config. A block that sets both
 * names of one setting is refused (which one was meant is not known).
 *
 * @example
 *   z.object({ ...interfaceSettings, ...oldSettingNames(['stop_grace_ms']) })
 *     .strict()
 *     .transform(resolveRenamed({ max_sync_wait_ms: 600_000, close_grace_ms: 2_000 }));
 */
export function resolveRenamed(defaults: { [K in NewSettingName]: number }) {
  return <T extends Renamable>(v: T, ctx: z.RefinementCtx): Resolved<T> => {
    const out: Record<string, unknown> = { ...v };
    const used: OldSettingName[] = [];
    for (const [old, now] of Object.entries(RENAMED_SETTINGS) as [OldSettingName, NewSettingName][]) {
      const oldValue = v[old];
      delete out[old];
      if (oldValue !== undefined && v[now] !== undefined) {
        ctx.addIssue({ code: 'custom', path: [old], message: `renamed to ${now}, which is set too: keep only ${now}` });
        return z.NEVER;
      }
      if (oldValue !== undefined) used.push(old);
      out[now] = v[now] ?? oldValue ?? defaults[now];
    }
    if (used.length > 0) usedOldNames.set(out, used);
    return out as Resolved<T>;
  };
}

/**
 * Logs one warning per old name the config was given in, naming the old and the new key; once
 * per parsed config (a restart of the module on the same config does not repeat it).
 */
export function warnRenamedSettings(cfg: object, log: Logger, moduleName: string): void {
  const used = usedOldNames.get(cfg);
  if (!used) return;
  usedOldNames.delete(cfg);
  for (const old of used) {
    const now = RENAMED_SETTINGS[old];
    log.warn(
      { key: `modules.${moduleName}.${old}`, use: `modules.${moduleName}.${now}` },
      `modules.${moduleName}.${old} is deprecated: it is read as ${now}; rename it in the config file`,
    );
  }
}
