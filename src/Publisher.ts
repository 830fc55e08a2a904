/**
 * Delivery of committed events. The pieces, in the order the data flows:
 * - intake (here): `offer` (the write path, never waits) and `submit` (the retransmitter, waits
 *   for room) put items into the bounded publish queue; rows `offer` has no room for are released
 *   to the retransmitters at once (publisher/Overflow.ts);
 * - dispatch (here): one fiber takes batches by count, bytes and linger (publisher/takeBatch.ts)
 *   and starts a sender per batch, at most `publishConcurrency` at once, so one slow or hung
 *   request holds up only itself;
 * - sending (publisher/Sender.ts): a request, the decision about its result (publisher/decide.ts),
 *   retries on the retry Schedule (publisher/retrySchedule.ts);
 * - acks (publisher/Acks.ts): delivered rows deleted in coalesced batches;
 * - the end of each item's life (publisher/Item.ts) and the flush barrier (publisher/Barrier.ts);
 * - shared by the senders: the push-back gate (publisher/PushBackGate.ts: one reply's push-back
 *   holds every request), the retry throttle (publisher/retryThrottle.ts) and the failure
 *   episodes of the log (publisher/FailureEpisode.ts);
 * - transport health (publisher/TransportHealth.ts), for `Emitter.health`.
 * What is not delivered stays in the table for the retransmitter.
 */
import { Context, Effect, FiberSet, Layer, Queue, Semaphore } from "effect"
import { type EmitterOptions, leaseSlack } from "./Config.ts"
import { seqnumReserve } from "./Event.ts"
import { Handoff } from "./Handoff.ts"
import { remainingOr } from "./ShutdownDeadline.ts"
import * as Acks from "./publisher/Acks.ts"
import * as Barrier from "./publisher/Barrier.ts"
import * as FailureEpisode from "./publisher/FailureEpisode.ts"
import { advance, type Item, item, makeSettle } from "./publisher/Item.ts"
import * as Overflow from "./publisher/Overflow.ts"
import * as PushBackGate from "./publisher/PushBackGate.ts"
import { RetryPolicy, retrySchedule, type RetrySchedule } from "./publisher/retrySchedule.ts"
import * as RetryThrottle from "./publisher/retryThrottle.ts"
import { makeSend } from "./publisher/Sender.ts"
import * as TakeBatch from "./publisher/takeBatch.ts"
import * as TransportHealth from "./publisher/TransportHealth.ts"
import { Store, type StoredEvent } from "./Store.ts"
import { Transport } from "./Transport.ts"

export { type RetryInput, RetryPolicy, retrySchedule, type RetrySchedule } from "./publisher/retrySchedule.ts"
export { defaultRetryThrottle, type RetryThrottleOptions } from "./publisher/retryThrottle.ts"
export type { TransportState } from "./publisher/TransportHealth.ts"

export type PublisherOptions =
  & Pick<
    EmitterOptions,
    | "publishBatchSize" | "publishLingerMs" | "publishQueueCapacity" | "publishConcurrency" | "maxRequestBytes"
    | "retryBaseDelayMs" | "retryMaxDelayMs" | "retryBudgetMs" | "deleteBatchSize" | "deleteLingerMs"
    | "shutdownTimeoutMs" | "requestTimeoutMs"
  >
  & {
    /** Replaces the retry policy built from retryBaseDelay, retryMaxDelay and retryBudget; wins over RetryPolicy. */
    readonly retrySchedule?: RetrySchedule | undefined
    /** The client-side retry throttle (gRPC's `retryThrottling`); default 10 tokens, ratio 0.1. */
    readonly retryThrottle?: RetryThrottle.RetryThrottleOptions | undefined
  }

export interface PublisherState {
  readonly queued: number
  /** Accepted and not yet settled (delivered and deleted, dead-lettered or left to the retransmitter). */
  readonly pending: number
  readonly transport: TransportHealth.TransportState
}

export class Publisher extends Context.Service<Publisher, {
  /** Takes committed events without waiting; what does not fit is released to the retransmitter (due now). */
  readonly offer: (events: ReadonlyArray<StoredEvent>) => Effect.Effect<void>
  /** Takes events, waiting for room (the retransmitter's path: backpressure, not loss). */
  readonly submit: (events: ReadonlyArray<StoredEvent>) => Effect.Effect<void>
  /**
   * Waits until the queue has room for `n` events (or is empty, if `n` exceeds its capacity): the
   * retransmitter claims only what can be sent while its lease lasts.
   */
  readonly awaitRoom: (n: number) => Effect.Effect<void>
  /** Completes when every event accepted before the call is settled. */
  readonly flush: Effect.Effect<void>
  readonly state: Effect.Effect<PublisherState>
}>()("durable-emitter/Publisher") {
  /** Provides the Publisher and the write path's Handoff to it. */
  static readonly layer = (options: PublisherOptions): Layer.Layer<Publisher | Handoff, never, Store | Transport> =>
    Layer.effectContext(make(options).pipe(
      Effect.map((publisher) => Context.make(Publisher, publisher).pipe(Context.add(Handoff, Handoff.of({ offer: publisher.offer }))))
    ))
}

/** How often a waiting retransmitter looks for room in the queue. */
const roomPollMs = 10

/** Bytes one event adds to a PublishBatch request: payload, seqnum entry, field tag and length. */
const wireSize = (item: Item) => item.event.payload.length + seqnumReserve + 6
/** gRPC message prefix and request framing. */
const requestOverhead = 64

