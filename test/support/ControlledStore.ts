/**
 * A Store for unit tests of the write and delivery paths: the in-memory store, plus a record of
 * every append and delete, and switches to make appends wait on a latch or fail.
 */
import { Effect, Layer, Latch } from "effect"
import { StoreError } from "../../src/Errors.ts"
import { type NewEvent, Store } from "../../src/Store.ts"
import * as MemoryStore from "../../src/testing/MemoryStore.ts"

export interface StoreControl {
  /** Sizes of the appends, in call order. */
  readonly appends: Array<number>
  readonly deletes: Array<ReadonlyArray<bigint>>
  /** Closed: appends wait until it opens. */
  readonly appendGate: Latch.Latch
  /** When set, appends fail with this error. */
  failAppends: StoreError | undefined
  /** When set, deletes fail with this error (recorded in `deletes` all the same). */
  failDeletes: StoreError | undefined
  /** When set, appends commit and then fail with this error, as when the connection drops after COMMIT. */
  failAfterAppends: StoreError | undefined
  /** When set, an append holding an event it accepts fails with the error it answers (a refusal of the data). */
  refuse: ((event: NewEvent) => StoreError | undefined) | undefined
  /** When set, lookups fail with this error. */
  failLookups: StoreError | undefined
  /** Event counts of the lookups, in call order. */
  readonly lookups: Array<number>
  /** Rows claimed so far (by the retransmitter). */
  claims: number
  readonly store: Store["Service"]
}

export const make = Effect.gen(function*() {
  const inner = yield* MemoryStore.make
  const appendGate = yield* Latch.make(true)
  const control: StoreControl = {
    appends: [],
    deletes: [],
    appendGate,
    failAppends: undefined,
    failDeletes: undefined,
    failAfterAppends: undefined,
    refuse: undefined,
    failLookups: undefined,
    lookups: [],
    claims: 0,
    store: {
      ...inner,
      append: (events, options) =>
        Effect.gen(function*() {
          control.appends.push(events.length)
          yield* appendGate.await
          if (control.failAppends !== undefined) return yield* control.failAppends
          if (control.refuse !== undefined) {
            for (const event of events) {
              const refusal = control.refuse(event)
              if (refusal !== undefined) return yield* refusal
            }
          }
          const appended = yield* inner.append(events, options)
          if (control.failAfterAppends !== undefined) return yield* control.failAfterAppends
          return appended
        }),
      lookup: (eventIds, nextAttemptAt) => Effect.suspend(() => {
        control.lookups.push(eventIds.length)
        return control.failLookups !== undefined ? Effect.fail(control.failLookups) : inner.lookup(eventIds, nextAttemptAt)
      }),
      claim: (options) =>
        Effect.map(inner.claim(options), (rows) => {
          control.claims += rows.length
          return rows
        }),
      delete: (rowIds) => Effect.suspend(() => {
        control.deletes.push(rowIds)
        return control.failDeletes === undefined ? inner.delete(rowIds) : Effect.fail(control.failDeletes)
      })
    }
  }
  return control
})

export const connectionLost = new StoreError({ operation: "append", reason: "connection lost", retryable: true })

/** A layer with the controlled store and its control, for `it.effect` tests. */
export const layer = (control: StoreControl) => Layer.succeed(Store, control.store)
