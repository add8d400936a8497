/**
 * Per-call abort signals (a REST request, a gRPC call) that end when the module stops, all hung
 * off one listener on the module's stop signal. A listener per call on that one shared signal
 * made every call walk every other's: Node's EventTarget keeps its listeners in a list and looks
 * for a duplicate on each add and each remove, so the cost grew with the calls in flight
 * (quadratic in them: 256 in flight in the async suite, thousands of waiting sync callers on a
 * busy site).
 *
 * @example
 *   const calls = new CallSignals(stopping);
 *   const ac = calls.open();            // ac.signal: aborted when the module stops
 *   try { await work(ac.signal); } finally { calls.end(ac); }
 */
export class CallSignals {
  private readonly live = new Set<AbortController>();

  constructor(private readonly stopping: AbortSignal) {
    stopping.addEventListener(
      'abort',
      () => {
        for (const ac of this.live) ac.abort();
        this.live.clear();
      },
      { once: true },
    );
  }

  /** A new call's controller, already aborted when the module is stopping; `end` it when the call is over. */
  open(): AbortController {
    const ac = new AbortController();
    if (this.stopping.aborted) ac.abort();
    else this.live.add(ac);
    return ac;
  }

  end(ac: AbortController): void {
    this.live.delete(ac);
  }

  /** Calls open now. */
  get size(): number {
    return this.live.size;
  }
}
