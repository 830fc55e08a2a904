/**
 * The write path. Concurrent `submit` calls wait in a bounded queue; a few committer fibers take
 * what is waiting (up to `writeBatchSize` rows, after an optional linger) and write it with ONE
 * `Store.append`. Every caller is answered after the commit, never before; a failed or timed-out
 * commit fails every caller of that batch. Committed events go to the Handoff without waiting.
 */
import { Cause, Clock, Context, Deferred, Duration, Effect, Exit, Fiber, Layer, Queue, Semaphore } from "effect"
import type { EmitterOptions } from "./Config.ts"
import { CommitFailed, EmitterClosed, EmitterOverloaded, StoreError } from "./Errors.ts"
import { Handoff } from "./Handoff.ts"
import * as Metrics from "./Metrics.ts"
import * as TakeBatch from "./publisher/takeBatch.ts"
import { type Appended, type NewEvent, Store, type StoredEvent } from "./Store.ts"

export type SequencerOptions = Pick<
  EmitterOptions,
  | "writeBatchSize" | "writeLingerMs" | "writeQueueCapacity" | "writeConcurrency"
  | "enqueueTimeoutMs" | "commitTimeoutMs" | "firstLeaseMs" | "shutdownTimeoutMs"
>

export type SubmitError = EmitterOverloaded | EmitterClosed | CommitFailed

/** A group of events committed together and the caller waiting for them. */
interface Pending {
  readonly events: ReadonlyArray<NewEvent>
  readonly done: Deferred.Deferred<ReadonlyArray<Appended>, CommitFailed>
  /** Clock time of the submit: emit latency is measured from it. */
  readonly submittedAt: number
}

export class Sequencer extends Context.Service<Sequencer, {
  /** Commits the events in one transaction and answers what the store assigned, in input order. */
  readonly submit: (events: ReadonlyArray<NewEvent>) => Effect.Effect<ReadonlyArray<Appended>, SubmitError>
  /** Emits waiting for a commit (an emitAll counts once), as `writeQueueCapacity` counts them. */
  readonly queued: Effect.Effect<number>
}>()("durable-emitter/Sequencer") {
  static readonly layer = (options: SequencerOptions): Layer.Layer<Sequencer, never, Store | Handoff> =>
    Layer.effect(Sequencer, make(options))
}

const toCommitFailed = (cause: Cause.Cause<StoreError | Cause.TimeoutError>): CommitFailed => {
  const error = Cause.findErrorOption(cause)
  if (error._tag === "Some" && error.value instanceof StoreError) {
    // A retryable store error (connection lost, timeout) may have happened after the commit.
    return new CommitFailed({ reason: error.value.message, retryable: error.value.retryable, committed: error.value.retryable ? "unknown" : "no" })
  }
  if (error._tag === "Some") return new CommitFailed({ reason: "the commit timed out", retryable: true, committed: "unknown" })
  if (Cause.hasInterruptsOnly(cause)) return new CommitFailed({ reason: "the emitter stopped during the commit", retryable: true, committed: "unknown" })
  return new CommitFailed({ reason: `unexpected failure: ${Cause.pretty(cause)}`, retryable: false, committed: "unknown" })
}

