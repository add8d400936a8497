/**
 * Closes a server in two steps: `close` stops accepting and lets running calls finish; if it has
 * not finished within `graceMs`, `force` cuts what is still open, and the close then completes.
 * Resolves once `close` has, saying whether `force` was needed.
 *
 * @example
 *   await closeWithGrace(cfg.close_grace_ms, () => app.close(), () => app.server.closeAllConnections());
 */
export async function closeWithGrace(
  graceMs: number,
  close: () => Promise<void>,
  force: () => void,
): Promise<'graceful' | 'forced'> {
  let forced = false;
  const timer = setTimeout(() => {
    forced = true;
    force();
  }, graceMs);
  try {
    await close();
  } finally {
    clearTimeout(timer);
  }
  return forced ? 'forced' : 'graceful';
}
