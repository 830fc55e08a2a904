/**
 * Delivery of committed events. A dispatcher fiber batches the queue by count, bytes and linger;
 * a pool of senders (`publishConcurrency`) sends batches concurrently so one slow or hung request
 * holds up only itself. Each sender retries what is retryable, only for the events that failed,
 * with exponential backoff and jitter floored by the server's push-back, within a retry budget;
 * what it cannot deliver stays in the table for the retransmitter. Acks become coalesced deletes;
 * permanent per-event failures are moved to the dead-letter table with their code and reason.
 */
import { Cause, Clock, Context, Duration, Effect, Exit, FiberSet, Layer, Metric, Queue, Random, Schedule, Semaphore, Tracer } from "effect"
import { type EmitterOptions, leaseSlack } from "./Config.ts"
import { seqnumReserve, withSeqnum } from "./Event.ts"
import { Handoff } from "./Handoff.ts"
import * as Metrics from "./Metrics.ts"
import { retryDelayMs } from "./publisher/backoff.ts"
import * as Barrier from "./publisher/Barrier.ts"
import { type DeadLetterEntry, Store, type StoredEvent } from "./Store.ts"
import { batchRequestBytes } from "./transport/rawBatch.ts"
import { type EventResult, Transport, type TransportError } from "./Transport.ts"

export type PublisherOptions = Pick<
  EmitterOptions,
  | "publishBatchSize" | "publishLingerMs" | "publishQueueCapacity" | "publishConcurrency" | "maxRequestBytes"
  | "retryBaseDelayMs" | "retryMaxDelayMs" | "retryBudgetMs" | "deleteBatchSize" | "deleteLingerMs"
  | "shutdownTimeoutMs" | "requestTimeoutMs"
>

/** What the publisher knows about the ingest service, for health. */
export interface TransportState {
  readonly lastSuccessAt: number | undefined
  readonly consecutiveFailures: number
  readonly lastError: string | undefined
  /** The last failure was a configuration fault (UNAUTHENTICATED, PERMISSION_DENIED, UNIMPLEMENTED). */
  readonly misconfigured: boolean
}

export interface PublisherState {
  readonly queued: number
  /** Accepted and not yet resolved (delivered and deleted, dead-lettered or left to the retransmitter). */
  readonly pending: number
  readonly transport: TransportState
}

export class Publisher extends Context.Service<Publisher, {
  /** Takes committed events without waiting; what does not fit is left to the retransmitter. */
  readonly offer: (events: ReadonlyArray<StoredEvent>) => Effect.Effect<void>
  /** Takes events, waiting for room (the retransmitter's path: backpressure, not loss). */
  readonly submit: (events: ReadonlyArray<StoredEvent>) => Effect.Effect<void>
  /**
   * Waits until the queue has room for `n` events (or is empty, if `n` exceeds its capacity): the
   * retransmitter claims only what can be sent while its lease lasts.
   */
  readonly awaitRoom: (n: number) => Effect.Effect<void>
  /** Completes when every event accepted before the call is resolved. */
  readonly flush: Effect.Effect<void>
  readonly state: Effect.Effect<PublisherState>
}>()("durable-emitter/Publisher") {
  /** Provides the Publisher and the write path's Handoff to it. */
  static readonly layer = (options: PublisherOptions): Layer.Layer<Publisher | Handoff, never, Store | Transport> =>
    Layer.effectContext(make(options).pipe(
      Effect.map((publisher) => Context.make(Publisher, publisher).pipe(Context.add(Handoff, Handoff.of({ offer: publisher.offer }))))
    ))
}

interface Item {
  readonly event: StoredEvent
  readonly epoch: number
  /** Resolved already: resolving is idempotent, so a recovery path can never count an event twice. */
  resolved?: boolean
  wire?: Uint8Array
}

/** How often a waiting retransmitter looks for room in the queue. */
const roomPollMs = 10

/** Bytes one event adds to a PublishBatch request: payload, seqnum entry, field tag and length. */
const wireSize = (event: StoredEvent) => event.payload.length + seqnumReserve + 6
/** gRPC message prefix and request framing. */
const requestOverhead = 64

/** Per-event codes that cannot succeed on retry (ingest-wire.md); others (UNKNOWN) are retried. */
const permanentCodes: ReadonlySet<string> = new Set([
  "VALIDATION_FAILED", "SCHEMA_MISSING", "ENCODE_ERROR", "DOMAIN_MISCONFIGURATION"
])

