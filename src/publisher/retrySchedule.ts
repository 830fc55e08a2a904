/**
 * The retry policy of a sender, as an Effect Schedule: exponential from `retryBaseDelay`, ±20 %
 * jitter (as OpenTelemetry exporters do), capped at `retryMaxDelay`, never shorter than the
 * server's push-back (a server that asks for 3 s gets at least 3 s, even above the cap), and ending
 * once the next attempt would start past `retryBudget` (the rows are then left to the retransmitter).
 *
 * Override it with any Schedule over RetryInput: provide `RetryPolicy` under the emitter's layer
 * (`DurableEmitter.layerWith(options).pipe(Layer.provide(RetryPolicy.layer(schedule)))`), or give
 * `Publisher.layer` its `retrySchedule` option.
 */
import { Context, Duration, Effect, Layer, Schedule } from "effect"
import type { EmitterOptions } from "../Config.ts"

/** What a sender tells its schedule before each retry. */
export interface RetryInput {
  /** The server's push-back on the failed request (Retry-After, grpc-retry-pushback-ms, RetryInfo). */
  readonly retryAfterMs: number | undefined
  /** Since the batch's first attempt started. */
  readonly elapsedMs: number
}

export type RetrySchedule = Schedule.Schedule<unknown, RetryInput>

/**
 * The retry policy the emitter's layers use instead of the one built from retryBaseDelay,
 * retryMaxDelay and retryBudget; none by default. A Context reference (a Schedule is code, not
 * configuration: it has no place in the option table or the environment).
 */
export const RetryPolicy = Object.assign(
  Context.Reference<RetrySchedule | undefined>("durable-emitter/RetryPolicy", { defaultValue: () => undefined }),
  {
    /** Provides `schedule` as the retry policy of every emitter layer built under it. */
    layer: (schedule: RetrySchedule): Layer.Layer<never> => Layer.succeed(RetryPolicy, schedule)
  }
)

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
