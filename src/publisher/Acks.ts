/**
 * The delete coalescer. Senders hand it acknowledged items; one fiber takes what waits (up to
 * `deleteBatchSize`, after `deleteLinger`), deletes those rows with one `Store.delete`, and settles
 * the items: Delivered, or Undeleted when the delete failed (the rows stay and are sent again).
 * The queue is bounded: a sender waits for room (backpressure, never a drop).
 */
import { Effect, Queue, type Scope } from "effect"
import type { EmitterOptions } from "../Config.ts"
import type { Store } from "../Store.ts"
import { advance, Delivered, type Item, type Settle } from "./Item.ts"
import { storeWrite } from "./storeWrite.ts"
import * as TakeBatch from "./takeBatch.ts"

export type AcksOptions = Pick<EmitterOptions, "deleteBatchSize" | "deleteLingerMs" | "publishBatchSize" | "publishConcurrency">

export interface Acks {
  /** Takes acknowledged items, waiting for room. */
  readonly offer: (items: ReadonlyArray<Item>) => Effect.Effect<void>
}

export const make = (options: AcksOptions, store: Store["Service"], settle: Settle): Effect.Effect<Acks, never, Scope.Scope> =>
  Effect.gen(function*() {
    const queue = yield* Queue.bounded<Item>(Math.max(options.deleteBatchSize * 4, options.publishBatchSize * options.publishConcurrency))
    const limits: TakeBatch.BatchLimits<Item> = { maxWeight: options.deleteBatchSize, lingerMs: options.deleteLingerMs }

    const deleteBatch = (items: ReadonlyArray<Item>) =>
      Effect.flatMap(
        storeWrite("delete acknowledged rows", store.delete(items.map((i) => i.event.rowId))),
        (deleted) => settle(items, deleted ? Delivered : { _tag: "Undeleted", why: "the delete failed" })
      )

    yield* Effect.forkScoped(Effect.forever(Effect.flatMap(TakeBatch.take(queue, limits), (batch) => deleteBatch(batch.items))))

    return {
      offer: (items) =>
        Effect.suspend(() => {
          advance(items, "deleting")
          return Queue.offerAll(queue, items)
        }).pipe(Effect.asVoid)
    }
  })
