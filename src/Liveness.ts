/**
 * Where every background loop reports its ticks and failures, so `Emitter.health` can tell a
 * stuck or failing loop from a quiet one.
 */
import { Cause, Clock, Context, Duration, Effect, Layer, Schedule } from "effect"

export interface LoopState {
  /** How often the loop is expected to tick, ms (a loop silent for 3 intervals is stuck). */
  readonly intervalMs: number
  readonly startedAt: number
  readonly lastSuccessAt: number | undefined
  readonly consecutiveFailures: number
  readonly lastError: string | undefined
}

export interface LoopReporter {
  readonly success: Effect.Effect<void>
  readonly failure: (error: unknown) => Effect.Effect<void>
}

export class Liveness extends Context.Service<Liveness, {
  /** Registers a loop and returns how it reports. */
  readonly register: (name: string, intervalMs: number) => Effect.Effect<LoopReporter>
  readonly loops: Effect.Effect<ReadonlyMap<string, LoopState>>
}>()("durable-emitter/Liveness") {
  static readonly layer: Layer.Layer<Liveness> = Layer.sync(Liveness, () => {
    const loops = new Map<string, LoopState>()
    const update = (name: string, f: (s: LoopState, now: number) => LoopState) =>
      Effect.map(Clock.currentTimeMillis, (now) => {
        const state = loops.get(name)
        if (state !== undefined) loops.set(name, f(state, now))
      })
    return Liveness.of({
      register: (name, intervalMs) =>
        Effect.map(Clock.currentTimeMillis, (now) => {
          loops.set(name, { intervalMs, startedAt: now, lastSuccessAt: undefined, consecutiveFailures: 0, lastError: undefined })
          return {
            success: update(name, (s, at) => ({ ...s, lastSuccessAt: at, consecutiveFailures: 0, lastError: undefined })),
            failure: (error) =>
              update(name, (s) => ({
                ...s,
                consecutiveFailures: s.consecutiveFailures + 1,
                lastError: error instanceof Error ? error.message : String(error)
              }))
          }
        }),
      loops: Effect.sync(() => new Map(loops))
    })
  })
}

/**
 * The schedule of a background loop: after each tick wait `intervalMs`, or nothing when the tick
 * says there is more work (`true`: "run again now").
 */
export const loopSchedule = (intervalMs: number): Schedule.Schedule<unknown, boolean> =>
  Schedule.spaced(Duration.millis(intervalMs)).pipe(
    Schedule.setInputType<boolean>(),
    Schedule.modifyDelay(({ duration, input }) => Effect.succeed(input ? Duration.zero : duration))
  )

/**
 * Runs `tick` forever in a loop named `name`, repeated on `loopSchedule(intervalMs)`. A failing
 * tick is reported and logged, and the loop goes on; it never dies of a failure.
 */
export const runLoop = <E, R>(
  name: string,
  intervalMs: number,
  tick: Effect.Effect<boolean, E, R>
): Effect.Effect<never, never, R | Liveness> =>
  Effect.gen(function*() {
    const reporter = yield* (yield* Liveness).register(name, intervalMs)
    const reported = tick.pipe(
      Effect.tap(() => reporter.success),
      Effect.catchCause((cause) =>
        Effect.logWarning(`${name} loop failed; retrying`, { cause: Cause.pretty(cause) }).pipe(
          Effect.andThen(reporter.failure(Cause.squash(cause))),
          Effect.as(false)
        )
      )
    )
    return yield* Effect.andThen(Effect.repeat(reported, loopSchedule(intervalMs)), Effect.never)
  }).pipe(Effect.annotateLogs({ loop: name }))
