/**
 * A client-side retry throttle, as gRPC's `retryThrottling` (gRFC A6): a token bucket of
 * `maxTokens`; each failed request takes 1 token, each successful one gives back `tokenRatio`;
 * a failed request is retried only while more than half the tokens are left. When most requests
 * fail, retries stop (the rows are left to the retransmitter, which claims them again when their
 * lease ends) instead of multiplying the load on a struggling server; they resume once enough
 * requests succeed. Tokens are counted in thousandths, as gRPC does, so 0.1 steps add up exactly.
 */

export interface RetryThrottleOptions {
  /** The bucket's size (gRPC allows up to 1000). */
  readonly maxTokens: number
  /** What a successful request gives back (gRPC: up to 3 decimals). */
  readonly tokenRatio: number
}

export const defaultRetryThrottle: RetryThrottleOptions = { maxTokens: 10, tokenRatio: 0.1 }

const milli = (tokens: number) => Math.round(tokens * 1000)

/** A full bucket, in thousandths of a token. */
export const full = (options: RetryThrottleOptions): number => milli(options.maxTokens)

export const afterFailure = (tokens: number): number => Math.max(0, tokens - 1000)

export const afterSuccess = (tokens: number, options: RetryThrottleOptions): number =>
  Math.min(full(options), tokens + milli(options.tokenRatio))

export const allowsRetry = (tokens: number, options: RetryThrottleOptions): boolean => tokens > full(options) / 2

/** One bucket shared by every sender of a Publisher (plain synchronous steps: no fiber waits on it). */
export interface RetryThrottle {
  readonly failure: () => void
  readonly success: () => void
  readonly allowsRetry: () => boolean
}

export const make = (options: RetryThrottleOptions = defaultRetryThrottle): RetryThrottle => {
  let tokens = full(options)
  return {
    failure: () => void (tokens = afterFailure(tokens)),
    success: () => {
      if (tokens < full(options)) tokens = afterSuccess(tokens, options)
    },
    allowsRetry: () => allowsRetry(tokens, options)
  }
}