const make = Effect.fnUntraced(function*(options: PublisherOptions) {
  const store = yield* Store
  const transport = yield* Transport

  // ---- state: the publish queue, the flush barrier, the end of an item's life ---------------
  const queue = yield* Queue.bounded<Item>(options.publishQueueCapacity)
  const barrier = Barrier.make()
  const episodes = FailureEpisode.make()
  const settle = makeSettle(barrier, episodes.postponed)
  const health = yield* TransportHealth.make
  const acks = yield* Acks.make(options, store, settle)
  const send = makeSend({
    transport,
    store,
    acks,
    health,
    settle,
    retrySchedule: options.retrySchedule ?? (yield* RetryPolicy) ?? retrySchedule(options),
    gate: PushBackGate.make(),
    throttle: RetryThrottle.make(options.retryThrottle),
    episodes,
    sendMarginMs: options.requestTimeoutMs * leaseSlack
  })
  /** False once shutdown begins: nothing new is accepted. */
  let accepting = true
  const overflow = yield* Overflow.make(options, store)

  // ---- intake --------------------------------------------------------------------------------

  const offer = (events: ReadonlyArray<StoredEvent>): Effect.Effect<void> =>
    Effect.suspend(() => {
      if (!accepting || events.length === 0) return Effect.void
      const epoch = barrier.current()
      let taken = 0
      while (taken < events.length && Queue.offerUnsafe(queue, item(events[taken]!, epoch))) taken++
      barrier.accepted(epoch, taken)
      return taken === events.length ? Effect.void : overflow.spill(taken === 0 ? events : events.slice(taken))
    })

  const submit = (events: ReadonlyArray<StoredEvent>): Effect.Effect<void> =>
    Effect.gen(function*() {
      for (const event of events) {
        if (!accepting) return
        // Delivered already; its delete is on the way (and if it never lands, the row comes due again).
        if (acks.awaitingDelete(event.rowId)) continue
        const next = item(event, barrier.current())
        // Counted before it is offered: a sender may settle it before `offer` returns.
        barrier.accepted(next.epoch, 1)
        if (Queue.offerUnsafe(queue, next)) continue
        const abandoned = settle([next], { _tag: "Abandoned", why: "the retransmitter stopped waiting for room" })
        const offered = yield* Queue.offer(queue, next).pipe(Effect.onInterrupt(() => abandoned))
        if (!offered) return yield* abandoned
      }
    })

  const awaitRoom = (n: number): Effect.Effect<void> =>
    Effect.suspend(() =>
      options.publishQueueCapacity - Queue.sizeUnsafe(queue) >= Math.min(n, options.publishQueueCapacity)
        ? Effect.void
        : Effect.andThen(Effect.sleep(roomPollMs), awaitRoom(n))
    )

  // ---- dispatch: batches from the queue to at most publishConcurrency senders ----------------

  const senders = yield* Semaphore.make(options.publishConcurrency)
  const inFlight = yield* FiberSet.make<void>()
  const limits: TakeBatch.BatchLimits<Item> = {
    maxWeight: options.publishBatchSize,
    bytes: { max: options.maxRequestBytes, overhead: requestOverhead, of: wireSize },
    lingerMs: options.publishLingerMs
  }
  const startSender = (batch: ReadonlyArray<Item>) =>
    Effect.andThen(
      senders.take(1),
      FiberSet.run(inFlight, send(batch).pipe(
        // A defect must not strand the batch (flush would wait for it): its rows stay in the table.
        Effect.catchDefect((defect) => settle(batch, { _tag: "Abandoned", why: `publisher defect: ${String(defect)}` })),
        Effect.ensuring(senders.release(1))
      ))
    )
  /** Each turn takes a batch and starts its sender; an item over the byte budget starts the next batch. */
  const dispatch = (held: Item | undefined): Effect.Effect<Item | undefined> =>
    Effect.flatMap(TakeBatch.take(queue, limits, held), (batch) => {
      advance(batch.items, "sending")
      const started = Effect.as(startSender(batch.items), batch.held)
      // An empty queue ends a full-queue episode (a no-op when there is none).
      return Queue.sizeUnsafe(queue) === 0 ? Effect.andThen(overflow.drained(), started) : started
    })
  yield* Effect.forkScoped(Effect.gen(function*() {
    let held: Item | undefined // this fiber's own: the item the last batch had no room for
    while (true) held = yield* dispatch(held)
  }))

  // ---- shutdown ------------------------------------------------------------------------------
  // Stop taking events, deliver what was accepted within the deadline, then stop every fiber
  // (interrupting requests in flight: no network work after the deadline). Rows not delivered
  // stay in the table. The dispatcher and the delete coalescer stop with the layer's scope.
  yield* Effect.addFinalizer(() =>
    Effect.gen(function*() {
      accepting = false
      const done = yield* barrier.flush.pipe(Effect.timeoutOption(yield* remainingOr(options.shutdownTimeoutMs)))
      if (done._tag === "None") {
        yield* Effect.logWarning("shutdown deadline passed; undelivered rows stay in the table", { pending: barrier.pending() })
      }
      yield* FiberSet.clear(inFlight)
    })
  )

  return Publisher.of({
    offer,
    submit,
    awaitRoom,
    flush: barrier.flush,
    state: Effect.map(health.state, (transport) => ({ queued: Queue.sizeUnsafe(queue), pending: barrier.pending(), transport }))
  })
})