const make = Effect.fnUntraced(function*(options: PublisherOptions) {
  const store = yield* Store
  const transport = yield* Transport
  const queue = yield* Queue.bounded<Item>(options.publishQueueCapacity)
  const acks = yield* Queue.bounded<Item>(Math.max(options.deleteBatchSize * 4, options.publishBatchSize * options.publishConcurrency))
  const senders = yield* Semaphore.make(options.publishConcurrency)
  const inFlight = yield* FiberSet.make<void>()
  const barrier = Barrier.make()
  /** A request may start only this long before a row's lease ends (its deadline plus slack). */
  const sendMarginMs = options.requestTimeoutMs * leaseSlack
  let accepting = true
  let fullEpisode = false
  let transportState: TransportState = { lastSuccessAt: undefined, consecutiveFailures: 0, lastError: undefined, misconfigured: false }

  const resolve = (items: ReadonlyArray<Item>) =>
    Effect.sync(() => {
      for (const item of items) {
        if (item.resolved === true) continue
        item.resolved = true
        barrier.resolved(item.epoch, 1)
      }
    })

  // ---- intake -------------------------------------------------------------------------------

  const offer = (events: ReadonlyArray<StoredEvent>): Effect.Effect<void> =>
    Effect.suspend(() => {
      if (!accepting || events.length === 0) return Effect.void
      const epoch = barrier.current()
      let taken = 0
      while (taken < events.length && Queue.offerUnsafe(queue, { event: events[taken]!, epoch })) taken++
      barrier.accepted(epoch, taken)
      if (taken === events.length) return Effect.void
      const left = events.length - taken
      const counted = Metrics.count(Metrics.queueFull, left, {})
      if (fullEpisode) return counted
      fullEpisode = true
      return counted.pipe(Effect.andThen(Effect.logWarning(
        "publish queue full: committed events are left to the retransmitter until it drains",
        { left, capacity: options.publishQueueCapacity }
      )))
    })

  const submit = (events: ReadonlyArray<StoredEvent>): Effect.Effect<void> =>
    Effect.gen(function*() {
      for (const event of events) {
        if (!accepting) return
        const item: Item = { event, epoch: barrier.current() }
        // Counted before it is offered: a sender may resolve it before `offer` returns.
        barrier.accepted(item.epoch, 1)
        if (Queue.offerUnsafe(queue, item)) continue
        const offered = yield* Queue.offer(queue, item).pipe(Effect.onInterrupt(() => resolve([item])))
        if (!offered) return yield* resolve([item])
      }
    })

  // ---- acks and dead letters ----------------------------------------------------------------

  /** Store writes after delivery are retried a few times; if they still fail the rows stay (a later duplicate, never a loss). */
  const storeWrite = <A>(operation: string, effect: Effect.Effect<A, unknown>) =>
    effect.pipe(
      Effect.retry({ times: 5, schedule: Schedule.exponential("50 millis") }),
      Effect.asVoid,
      Effect.catchCause((cause) => Effect.logError(`${operation} failed; the rows stay and will be sent again`, { cause: Cause.pretty(cause) }))
    )

  const deleter = Effect.gen(function*() {
    while (true) {
      const batch: Array<Item> = [yield* Queue.take(acks)]
      const fill = () => {
        while (batch.length < options.deleteBatchSize) {
          const next = Queue.takeUnsafe(acks)
          if (next === undefined || Exit.isFailure(next)) break
          batch.push(next.value)
        }
      }
      fill()
      if (batch.length < options.deleteBatchSize && options.deleteLingerMs > 0) {
        yield* Effect.sleep(options.deleteLingerMs)
        fill()
      }
      yield* storeWrite("delete acknowledged rows", store.delete(batch.map((i) => i.event.rowId)))
      yield* resolve(batch)
    }
  })

  const deadLetter = (items: ReadonlyArray<Item>, code: (i: number) => string, reason: (i: number) => string) =>
    Effect.gen(function*() {
      if (items.length === 0) return
      const entries: Array<DeadLetterEntry> = items.map((item, i) => ({ rowId: item.event.rowId, code: code(i), reason: reason(i) }))
      const now = yield* Clock.currentTimeMillis
      yield* storeWrite("dead-letter rejected rows", store.deadLetter(entries, now))
      yield* Effect.forEach(groupByCode(items, code), ([c, group]) => Metrics.countByKey(Metrics.deadLettered, group.map((i) => i.event), { code: c }), { discard: true })
      yield* Effect.logWarning("events dead-lettered", { count: items.length, codes: [...new Set(entries.map((e) => e.code))], reason: entries[0]!.reason })
      yield* resolve(items)
    })

  /** Leaves rows to the retransmitter: they are due again when their lease ends. */
  const giveUp = (items: ReadonlyArray<Item>, why: string) =>
    Effect.logWarning("delivery postponed: rows left to the retransmitter", { count: items.length, why }).pipe(
      Effect.andThen(resolve(items))
    )

  // ---- sending ------------------------------------------------------------------------------

  const recordFailure = (error: TransportError) =>
    Effect.sync(() => {
      transportState = {
        ...transportState,
        consecutiveFailures: transportState.consecutiveFailures + 1,
        lastError: error.message,
        misconfigured: error.kind === "config"
      }
    })

  const recordSuccess = Effect.flatMap(Clock.currentTimeMillis, (now) =>
    Effect.sync(() => {
      transportState = { lastSuccessAt: now, consecutiveFailures: 0, lastError: undefined, misconfigured: false }
    }))

  /** One request, in its own span linked to the emit spans: answers per-event results or the request's error. */
  const request = (items: ReadonlyArray<Item>, wire: ReadonlyArray<Uint8Array>, attempt: number) =>
    Effect.gen(function*() {
      const bytes = batchRequestBytes(wire)
      yield* Effect.annotateCurrentSpan({ "publish.events": wire.length, "publish.bytes": bytes, "publish.attempt": attempt })
      yield* Metric.update(Metrics.publishRequestEvents, wire.length)
      yield* Metric.update(Metrics.publishRequestBytes, bytes)
      const exit = yield* transport.publishBatch(wire).pipe(Effect.trackDuration(Metrics.publishLatency), Effect.exit)
      const status = requestStatus(exit)
      yield* Metrics.count(Metrics.publishRequests, 1, { status })
      yield* Effect.annotateCurrentSpan("publish.status", status)
      return exit
    }).pipe(Effect.withSpan("Publisher.publishBatch", { links: emitLinks(items), kind: "client" }))

  const send = (batch: ReadonlyArray<Item>): Effect.Effect<void> =>
    Effect.gen(function*() {
      const start = yield* Clock.currentTimeMillis
      let items = batch
      let attempt = 0
      while (true) {
        // Start no request that could outlive a row's lease: once it ends, another claimer may
        // take the row, and two processes would send it at once.
        const now = yield* Clock.currentTimeMillis
        const { lapsed, live } = byLease(items, now + sendMarginMs)
        if (lapsed.length > 0) {
          yield* Effect.logDebug("rows whose lease ends before a request could finish are left to the retransmitter", { count: lapsed.length })
          yield* resolve(lapsed)
        }
        items = live
        if (items.length === 0) return
        attempt++
        const exit = yield* request(items, items.map(wireOf), attempt)
        let pushBackMs: number | undefined
        if (Exit.isSuccess(exit)) {
          yield* recordSuccess
          const outcome = split(items, exit.value)
          yield* Queue.offerAll(acks, outcome.delivered)
          yield* Metrics.countByKey(Metrics.delivered, outcome.delivered.map((i) => i.event))
          yield* deadLetter(outcome.rejected, (i) => outcome.rejections[i]!.code, (i) => outcome.rejections[i]!.reason)
          items = outcome.retry
        } else {
          const error = Cause.findErrorOption(exit.cause)
          if (error._tag === "None") {
            // A defect in the transport: treat as retryable, the rows are safe in the table.
            yield* Effect.logError("transport defect", { cause: Cause.pretty(exit.cause) })
          } else {
            const e = error.value
            yield* recordFailure(e)
            yield* Metrics.countByKey(Metrics.failed, items.map((i) => i.event), { code: e.code })
            if (e.kind === "config") {
              yield* Effect.logError("ingest rejected our configuration; rows kept for the retransmitter", { code: e.code, reason: e.reason })
              return yield* giveUp(items, e.message)
            }
            if (e.kind === "permanent") {
              if (items.length === 1) return yield* deadLetter(items, () => e.code, () => e.reason)
              // Isolate the event(s) the server refuses instead of dead-lettering the whole batch.
              const half = Math.ceil(items.length / 2)
              yield* send(items.slice(0, half))
              return yield* send(items.slice(half))
            }
            if (e.doNotRetry === true) return yield* giveUp(items, "the server asked not to retry")
            pushBackMs = e.retryAfterMs
          }
        }
        if (items.length === 0) return
        const delay = retryDelayMs(attempt, { baseMs: options.retryBaseDelayMs, maxMs: options.retryMaxDelayMs }, pushBackMs, yield* Random.next)
        if ((yield* Clock.currentTimeMillis) + delay - start > options.retryBudgetMs) return yield* giveUp(items, "retry budget exhausted")
        yield* Metrics.count(Metrics.retries, 1, {})
        if (pushBackMs !== undefined) yield* Metric.update(Metrics.pushBackWaits, Duration.millis(pushBackMs))
        yield* Effect.sleep(delay)
      }
    })

  // ---- dispatch -----------------------------------------------------------------------------

  let carry: Item | undefined
  const dispatcher = Effect.gen(function*() {
    while (true) {
      const first = carry ?? (yield* Queue.take(queue))
      carry = undefined
      const batch: Array<Item> = [first]
      let bytes = requestOverhead + wireSize(first.event)
      const fill = () => {
        while (carry === undefined && batch.length < options.publishBatchSize) {
          const next = Queue.takeUnsafe(queue)
          if (next === undefined || Exit.isFailure(next)) break
          const size = wireSize(next.value.event)
          if (bytes + size > options.maxRequestBytes) carry = next.value
          else {
            batch.push(next.value)
            bytes += size
          }
        }
      }
      fill()
      if (carry === undefined && batch.length < options.publishBatchSize && options.publishLingerMs > 0) {
        yield* Effect.sleep(options.publishLingerMs)
        fill()
      }
      if (Queue.sizeUnsafe(queue) === 0) fullEpisode = false
      yield* senders.take(1)
      yield* FiberSet.run(inFlight, send(batch).pipe(
        // A defect must not strand the batch (flush would wait for it): its rows stay in the table.
        Effect.catchDefect((defect) =>
          Effect.logError("publisher defect; rows left to the retransmitter", { defect: String(defect) }).pipe(
            Effect.andThen(resolve(batch))
          )
        ),
        Effect.ensuring(senders.release(1))
      ))
    }
  })

  yield* Effect.forkScoped(dispatcher)
  yield* Effect.forkScoped(deleter)

  // Shutdown: stop taking events, deliver what was accepted within the deadline, then stop every
  // fiber (interrupting requests in flight: no network work after the deadline). Rows not
  // delivered stay in the table.
  yield* Effect.addFinalizer(() =>
    Effect.gen(function*() {
      accepting = false
      const done = yield* barrier.flush.pipe(Effect.timeoutOption(options.shutdownTimeoutMs))
      if (done._tag === "None") {
        yield* Effect.logWarning("shutdown deadline passed; undelivered rows stay in the table", { pending: barrier.pending() })
      }
      yield* FiberSet.clear(inFlight)
    })
  )

  const awaitRoom = (n: number): Effect.Effect<void> =>
    Effect.suspend(() =>
      options.publishQueueCapacity - Queue.sizeUnsafe(queue) >= Math.min(n, options.publishQueueCapacity)
        ? Effect.void
        : Effect.andThen(Effect.sleep(roomPollMs), awaitRoom(n))
    )

  return Publisher.of({
    offer,
    submit,
    awaitRoom,
    flush: barrier.flush,
    state: Effect.sync(() => ({ queued: Queue.sizeUnsafe(queue), pending: barrier.pending(), transport: transportState }))
  })
})

