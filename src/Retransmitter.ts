/**
 * Recovery. The retransmit loop claims due rows (FOR UPDATE SKIP LOCKED, with a lease that grows
 * with the attempt count) and feeds them to the same Publisher, claim after claim, until nothing is
 * due: a backlog drains at full speed, not one page per tick. Rows whose payload cannot be decoded
 * are dead-lettered instead of retried forever. The expiry loop removes rows past their TTL in
 * bounded batches (dead-lettering them by default). Both repeat on Liveness's loop Schedule, which
 * also reports them to health. With `retransmit: false` neither loop runs. They make a span only
 * for a tick that did something (rows claimed, rows expired): see telemetry/workSpan.ts.
 */
import { Clock, Context, Effect, Layer } from "effect"
import type { EmitterOptions } from "./Config.ts"
import * as Event from "./Event.ts"
import { type Liveness, runLoop } from "./Liveness.ts"
import * as Metrics from "./Metrics.ts"
import { Publisher } from "./Publisher.ts"
import { Store, type StoredEvent } from "./Store.ts"
import * as Semconv from "./telemetry/semconv.ts"
import { spanIfWorked } from "./telemetry/workSpan.ts"

export type RetransmitterOptions = Pick<
  EmitterOptions,
  | "retransmit" | "claimBatchSize" | "leaseBaseMs" | "leaseMaxMs" | "retransmitIntervalMs"
  | "ttlMs" | "deadLetterExpired" | "expiryIntervalMs" | "expiryBatchSize"
>

const undecodable = (row: StoredEvent): string | undefined => {
  try {
    const event = Event.decode(row.payload)
    return event.id === row.eventId ? undefined : `payload id ${event.id} does not match the row's event id ${row.eventId}`
  } catch (error) {
    return `payload is not a CloudEvent: ${error instanceof Error ? error.message : String(error)}`
  }
}

const retransmitTick = (options: RetransmitterOptions) =>
  Effect.gen(function*() {
    const publisher = yield* Publisher
    // Claim only what the publisher can take now: a claimed row's lease runs while it waits. While
    // the queue stays full (ingest down) the tick ends after an interval, so the loop still reports
    // itself alive, and comes straight back.
    const room = yield* publisher.awaitRoom(options.claimBatchSize).pipe(Effect.timeoutOption(options.retransmitIntervalMs))
    if (room._tag === "None") return true
    const claimed = yield* claimAndFeed(options).pipe(
      spanIfWorked("Retransmitter.claim", ({ claimed, poison }) =>
        claimed === 0 ? undefined : {
          [Semconv.ATTR_MESSAGING_SYSTEM]: Semconv.MESSAGING_SYSTEM,
          [Semconv.ATTR_MESSAGING_BATCH_MESSAGE_COUNT]: claimed,
          "retransmit.dead_lettered": poison
        })
    )
    return claimed.claimed > 0
  }).pipe(Effect.withTracerEnabled(false))

/** Claims due rows, dead-letters the undecodable, feeds the rest to the publisher; answers how many. */
const claimAndFeed = (options: RetransmitterOptions) =>
  Effect.gen(function*() {
    const store = yield* Store
    const publisher = yield* Publisher
    const now = yield* Clock.currentTimeMillis
    const rows = yield* store.claim({ now, limit: options.claimBatchSize, leaseBaseMs: options.leaseBaseMs, leaseMaxMs: options.leaseMaxMs })
    if (rows.length === 0) return { claimed: 0, poison: 0 }
    const poison = rows.flatMap((row) => {
      const reason = undecodable(row)
      return reason === undefined ? [] : [{ row, reason }]
    })
    if (poison.length > 0) {
      yield* store.deadLetter(poison.map(({ reason, row }) => ({ rowId: row.rowId, code: "UNDECODABLE", reason })), now)
      yield* Metrics.countByKey(Metrics.deadLettered, poison.map((p) => p.row), { code: "UNDECODABLE" })
      yield* Effect.logWarning("undecodable rows dead-lettered", { count: poison.length, reason: poison[0]!.reason })
    }
    const good = poison.length === 0 ? rows : rows.filter((row) => !poison.some((p) => p.row === row))
    yield* Metrics.countByKey(Metrics.retransmitted, good)
    // Bounded like the wait for room: what the queue did not take in time comes due again when
    // its lease ends (the publisher never sends a row past its lease, so nothing goes out twice).
    yield* publisher.submit(good).pipe(Effect.timeoutOption(options.retransmitIntervalMs))
    return { claimed: rows.length, poison: poison.length }
  })

const expiryTick = (options: RetransmitterOptions) =>
  Effect.gen(function*() {
    const store = yield* Store
    const now = yield* Clock.currentTimeMillis
    const counts = yield* store.expire({
      olderThan: now - options.ttlMs, limit: options.expiryBatchSize, deadLetter: options.deadLetterExpired, now
    }).pipe(spanIfWorked("Retransmitter.expire", (counts) => {
      const total = counts.reduce((sum, c) => sum + c.count, 0)
      return total === 0 ? undefined : { "expiry.rows": total, "expiry.dead_lettered": options.deadLetterExpired }
    }))
    let total = 0
    for (const { count, source, type } of counts) {
      total += count
      yield* Metrics.count(Metrics.expired, count, { source, type })
    }
    if (total > 0) {
      yield* Effect.logWarning(options.deadLetterExpired ? "expired rows moved to the dead-letter table" : "expired rows deleted", {
        total, bySourceType: counts.map((c) => `${c.source} ${c.type}: ${c.count}`)
      })
    }
    return total >= options.expiryBatchSize
  }).pipe(Effect.withTracerEnabled(false))

export class Retransmitter extends Context.Service<Retransmitter, {
  /** Whether this process runs the retransmit and expiry loops (`retransmit` option). */
  readonly enabled: boolean
}>()("durable-emitter/Retransmitter") {
  /** The retransmit and expiry loops, forked in the layer's scope (none with `retransmit: false`). */
  static readonly layer = (options: RetransmitterOptions): Layer.Layer<Retransmitter, never, Store | Publisher | Liveness> =>
    Layer.effect(
      Retransmitter,
      Effect.gen(function*() {
        if (!options.retransmit) {
          yield* Effect.logInfo("retransmit disabled: no retransmit or expiry loops in this process")
          return Retransmitter.of({ enabled: false })
        }
        yield* Effect.forkScoped(runLoop("retransmit", options.retransmitIntervalMs, retransmitTick(options)))
        yield* Effect.forkScoped(runLoop("expiry", options.expiryIntervalMs, expiryTick(options)))
        yield* Effect.logInfo("retransmitter started")
        return Retransmitter.of({ enabled: true })
      })
    )
}
