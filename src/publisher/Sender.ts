/**
 * One sender's work on one batch: start no request a lease could not cover, send, let `decide`
 * judge the result, and do what it says: hand the delivered to the delete coalescer, dead-letter
 * the refused, bisect, give up, or retry what is retryable after the delay the retry Schedule
 * gives (or give up once the Schedule ends).
 */
import { Cause, Clock, Duration, Effect, Exit, Metric, Schedule } from "effect"
import * as Metrics from "../Metrics.ts"
import type { Store } from "../Store.ts"
import { recordSend, sendSpan } from "../telemetry/sendTelemetry.ts"
import { batchRequestBytes } from "../transport/rawBatch.ts"
import type { EventResult, Transport, TransportError } from "../Transport.ts"
import type { Acks } from "./Acks.ts"
import { byCode, byLease, decide, type Rejected, type RequestResult } from "./decide.ts"
import { type FailureEpisodes, withCause } from "./FailureEpisode.ts"
import { Lapsed, type Item, type Settle, wireOf } from "./Item.ts"
import type { PushBackGate } from "./PushBackGate.ts"
import type { RetryInput, RetrySchedule } from "./retrySchedule.ts"
import type { RetryThrottle } from "./retryThrottle.ts"
import { storeWrite } from "./storeWrite.ts"
import type { TransportHealth } from "./TransportHealth.ts"

export interface SenderContext {
  readonly transport: Transport["Service"]
  readonly store: Store["Service"]
  readonly acks: Acks
  readonly health: TransportHealth
  readonly settle: Settle
  readonly retrySchedule: RetrySchedule
  /** Shared by every sender: push-back from one reply holds every request to the endpoint. */
  readonly gate: PushBackGate
  /** Shared by every sender: stops retries while most requests fail. */
  readonly throttle: RetryThrottle
  readonly episodes: FailureEpisodes
  /** A request may start only this long before a row's lease ends (its deadline plus slack). */
  readonly sendMarginMs: number
}

