/**
 * Token buckets: a rate per second with bursts up to that many. Used for new connections per IP,
 * frames per connection and API requests per key.
 */

/** One bucket: `rate` tokens per second, holding at most `rate`. */
export class Bucket {
  #tokens: number;
  #last: number;

  constructor(readonly rate: number, now = Date.now()) {
    this.#tokens = rate;
    this.#last = now;
  }

  /** Takes a token if there is one. A rate of 0 means no limit. */
  take(now = Date.now()): boolean {
    if (this.rate === 0) return true;
    this.#tokens = Math.min(this.rate, this.#tokens + (now - this.#last) * this.rate / 1000);
    this.#last = now;
    if (this.#tokens < 1) return false;
    this.#tokens--;
    return true;
  }

  /** Whether the bucket has refilled completely, so forgetting it changes nothing. */
  full(now = Date.now()): boolean {
    return this.#tokens + (now - this.#last) * this.rate / 1000 >= this.rate;
  }
}

/**
 * Buckets by key (an IP, an API key). Full buckets are forgotten once the map holds more than
 * `sweepAt` keys, so the map stays bounded by the keys active within about a second.
 */
export class RateLimiter {
  readonly #buckets = new Map<string, Bucket>();

  constructor(readonly rate: number, private readonly sweepAt = 10_000) {}

  /** Takes a token for `key`; false means the key is over its rate. */
  take(key: string, now = Date.now()): boolean {
    if (this.rate === 0) return true;
    let bucket = this.#buckets.get(key);
    if (!bucket) {
      if (this.#buckets.size >= this.sweepAt) this.#sweep(now);
      this.#buckets.set(key, bucket = new Bucket(this.rate, now));
    }
    return bucket.take(now);
  }

  /** Keys tracked now. */
  get size(): number {
    return this.#buckets.size;
  }

  #sweep(now: number): void {
    for (const [key, bucket] of this.#buckets) if (bucket.full(now)) this.#buckets.delete(key);
  }
}
