/**
 * The delay before retry `attempt` (1-based): exponential from `baseMs`, capped at `maxMs`, with
 * ±20 % jitter (as OpenTelemetry exporters do), and never below the server's push-back: a server
 * that asks for 3 s gets at least 3 s, even above the cap.
 */
export interface BackoffOptions {
  readonly baseMs: number
  readonly maxMs: number
}

/** `random` is in [0, 1): Effect's Random, so tests can fix it. */
export const retryDelayMs = (attempt: number, options: BackoffOptions, pushBackMs: number | undefined, random: number): number => {
  const exponential = Math.min(options.maxMs, options.baseMs * 2 ** Math.min(attempt - 1, 30))
  const jittered = Math.min(options.maxMs, exponential * (0.8 + 0.4 * random))
  return Math.max(jittered, pushBackMs ?? 0)
}
