/**
 * A token bucket: `burst` tokens at most, refilled at `perSecond`. One token per message; a
 * message that finds the bucket empty is over the limit. O(1), no timers: refilled lazily from
 * the clock on each take.
 *
 * @example
 *   const b = new TokenBucket(2000, 4000, Date.now());
 *   if (!b.take(Date.now())) shed(packet);
 */
export class TokenBucket {
  private tokens: number;
  private last: number;
  private readonly perMs: number;

  constructor(
    perSecond: number,
    private readonly burst: number,
    now: number,
  ) {
    this.perMs = perSecond / 1000;
    this.tokens = burst;
    this.last = now;
  }

  take(now: number): boolean {
    if (now > this.last) {
      this.tokens = Math.min(this.burst, this.tokens + (now - this.last) * this.perMs);
      this.last = now;
    }
    if (this.tokens < 1) return false;
    this.tokens -= 1;
    return true;
  }
}