export const makeSend = (ctx: SenderContext) => {
  /** One request, in its own span (`send {destination}`) linked to the emit spans. */
  const request = (items: ReadonlyArray<Item>, attempt: number): Effect.Effect<RequestResult> => {
    const events = items.map((i) => i.event)
    const span = sendSpan(events)
    return Effect.gen(function*() {
      const wire = items.map(wireOf)
      const bytes = batchRequestBytes(wire)
      yield* Effect.annotateCurrentSpan({ "publish.bytes": bytes, "publish.attempt": attempt })
      yield* Metric.update(Metrics.publishRequestEvents, wire.length)
      yield* Metric.update(Metrics.publishRequestBytes, bytes)
      const started = yield* Clock.currentTimeMillis
      const exit = yield* ctx.transport.publishBatch(wire, attempt > 1 ? { previousAttempts: attempt - 1 } : undefined).pipe(Effect.trackDuration(Metrics.publishLatency), Effect.exit)
      yield* recordSend(events, exit, ((yield* Clock.currentTimeMillis) - started) / 1000)
      const status = requestStatus(exit)
      yield* Metrics.count(Metrics.publishRequests, 1, { status })
      yield* Effect.annotateCurrentSpan("publish.status", status)
      return yield* resultOf(items, exit)
    }).pipe(Effect.withSpan(span.name, span.options))
  }

  /** Records the request's end for health and metrics; answers it as data for `decide`. */
  const resultOf = (items: ReadonlyArray<Item>, exit: Exit.Exit<ReadonlyArray<EventResult>, TransportError>): Effect.Effect<RequestResult> => {
    if (Exit.isSuccess(exit)) {
      ctx.throttle.success()
      return Effect.as(Effect.andThen(ctx.health.success, ctx.episodes.success), { _tag: "Answered", results: exit.value } as const)
    }
    const error = Cause.findErrorOption(exit.cause)
    ctx.throttle.failure()
    ctx.episodes.failure()
    if (error._tag === "None") {
      return Effect.as(Effect.logError("transport defect", { cause: Cause.pretty(exit.cause) }), { _tag: "Defect" } as const)
    }
    const e = error.value
    return Effect.gen(function*() {
      if (e.retryAfterMs !== undefined) yield* ctx.gate.hold(e.retryAfterMs)
      yield* ctx.health.failure(e)
      yield* Metrics.countByKey(Metrics.failed, items.map((i) => i.event), { code: e.code })
      if (e.kind === "config") yield* Effect.logError("ingest rejected our configuration; rows kept for the retransmitter", { code: e.code, reason: e.reason })
      return { _tag: "Failed", error: e } as const
    })
  }

  const deadLetter = (rejected: ReadonlyArray<Rejected<Item>>) =>
    Effect.gen(function*() {
      if (rejected.length === 0) return
      const now = yield* Clock.currentTimeMillis
      const written = yield* storeWrite(
        "dead-letter rejected rows",
        ctx.store.deadLetter(rejected.map((r) => ({ rowId: r.item.event.rowId, code: r.code, reason: r.reason })), now)
      )
      for (const [code, group] of byCode(rejected)) {
        const items = group.map((r) => r.item)
        yield* ctx.settle(items, written ? { _tag: "DeadLettered", code, reason: group[0]!.reason } : { _tag: "GivenUp", why: "the dead-letter write failed" })
      }
    })

  const acknowledge = (delivered: ReadonlyArray<Item>) =>
    delivered.length === 0 ? Effect.void : Effect.andThen(
      ctx.acks.offer(delivered),
      Metrics.countByKey(Metrics.delivered, delivered.map((i) => i.event))
    )

  const send = (batch: ReadonlyArray<Item>): Effect.Effect<void> =>
    Effect.gen(function*() {
      const start = yield* Clock.currentTimeMillis
      let items = batch
      let attempt = 0
      let nextDelay: ((now: number, input: RetryInput) => Effect.Effect<readonly [unknown, Duration.Duration], unknown>) | undefined
      /** This batch's last failure: the log of a postponement names it. */
      let lastError: TransportError | undefined
      while (true) {
        // Push-back from any sender's reply holds this request too (a plain read when there is none).
        if (ctx.gate.closed()) yield* ctx.gate.pass
        const { lapsed, live } = byLease(items, (yield* Clock.currentTimeMillis) + ctx.sendMarginMs)
        if (lapsed.length > 0) yield* ctx.settle(lapsed, Lapsed)
        if (live.length === 0) return
        attempt++
        const result = yield* request(live, attempt)
        if (result._tag === "Failed") lastError = result.error
        const decision = decide(live, result)
        switch (decision._tag) {
          case "Done":
            yield* acknowledge(decision.delivered)
            return yield* deadLetter(decision.rejected)
          case "DeadLetter":
            return yield* deadLetter(decision.items.map((item) => ({ item, code: decision.code, reason: decision.reason })))
          case "GiveUp":
            return yield* ctx.settle(decision.items, { _tag: "GivenUp", why: decision.why })
          case "Bisect":
            // Isolate the event(s) the server refuses instead of dead-lettering the whole batch.
            yield* send(decision.halves[0])
            return yield* send(decision.halves[1])
          case "Retry": {
            yield* acknowledge(decision.delivered)
            yield* deadLetter(decision.rejected)
            items = decision.items
            if (!ctx.throttle.allowsRetry()) {
              return yield* ctx.settle(items, { _tag: "GivenUp", why: withCause("retries throttled: most recent requests failed", lastError) })
            }
            nextDelay ??= yield* Schedule.toStep(ctx.retrySchedule)
            const now = yield* Clock.currentTimeMillis
            // The step fails (Cause.Done) once the Schedule ends: the retry budget is spent.
            const step = yield* Effect.exit(nextDelay(now, { retryAfterMs: decision.retryAfterMs, elapsedMs: now - start }))
            if (Exit.isFailure(step)) return yield* ctx.settle(items, { _tag: "GivenUp", why: withCause("retry budget exhausted", lastError) })
            yield* Metrics.count(Metrics.retries, 1, {})
            if (decision.retryAfterMs !== undefined) yield* Metric.update(Metrics.pushBackWaits, Duration.millis(decision.retryAfterMs))
            yield* Effect.sleep(step.value[1])
          }
        }
      }
    })

  return send
}

const requestStatus = (exit: Exit.Exit<unknown, TransportError>) => {
  if (Exit.isSuccess(exit)) return "ok"
  const error = Cause.findErrorOption(exit.cause)
  return error._tag === "Some" ? error.value.code : "defect"
}
