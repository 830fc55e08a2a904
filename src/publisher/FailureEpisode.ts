/**
 * Delivery failure episodes, for the log: an episode starts when rows are first left to the
 * retransmitter (postponed) after requests failed, and ends at the next successful request. Its
 * start is one warning naming the cause; further postponements are only counted (debug) until its
 * end, which logs the counts. An outage of the ingest service is two lines, not one per batch.
 */
import { Clock, Effect } from "effect"
import type { TransportError } from "../Transport.ts"

export interface Episode {
  readonly startedAt: number
  /** Failed requests since the last success (including those before the episode started). */
  failedRequests: number
  postponedRows: number
  postponements: number
}

/** Since the last successful request: failures counted, and the episode if rows were postponed. */
export interface EpisodeState {
  failedRequests: number
  episode: Episode | undefined
}

/** What the end of an episode logs. */
export const summary = (episode: Episode, now: number) => ({
  failedRequests: episode.failedRequests,
  postponedRows: episode.postponedRows,
  postponements: episode.postponements,
  durationMs: now - episode.startedAt
})

/** Why rows are postponed, with the last error seen, if any: the warning names the cause. */
export const withCause = (why: string, lastError: TransportError | undefined): string =>
  lastError === undefined ? why : `${why}; last error: ${lastError.reason}`

export interface FailureEpisodes {
  /** A request failed (cheap: counted). */
  readonly failure: () => void
  /** A request succeeded: ends the episode, if one is open (a plain check otherwise). */
  readonly success: Effect.Effect<void>
  /** Rows were left to the retransmitter: warns when this starts an episode, counts otherwise. */
  readonly postponed: (rows: number, why: string) => Effect.Effect<void>
}

export const make = (): FailureEpisodes => {
  const state: EpisodeState = { failedRequests: 0, episode: undefined }
  const ended = (episode: Episode) =>
    Effect.flatMap(Clock.currentTimeMillis, (now) => Effect.logWarning("delivery succeeds again: the failure episode is over", summary(episode, now)))
  return {
    failure: () => {
      state.failedRequests++
      if (state.episode !== undefined) state.episode.failedRequests++
    },
    success: Effect.suspend(() => {
      if (state.failedRequests === 0 && state.episode === undefined) return Effect.void
      const episode = state.episode
      state.failedRequests = 0
      state.episode = undefined
      return episode === undefined ? Effect.void : ended(episode)
    }),
    postponed: (rows, why) =>
      Effect.withFiber((fiber) => {
        const open = state.episode
        if (open !== undefined) {
          open.postponedRows += rows
          open.postponements++
          return Effect.logDebug("delivery postponed: rows left to the retransmitter", { count: rows, why })
        }
        const startedAt = fiber.getRef(Clock.Clock).currentTimeMillisUnsafe()
        state.episode = { startedAt, failedRequests: state.failedRequests, postponedRows: rows, postponements: 1 }
        return Effect.logWarning(
          "delivery postponed: rows left to the retransmitter; further postponements are counted until a request succeeds",
          { count: rows, why }
        )
      })
  }
}
