/**
 * The host's "ready" phase: reached once, when every enabled module of the first start has
 * started. Modules wait for it through `ctx.onReady` (core/context.ts) to open a flow of outside
 * input only when every module that consumes it is up. It is never left: an instance started
 * later (a restart, a reload) finds it reached and is told at once.
 */
export class ReadyPhase {
  private done = false;
  private readonly waiting = new Set<() => void>();

  get reached(): boolean {
    return this.done;
  }

  /** Runs `fn` once the phase is reached (in a microtask when it already is); the result cancels the wait. */
  wait(fn: () => void): () => void {
    if (this.done) {
      let cancelled = false;
      queueMicrotask(() => {
        if (!cancelled) fn();
      });
      return () => {
        cancelled = true;
      };
    }
    this.waiting.add(fn);
    return () => this.waiting.delete(fn);
  }

  reach(): void {
    if (this.done) return;
    this.done = true;
    const fns = [...this.waiting];
    this.waiting.clear();
    for (const fn of fns) fn();
  }
}
