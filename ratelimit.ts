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
 * Buckets by key (an address, an API key), at most `capacity` of them. A key's bucket moves to the
 * back when used; a new key past the capacity evicts the least recently used one, in O(1). An
 * evicted key starts again with a full bucket, so the limit can be escaped only by keeping more
 * than `capacity` keys busy at once; keys of one IPv6 /64 are one key (see `addressKey`).
 */
export class RateLimiter {
  readonly #buckets = new Map<string, Bucket>();

  constructor(readonly rate: number, private readonly capacity = 10_000) {}

  /** Takes a token for `key`; false means the key is over its rate. */
  take(key: string, now = Date.now()): boolean {
    if (this.rate === 0) return true;
    let bucket = this.#buckets.get(key);
    if (bucket) this.#buckets.delete(key); // re-inserted below, at the back
    else {
      if (this.#buckets.size >= this.capacity) {
        this.#buckets.delete(this.#buckets.keys().next().value!);
      }
      bucket = new Bucket(this.rate, now);
    }
    this.#buckets.set(key, bucket);
    return bucket.take(now);
  }

  /** Keys tracked now. */
  get size(): number {
    return this.#buckets.size;
  }
}

/**
 * The rate-limiting key of a peer address: an IPv4 address as it is (also when IPv4-mapped), an
 * IPv6 address as its /64 prefix, since one host is routinely given a whole /64.
 */
export function addressKey(address: string): string {
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address);
  if (mapped) return mapped[1];
  if (!address.includes(":")) return address;
  const bare = address.replace(/^\[|\]$/g, "").split("%")[0]; // brackets and a zone id
  const [head, tail] = bare.split("::");
  const groups = (part: string | undefined) => part ? part.split(":") : [];
  const left = groups(head);
  const right = tail === undefined ? [] : groups(tail);
  const missing = 8 - left.length - right.length;
  const full = tail === undefined
    ? left
    : [...left, ...Array(Math.max(0, missing)).fill("0"), ...right];
  const prefix = full.slice(0, 4).map((g) => (parseInt(g, 16) || 0).toString(16));
  return `${prefix.join(":")}::/64`;
}
