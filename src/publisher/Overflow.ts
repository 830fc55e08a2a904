/**
 * What becomes of committed events the publish queue has no room for. Nothing may wait out a lease
 * nobody holds: their rows are released (made due now, `Store.reschedule`) so that the
 * retransmitter of this process or of any other claims them as soon as a queue has room.
 * The retransmitter claims only what its queue can take, so a released row is not claimed (and its
 * new lease does not run) while the queue stays full.
 *
 * Releases are coalesced by one fiber (`deleteBatchSize` rows per statement) from a bounded list;
 * rows that do not fit in it, or whose release fails, keep their first lease (counted).
 * An episode (from the first event the queue refused until the queue is next empty) logs one
 * warning when it starts and one when it ends, with its totals.
 */
import { Clock, Effect, Metric, Queue, type Scope } from "effect"
import type { EmitterOptions } from "../Config.ts"
import * as Metrics from "../Metrics.ts"
import type { Store, StoredEvent } from "../Store.ts"
import { storeWrite } from "./storeWrite.ts"
import * as TakeBatch from "./takeBatch.ts"

export type OverflowOptions = Pick<EmitterOptions, "publishQueueCapacity" | "deleteBatchSize">

export interface Overflow {
  /** Events the queue refused: counted and queued for release. Never waits. */
  readonly spill: (events: ReadonlyArray<StoredEvent>) => Effect.Effect<void>
  /** The queue was seen empty: ends the episode, if one is open. Cheap: called per batch. */
  readonly drained: () => Effect.Effect<void>
}

/** One full-queue episode's counts. */
interface Episode {
  readonly startedAt: number
  overflowed: number
  /** Did not fit in the release list: they keep their first lease. */
  unreleased: number
}

/**
 * The claims a refused row has had: none. It came from the fast path (the Sequencer, the outbox's
 * promoter); a row claimed since it was refused (its first lease ran out while the release waited)
 * belongs to that claimer, and releasing it would let a second sender take it.
 */
const fastPathAttempts = 0

/** How many overflowed row ids wait for release at most (ids only: a few MB at most). */
const releaseCapacity = (options: OverflowOptions) => Math.max(10_000, options.publishQueueCapacity * 4)

export const make = (options: OverflowOptions, store: Store["Service"]): Effect.Effect<Overflow, never, Scope.Scope> =>
  Effect.gen(function*() {
    const releases = yield* Queue.bounded<bigint>(releaseCapacity(options))
    const limits: TakeBatch.BatchLimits<bigint> = { maxWeight: options.deleteBatchSize, lingerMs: 0 }
    /** Owned by `spill` and `drained` (both synchronous steps): the episode in progress. */
    const state: { episode: Episode | undefined } = { episode: undefined }

    const release = (ids: ReadonlyArray<bigint>) =>
      Effect.gen(function*() {
        const now = yield* Clock.currentTimeMillis
        const released = yield* storeWrite("release overflowed rows", store.reschedule(ids, now, "publish queue full", fastPathAttempts))
        if (!released) yield* Metric.update(Metrics.overflowUnreleased, ids.length)
      })
    yield* Effect.forkScoped(Effect.forever(Effect.flatMap(TakeBatch.take(releases, limits), (batch) => release(batch.items))))

    const spill = (events: ReadonlyArray<StoredEvent>): Effect.Effect<void> =>
      Effect.withFiber((fiber) => {
        let unreleased = 0
        for (const event of events) if (!Queue.offerUnsafe(releases, event.rowId)) unreleased++
        const counted = Effect.andThen(
          Metric.update(Metrics.queueFull, events.length),
          unreleased > 0 ? Metric.update(Metrics.overflowUnreleased, unreleased) : Effect.void
        )
        const open = state.episode
        if (open !== undefined) {
          open.overflowed += events.length
          open.unreleased += unreleased
          return counted
        }
        state.episode = { startedAt: fiber.getRef(Clock.Clock).currentTimeMillisUnsafe(), overflowed: events.length, unreleased }
        return Effect.andThen(counted, Effect.logWarning(
          "publish queue full: committed events are released to the retransmitter (claimable now) until the queue drains",
          { overflowed: events.length, capacity: options.publishQueueCapacity }
        ))
      })

    const drained = (): Effect.Effect<void> => {
      const episode = state.episode
      if (episode === undefined) return Effect.void
      state.episode = undefined
      return Effect.flatMap(Clock.currentTimeMillis, (now) =>
        Effect.logWarning("publish queue has room again: the full-queue episode is over", {
          overflowed: episode.overflowed,
          keptTheirLease: episode.unreleased,
          durationMs: now - episode.startedAt
        }))
    }

    return { spill, drained }
  })
