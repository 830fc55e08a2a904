/**
 * Push-back is the server's word to every client, not to one request: when a reply carries
 * push-back (`grpc-retry-pushback-ms`, a RetryInfo detail, `Retry-After`), no sender starts a
 * request to that endpoint before it ends, as Kafka's clients mute the connection for
 * `throttle_time_ms` (KIP-219). One gate per Publisher (one Transport, one endpoint); every sender
 * passes it before each request; the longest push-back wins. Time is Effect's Clock.
 */
import { Clock, Effect } from "effect"

export interface PushBackGate {
  /** Whether a push-back may be in force: a plain read, for the hot path. */
  readonly closed: () => boolean
  /** Waits until no push-back is in force (at once when none is). */
  readonly pass: Effect.Effect<void>
  /** The server asked for `ms` of quiet, from now; a shorter push-back never shortens a longer one. */
  readonly hold: (ms: number) => Effect.Effect<void>
}

export const make = (): PushBackGate => {
  /** Clock time the push-back in force ends at; 0 when there is none. */
  let until = 0
  const waitOut: Effect.Effect<void> = Effect.flatMap(Clock.currentTimeMillis, (now) => {
    if (now >= until) {
      until = 0
      return Effect.void
    }
    // Passed again after the sleep: a longer push-back may have arrived meanwhile.
    return Effect.andThen(Effect.sleep(until - now), pass)
  })
  const pass: Effect.Effect<void> = Effect.suspend(() => until === 0 ? Effect.void : waitOut)
  return {
    closed: () => until !== 0,
    pass,
    hold: (ms) =>
      ms > 0 ? Effect.map(Clock.currentTimeMillis, (now) => void (until = Math.max(until, now + ms))) : Effect.void
  }
}
