import { type FSWatcher, watch } from 'node:fs';
import path from 'node:path';

export interface ConfigWatcher {
  close(): void;
}

/**
 * Calls `onChange` once per save of `file`, after `debounceMs` (default 200) of quiet.
 *
 * The directory is watched, not the file: editors save by writing a temporary file and renaming
 * it over the original, which leaves a file watch attached to the old, unlinked inode. One save
 * also fires several events (rename, change, change …), hence the debounce (a reload storm
 * otherwise). The callback does not say what changed: the caller re-reads and compares.
 *
 * @example
 *   const w = watchConfigFile('config.yml', () => host.reload(), { debounceMs: 200 });
 *   // on shutdown
 *   w.close();
 */
export function watchConfigFile(file: string, onChange: () => void, opts: { debounceMs?: number } = {}): ConfigWatcher {
  const debounceMs = opts.debounceMs ?? 200;
  const abs = path.resolve(file);
  const dir = path.dirname(abs);
  const base = path.basename(abs);
  let watcher: FSWatcher | undefined;
  let timer: NodeJS.Timeout | undefined;
  let closed = false;

  const schedule = (fn: () => void) => {
    if (timer) clearTimeout(timer);
    timer = setTimeout(() => {
      timer = undefined;
      fn();
    }, debounceMs);
  };

  const open = () => {
    watcher = watch(dir, (_event, name) => {
      // Some platforms give no file name; reloading needlessly is harmless, missing an edit is not.
      if (closed || (name != null && name.toString() !== base)) return;
      schedule(onChange);
    });
    // An 'error' (directory removed, watch limit hit) would otherwise be thrown as uncaught.
    watcher.on('error', () => {
      watcher?.close();
      watcher = undefined;
      if (!closed) schedule(reopen);
    });
  };
  // The directory may be briefly missing (renamed, restored from backup): keep trying rather than
  // go deaf, and once back, notify once since the file may have changed while we were not looking.
  const reopen = () => {
    if (closed) return;
    try {
      open();
    } catch {
      schedule(reopen);
      return;
    }
    onChange();
  };

  open(); // throws if the directory does not exist: the caller has just read the file from it
  return {
    close() {
      closed = true;
      if (timer) clearTimeout(timer);
      timer = undefined;
      watcher?.close();
      watcher = undefined;
    },
  };
}
