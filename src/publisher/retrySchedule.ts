/**
 * The retry policy of a sender, as an Effect Schedule: exponential from `retryBaseDelay`, ±20 %
 * jitter (as OpenTelemetry exporters do), capped at `retryMaxDelay`, never shorter than the
 * server's push-back (a server that asks for 3 s gets at least 3 s, even above the cap), and ending
 * once the next attempt would start past `retryBudget` (the rows are then left to the retransmitter).
 *
 * Override it with the Publisher's `retrySchedule` option; any Schedule over RetryInput will do.
 */
import { Duration, Effect, Schedule } from "effect"
import type { EmitterOptions } from "../Config.ts"

/** What a sender tells its schedule before each retry. */
export interface RetryInput {
  /** The server's push-back on the failed request (Retry-After, grpc-retry-pushback-ms, RetryInfo). */
  readonly retryAfterMs: number | undefined
  /** Since the batch's first attempt started. */
  readonly elapsedMs: number
}

export type RetrySchedule = Schedule.Schedule<unknown, RetryInput>

export type RetryScheduleOptions = Pick<EmitterOptions, "retryBaseDelayMs" | "retryMaxDelayMs" | "retryBudgetMs">

export const retrySchedule = (options: RetryScheduleOptions): RetrySchedule => {
  const cap = Duration.millis(options.retryMaxDelayMs)
  return Schedule.exponential(Duration.millis(options.retryBaseDelayMs)).pipe(
    // Capped before the jitter too: 2^attempt grows without bound.
    Schedule.modifyDelay(({ duration }) => Effect.succeed(Duration.min(duration, cap))),
    Schedule.jittered,
    Schedule.setInputType<RetryInput>(),
    Schedule.modifyDelay(({ duration, input }) =>
      Effect.succeed(Duration.max(Duration.min(duration, cap), Duration.millis(input.retryAfterMs ?? 0)))
    ),
    Schedule.while(({ duration, input }) => input.elapsedMs + Duration.toMillis(duration) <= options.retryBudgetMs)
  )
}
