/**
 * A token bucket: `burst` tokens at most, refilled at `perSecond`. One token per message; a
 * message that finds the bucket empty is over the limit. O(1), no timers: refilled lazily from
 * the clock on each take. The one rate limiter of the hub: the broker's per-connection rate and
 * denial reports, status's fleet-wide `reregister` asks and per-project refusal answers.
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
    this.refill(now);
    if (this.tokens < 1) return false;
    this.tokens -= 1;
    return true;
  }

  /** Whether the bucket is back to its burst, so forgetting it changes nothing (a map of buckets drops these). */
  full(now: number): boolean {
    this.refill(now);
    return this.tokens >= this.burst;
  }

  private refill(now: number): void {
    if (now > this.last) {
      this.tokens = Math.min(this.burst, this.tokens + (now - this.last) * this.perMs);
      this.last = now;
    }
  }
}
