/**
 * Store writes after a delivery (deletes of acknowledged rows, dead letters) are retried on a
 * Schedule; if they still fail the rows stay in the table: a later duplicate, never a loss. Answers
 * whether the write happened.
 */
import { Cause, Effect, Schedule } from "effect"

/** A few quick retries: 50, 100, 200, 400, 800 ms. */
export const storeWriteSchedule: Schedule.Schedule<unknown> = Schedule.exponential("50 millis").pipe(Schedule.upTo({ times: 5 }))

export const storeWrite = <A, E>(operation: string, effect: Effect.Effect<A, E>, schedule: Schedule.Schedule<unknown, E> = storeWriteSchedule): Effect.Effect<boolean> =>
  effect.pipe(
    Effect.retry(schedule),
    Effect.as(true),
    Effect.catchCause((cause) =>
      Effect.as(Effect.logError(`${operation} failed; the rows stay and will be sent again`, { cause: Cause.pretty(cause) }), false)
    )
  )
