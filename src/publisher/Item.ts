/**
 * An event's life inside the Publisher, and the ONE place where it ends.
 *
 *   queued (publish queue) → sending (a sender owns it) → deleting (acknowledged; the delete
 *   coalescer owns it) → settled
 *
 * An item is settled exactly once, with an Outcome that says why the publisher is done with it;
 * `settle` records that outcome (metric, log) and releases the flush barrier. An item settled
 * already is skipped, so a recovery path (a sender's defect, an interrupted submit) may settle a
 * whole batch without counting anything twice.
 */
import { Effect, Metric } from "effect"
import { withSeqnum } from "../Event.ts"
import * as Metrics from "../Metrics.ts"
import type { StoredEvent } from "../Store.ts"
import type * as Barrier from "./Barrier.ts"

export type Stage = "queued" | "sending" | "deleting" | "settled"

export interface Item {
  readonly event: StoredEvent
  /** The flush epoch it was accepted in. */
  readonly epoch: number
  stage: Stage
  /** The event as sent (payload with its seqnum), computed once. */
  wire?: Uint8Array
}

export const item = (event: StoredEvent, epoch: number): Item => ({ event, epoch, stage: "queued" })

/** The event as sent: the stored payload with its seqnum, computed once per event. */
export const wireOf = (item: Item): Uint8Array => (item.wire ??= withSeqnum(item.event.payload, item.event.seq))

/** Why the publisher is done with an item. Every outcome but Delivered leaves the row in a table. */
export type Outcome =
  /** Acknowledged and its row deleted. */
  | { readonly _tag: "Delivered" }
  /** Acknowledged, but its row could not be deleted: it stays and will be sent again (a duplicate). */
  | { readonly _tag: "Undeleted"; readonly why: string }
  /** Moved to the dead-letter table. */
  | { readonly _tag: "DeadLettered"; readonly code: string; readonly reason: string }
  /** Left to the retransmitter: due again when its lease ends. */
  | { readonly _tag: "GivenUp"; readonly why: string }
  /** Its lease would end before a request could finish: left to the retransmitter. */
  | { readonly _tag: "Lapsed" }
  /** Dropped by the publisher itself (a defect, shutdown): the row stays in the table. */
  | { readonly _tag: "Abandoned"; readonly why: string }

export const Delivered: Outcome = { _tag: "Delivered" }
export const Lapsed: Outcome = { _tag: "Lapsed" }

export type Settle = (items: ReadonlyArray<Item>, outcome: Outcome) => Effect.Effect<void>

/** Marks the items as owned by the next stage (a plain loop: this runs for every event). */
export const advance = (items: ReadonlyArray<Item>, stage: Exclude<Stage, "settled">): void => {
  for (const item of items) if (item.stage !== "settled") item.stage = stage
}

/** Logs rows left to the retransmitter (the failure episodes' call: once per episode, not per batch). */
export type Postponed = (rows: number, why: string) => Effect.Effect<void>

const warnPostponed: Postponed = (rows, why) =>
  Effect.logWarning("delivery postponed: rows left to the retransmitter", { count: rows, why })

/**
 * Ends the items' life with `outcome`: the metric and the log say why, and the flush barrier
 * learns it (after the log: a flush that returns has its outcomes recorded).
 */
export const makeSettle = (barrier: Barrier.Barrier, postponed: Postponed = warnPostponed): Settle => (items, outcome) =>
  Effect.suspend(() => {
    const fresh: Array<Item> = []
    for (const item of items) {
      if (item.stage === "settled") continue
      item.stage = "settled"
      fresh.push(item)
    }
    if (fresh.length === 0) return Effect.void
    const counted = Metric.update(settledCounters[outcome._tag], fresh.length)
    const log = outcome._tag === "GivenUp" ? postponed(fresh.length, outcome.why) : record(fresh, outcome)
    if (log === undefined) {
      resolve(barrier, fresh)
      return counted
    }
    return Effect.andThen(counted, Effect.ensuring(log, Effect.sync(() => resolve(barrier, fresh))))
  })

const resolve = (barrier: Barrier.Barrier, items: ReadonlyArray<Item>) => {
  for (const item of items) barrier.resolved(item.epoch, 1)
}

const settledCounters: Record<Outcome["_tag"], Metric.Counter<number>> = {
  Delivered: Metrics.series(Metrics.settled, { outcome: "Delivered" }),
  Undeleted: Metrics.series(Metrics.settled, { outcome: "Undeleted" }),
  DeadLettered: Metrics.series(Metrics.settled, { outcome: "DeadLettered" }),
  GivenUp: Metrics.series(Metrics.settled, { outcome: "GivenUp" }),
  Lapsed: Metrics.series(Metrics.settled, { outcome: "Lapsed" }),
  Abandoned: Metrics.series(Metrics.settled, { outcome: "Abandoned" })
}

/** The log (and outcome-specific metric) for an outcome; none on the hot path of a delivery. */
const record = (items: ReadonlyArray<Item>, outcome: Outcome): Effect.Effect<void> | undefined => {
  switch (outcome._tag) {
    case "Delivered":
      return undefined
    case "Undeleted":
      return Effect.logWarning("acknowledged rows not deleted; they stay and will be sent again", { count: items.length, why: outcome.why })
    case "DeadLettered":
      return Effect.andThen(
        Metrics.countByKey(Metrics.deadLettered, items.map((i) => i.event), { code: outcome.code }),
        Effect.logWarning("events dead-lettered", { count: items.length, code: outcome.code, reason: outcome.reason })
      )
    case "GivenUp":
      return undefined // logged by `postponed`
    case "Lapsed":
      return Effect.logDebug("rows whose lease ends before a request could finish are left to the retransmitter", { count: items.length })
    case "Abandoned":
      return Effect.logError("rows left to the retransmitter", { count: items.length, why: outcome.why })
  }
}