const make = Effect.fnUntraced(function*(options: SequencerOptions) {
  const store = yield* Store
  const handoff = yield* Handoff
  const queue = yield* Queue.bounded<Pending, Cause.Done>(options.writeQueueCapacity)

  /** A batch holds `writeBatchSize` rows (an emitAll is never split), after `writeLinger`. */
  const limits: TakeBatch.BatchLimits<Pending> = {
    maxWeight: options.writeBatchSize,
    weight: (p) => p.events.length,
    lingerMs: options.writeLingerMs
  }

  const commit = (taken: ReadonlyArray<Pending>) =>
    Effect.gen(function*() {
      const now = yield* Clock.currentTimeMillis
      // A caller waits at most commitTimeout in the queue (the commit itself is bounded below):
      // events that waited longer are refused uncommitted rather than answered late.
      const batch = yield* refuseStale(taken, now)
      if (batch.length === 0) return
      const events = batch.length === 1 ? batch[0]!.events : batch.flatMap((p) => p.events)
      const leaseUntil = now + options.firstLeaseMs
      const exit = yield* store.append(events, { now, nextAttemptAt: leaseUntil }).pipe(
        Effect.timeout(options.commitTimeoutMs),
        Metrics.trackCommit(events.length),
        Effect.exit
      )
      if (Exit.isFailure(exit)) {
        const error = toCommitFailed(exit.cause)
        yield* Effect.logWarning("commit failed", { events: events.length, reason: error.reason, retryable: error.retryable })
        for (const p of batch) yield* Deferred.fail(p.done, error)
        return
      }
      const appended = exit.value
      const committed = events.map((event, i): StoredEvent => ({
        rowId: appended[i]!.rowId, eventId: event.eventId, source: event.source, type: event.type,
        seq: appended[i]!.seq, payload: event.payload, createdAt: now, attempts: 0, leaseUntil,
        traceparent: event.traceparent
      }))
      yield* Metrics.countByKey(Metrics.emits, events)
      // Hand off before answering, so that an emit that has returned is covered by a later flush.
      yield* handoff.offer(committed)
      yield* answer(batch, appended)
    }).pipe(
      // Whatever happens (a defect, an interruption at shutdown), no caller of this batch waits forever.
      Effect.onExit((exit) =>
        Exit.isSuccess(exit) ? Effect.void : Effect.forEach(taken, (p) => Deferred.fail(p.done, toCommitFailed(exit.cause)), { discard: true })
      ),
      Effect.ignoreCause
    )

  /**
   * Answers every caller of a committed batch and records its emit latency: one synchronous step
   * for the whole batch (this runs for every event; an Effect step per caller or event would cost
   * more than the bookkeeping itself).
   */
  const answer = (batch: ReadonlyArray<Pending>, appended: ReadonlyArray<Appended>) =>
    Effect.withFiber((fiber) => {
      const committedAt = fiber.getRef(Clock.Clock).currentTimeMillisUnsafe()
      const context = fiber.context
      let at = 0
      let timer: ReturnType<typeof Metrics.emitLatencyOf> | undefined
      let source = ""
      let type = ""
      for (const p of batch) {
        Deferred.doneUnsafe(p.done, Exit.succeed(p.events.length === appended.length ? appended : appended.slice(at, at + p.events.length)))
        const latency = Duration.millis(committedAt - p.submittedAt)
        for (const e of p.events) {
          if (timer === undefined || e.source !== source || e.type !== type) {
            timer = Metrics.emitLatencyOf(e.source, e.type)
            source = e.source
            type = e.type
          }
          timer.updateUnsafe(latency, context)
        }
        at += p.events.length
      }
      return Effect.void
    })

  // One committer collects at a time (and lingers for all), while the others commit: batches
  // fill up during a commit instead of being split among idle committers.
  const collecting = Semaphore.makeUnsafe(1)
  const collect = Effect.map(TakeBatch.take(queue, limits), (batch) => batch.items)
  const committer = Effect.gen(function*() {
    while (true) {
      // What arrived during this committer's own commit is taken at once: the committer woken by
      // the first of those events would only get to them a scheduler turn later.
      const waiting = TakeBatch.fill(queue, limits, TakeBatch.empty(limits)).items
      yield* commit(waiting.length > 0 ? waiting : yield* collecting.withPermits(1)(collect))
    }
  }).pipe(Effect.catchIf(Cause.isDone, () => Effect.void))

  const committers = yield* Effect.forEach(
    Array.from({ length: options.writeConcurrency }),
    () => Effect.forkScoped(committer),
    { concurrency: "unbounded" }
  )

  // Shutdown: refuse new events, commit what is queued, then stop. Runs before the committers are
  // interrupted (finalizers run in reverse order of registration).
  yield* Effect.addFinalizer(() =>
    Effect.gen(function*() {
      yield* Queue.end(queue)
      const drained = yield* Fiber.joinAll(committers).pipe(Effect.timeoutOption(options.shutdownTimeoutMs))
      if (drained._tag === "None") {
        yield* Effect.logWarning("shutdown deadline passed with commits still queued")
        yield* Effect.forEach(committers, Fiber.interrupt, { discard: true })
        const stranded = yield* Queue.clear(queue).pipe(Effect.orElseSucceed(() => [] as Array<Pending>))
        const closed = new CommitFailed({ reason: "the emitter closed before the commit", retryable: true, committed: "no" })
        yield* Effect.forEach(stranded, (p) => Deferred.fail(p.done, closed), { discard: true })
      }
    })
  )

  const refuseStale = (batch: ReadonlyArray<Pending>, now: number) => {
    const stale = batch.filter((p) => now - p.submittedAt >= options.commitTimeoutMs)
    if (stale.length === 0) return Effect.succeed(batch)
    const error = new CommitFailed({ reason: "no commit within commitTimeout: the write queue is backed up", retryable: true, committed: "no" })
    return Effect.as(
      Effect.forEach(stale, (p) => Deferred.fail(p.done, error), { discard: true }),
      batch.filter((p) => !stale.includes(p))
    )
  }

  /** The slow path of a submit: the queue is full (wait for room, up to enqueueTimeout) or closed. */
  const enqueue = (pending: Pending): Effect.Effect<void, EmitterOverloaded | EmitterClosed> => {
    if (queue.state._tag !== "Open") return Effect.fail(new EmitterClosed())
    return Queue.offer(queue, pending).pipe(
      Effect.timeoutOption(options.enqueueTimeoutMs),
      Effect.flatMap((accepted): Effect.Effect<void, EmitterOverloaded | EmitterClosed> => {
        if (accepted._tag === "None") return Effect.fail(new EmitterOverloaded({ waitedMs: options.enqueueTimeoutMs }))
        return accepted.value ? Effect.void : Effect.fail(new EmitterClosed())
      })
    )
  }

  const submit = (events: ReadonlyArray<NewEvent>): Effect.Effect<ReadonlyArray<Appended>, SubmitError> =>
    events.length === 0 ? Effect.succeed([]) : Effect.withFiber((fiber) => {
      const done = Deferred.makeUnsafe<ReadonlyArray<Appended>, CommitFailed>()
      const pending: Pending = { events, done, submittedAt: fiber.getRef(Clock.Clock).currentTimeMillisUnsafe() }
      // No timeout here (it would cost a timer per emit): the committer refuses what waited longer
      // than commitTimeout and bounds each commit by it, and shutdown fails what is stranded.
      return Queue.offerUnsafe(queue, pending) ? Deferred.await(done) : Effect.andThen(enqueue(pending), Deferred.await(done))
    })

  return Sequencer.of({ submit, queued: Effect.sync(() => Queue.sizeUnsafe(queue)) })
})
