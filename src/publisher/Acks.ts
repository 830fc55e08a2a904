/**
 * The delete coalescer. Senders hand it acknowledged items; one fiber takes what waits (up to
 * `deleteBatchSize`, after `deleteLinger`), deletes those rows with one `Store.delete`, and settles
 * the items as Delivered.
 *
 * A delete that fails is retried on `deleteRetrySchedule` until it succeeds or the process stops
 * (a database blip must not turn into re-sends): one warning when a failure episode starts, one
 * when it ends. Memory stays bounded: the queue is bounded and a sender waits for room, so while
 * deletes fail the publisher stops sending instead of piling up acks. What is still waiting when
 * the layer closes is settled Undeleted (counted): those rows stay and will be sent again.
 */
import { Clock, Duration, Effect, Queue, Schedule, type Scope } from "effect"
import type { EmitterOptions } from "../Config.ts"
import type { StoreError } from "../Errors.ts"
import type { Store } from "../Store.ts"
import { advance, Delivered, type Item, type Settle } from "./Item.ts"
import * as TakeBatch from "./takeBatch.ts"

export type AcksOptions = Pick<EmitterOptions, "deleteBatchSize" | "deleteLingerMs" | "publishBatchSize" | "publishConcurrency">

export interface Acks {
  /** Takes acknowledged items, waiting for room. */
  readonly offer: (items: ReadonlyArray<Item>) => Effect.Effect<void>
  /**
   * Whether this row was acknowledged and its delete has not landed yet. A row whose delete is
   * slow (a database blip, a loaded machine) comes due again when its lease ends; the
   * retransmitter must not send it a second time (measured: once in three CI runs of the crash
   * test, a row delivered twice 1.6 s apart by one process).
   */
  readonly awaitingDelete: (rowId: bigint) => boolean
}

/** 50 ms doubling to at most 2 s, with jitter, forever. */
export const deleteRetrySchedule: Schedule.Schedule<unknown, StoreError> = Schedule.exponential("50 millis").pipe(
  Schedule.modifyDelay(({ duration }) => Effect.succeed(Duration.min(duration, Duration.seconds(2)))),
  Schedule.jittered
)

const stopped: { readonly _tag: "Undeleted"; readonly why: string } = { _tag: "Undeleted", why: "the publisher stopped before the delete succeeded" }

export const make = (options: AcksOptions, store: Store["Service"], settle: Settle): Effect.Effect<Acks, never, Scope.Scope> =>
  Effect.gen(function*() {
    const queue = yield* Queue.bounded<Item>(Math.max(options.deleteBatchSize * 4, options.publishBatchSize * options.publishConcurrency))
    const limits: TakeBatch.BatchLimits<Item> = { maxWeight: options.deleteBatchSize, lingerMs: options.deleteLingerMs }
    /** Row ids from `offer` until their item is settled (bounded like the queue plus one batch). */
    const awaiting = new Set<bigint>()
    /** Every way an acknowledged item ends goes through here, so `awaiting` forgets it then. */
    const settleAcked: Settle = (items, outcome) =>
      Effect.andThen(Effect.sync(() => items.forEach((i) => awaiting.delete(i.event.rowId))), settle(items, outcome))

    /** Retries until the store answers; logs the episode's start and end. */
    const deleteRows = (ids: ReadonlyArray<bigint>) =>
      Effect.catch(store.delete(ids), (error) =>
        Effect.gen(function*() {
          const since = yield* Clock.currentTimeMillis
          yield* Effect.logWarning("deleting acknowledged rows failed; retrying until the store answers", { rows: ids.length, error: error.message })
          yield* Effect.retry(store.delete(ids), deleteRetrySchedule)
          const now = yield* Clock.currentTimeMillis
          yield* Effect.logWarning("deleting acknowledged rows works again", { rows: ids.length, failingForMs: now - since })
        }))

    const deleteBatch = (items: ReadonlyArray<Item>) =>
      deleteRows(items.map((i) => i.event.rowId)).pipe(
        Effect.andThen(settleAcked(items, Delivered)),
        Effect.catchDefect((defect) => settleAcked(items, { _tag: "Undeleted", why: `defect in the delete: ${String(defect)}` })),
        Effect.onInterrupt(() => settleAcked(items, stopped))
      )

    // Registered before the fiber is forked, so it runs after the fiber is interrupted (finalizers
    // run in reverse order): the acks still queued at close are counted as Undeleted.
    yield* Effect.addFinalizer(() => Effect.flatMap(Queue.clear(queue), (left) => settleAcked(left, stopped)))
    yield* Effect.forkScoped(Effect.forever(Effect.flatMap(TakeBatch.take(queue, limits), (batch) => deleteBatch(batch.items))))

    /** The slow path: waits for room item by item; what a shutdown leaves unqueued is counted too. */
    const offerWaiting = (items: ReadonlyArray<Item>) =>
      Effect.gen(function*() {
        for (let i = 0; i < items.length; i++) {
          yield* Queue.offer(queue, items[i]!).pipe(Effect.onInterrupt(() => settleAcked(items.slice(i), stopped)))
        }
      })

    return {
      offer: (items) =>
        Effect.suspend(() => {
          advance(items, "deleting")
          for (const i of items) awaiting.add(i.event.rowId)
          let queued = 0
          while (queued < items.length && Queue.offerUnsafe(queue, items[queued]!)) queued++
          return queued === items.length ? Effect.void : offerWaiting(items.slice(queued))
        }),
      awaitingDelete: (rowId) => awaiting.has(rowId)
    }
  })