/** Links from a delivery span to the emit spans of its events (a bounded number of them). */
const maxLinks = 32
const emitLinks = (items: ReadonlyArray<Item>): Array<Tracer.SpanLink> => {
  const links: Array<Tracer.SpanLink> = []
  for (const { event } of items) {
    if (links.length >= maxLinks) break
    const parts = event.traceparent?.split("-")
    if (parts === undefined || parts.length !== 4) continue
    links.push({
      span: Tracer.externalSpan({ traceId: parts[1]!, spanId: parts[2]!, sampled: parts[3] === "01" }),
      attributes: { "cloudevents.event_id": event.eventId }
    })
  }
  return links
}

const requestStatus = (exit: Exit.Exit<unknown, TransportError>) => {
  if (Exit.isSuccess(exit)) return "ok"
  const error = Cause.findErrorOption(exit.cause)
  return error._tag === "Some" ? error.value.code : "defect"
}

/** Sorts one response into delivered, permanently rejected, and retryable events. */
const split = (items: ReadonlyArray<Item>, results: ReadonlyArray<EventResult>) => {
  const delivered: Array<Item> = []
  const rejected: Array<Item> = []
  const rejections: Array<{ code: string; reason: string }> = []
  const retry: Array<Item> = []
  for (let i = 0; i < items.length; i++) {
    const result = results[i]!
    if (result._tag === "Delivered") delivered.push(items[i]!)
    else if (permanentCodes.has(result.code)) {
      rejected.push(items[i]!)
      rejections.push(result)
    } else {
      retry.push(items[i]!)
    }
  }
  return { delivered, rejected, rejections, retry }
}

/** Separates the items whose lease ends before `deadline`. */
const byLease = (items: ReadonlyArray<Item>, deadline: number) => {
  const lapsed: Array<Item> = []
  const live: Array<Item> = []
  for (const item of items) (item.event.leaseUntil < deadline ? lapsed : live).push(item)
  return lapsed.length === 0 ? { lapsed, live: items } : { lapsed, live }
}

/** The event as sent: the stored payload with its seqnum, computed once per event. */
const wireOf = (item: Item) => (item.wire ??= withSeqnum(item.event.payload, item.event.seq))

const groupByCode = (items: ReadonlyArray<Item>, code: (i: number) => string) => {
  const groups = new Map<string, Array<Item>>()
  items.forEach((item, i) => {
    const c = code(i)
    const group = groups.get(c)
    if (group === undefined) groups.set(c, [item])
    else group.push(item)
  })
  return groups
}
