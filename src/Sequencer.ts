/**
 * The write path. Concurrent `submit` calls wait in a bounded queue; a few committer fibers take
 * what is waiting (up to `writeBatchSize` rows, after an optional linger) and write it with ONE
 * `Store.append`. Every caller is answered after the commit, never before, and within
 * `commitTimeout` of its submit: half of it for the queue (a watchdog refuses what waited longer,
 * even while every committer is busy), half for the commit. A batch the database refuses for one
 * event's data is split until that event fails alone; a commit whose outcome is unknown is
 * resolved by looking its events up. Committed events go to the Handoff without waiting.
 */
import { Cause, Clock, Context, Deferred, Effect, Exit, Fiber, Layer, Queue, Semaphore, Tracer } from "effect"
import type { EmitterOptions } from "./Config.ts"
import { CommitFailed, EmitterClosed, EmitterOverloaded, StoreError } from "./Errors.ts"
import { Handoff } from "./Handoff.ts"
import * as Metrics from "./Metrics.ts"
import { remainingOr } from "./ShutdownDeadline.ts"
import * as TakeBatch from "./publisher/takeBatch.ts"
import { makeBacklog } from "./sequencer/backlog.ts"
import * as Outcome from "./sequencer/outcome.ts"
import { type Appended, type NewEvent, Store, type StoredEvent } from "./Store.ts"
import * as Semconv from "./telemetry/semconv.ts"

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
  /** The caller's emit span when it is traced: the commit is its child, or links to it. */
  readonly span: Tracer.AnySpan | undefined
  /** Clock time of the submit: emit latency is measured from it. */
  readonly submittedAt: number
  /** Until then the group may wait in the queue; later it could not commit within commitTimeout. */
  readonly refuseAt: number
  /** submittedAt + commitTimeout: the caller is answered by then. */
  readonly deadline: number
  /** Set when a committer took it: from then on the commit path answers it, not the watchdog. */
  taken: boolean
}

export class Sequencer extends Context.Service<Sequencer, {
  /** Commits the events in one transaction and answers what the store assigned, in input order. */
  readonly submit: (events: ReadonlyArray<NewEvent>, span?: Tracer.AnySpan) => Effect.Effect<ReadonlyArray<Appended>, SubmitError>
  /** Emits waiting for a commit (an emitAll counts once), as `writeQueueCapacity` counts them. */
  readonly queued: Effect.Effect<number>
}>()("durable-emitter/Sequencer") {
  static readonly layer = (options: SequencerOptions): Layer.Layer<Sequencer, never, Store | Handoff> =>
    Layer.effect(Sequencer, make(options))
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

  const commitBudgetMs = Outcome.commitBudgetMs(options.commitTimeoutMs)
  const queueBudgetMs = options.commitTimeoutMs - commitBudgetMs
  const backlog = makeBacklog<Pending>((p) => p.taken || Deferred.isDoneUnsafe(p.done))
  let episode: Outcome.Episode | undefined

  const commit = (taken: ReadonlyArray<Pending>) =>
    Effect.gen(function*() {
      for (const p of taken) p.taken = true
      backlog.first()
      const now = yield* Clock.currentTimeMillis
      // Whatever waited past its share of the queue is refused, uncommitted: it could not be
      // answered within commitTimeout if the commit took its full budget.
      const batch = refuseStale(taken, now)
      if (batch.length > 0) yield* commitGroup(batch)
    }).pipe(
      // Whatever happens (a defect, an interruption at shutdown), no caller of this batch waits forever.
      Effect.onExit((exit) =>
        Exit.isSuccess(exit) ? Effect.void : Effect.forEach(taken, (p) => Deferred.fail(p.done, Outcome.toCommitFailed(exit.cause)), { discard: true })
      ),
      Effect.ignoreCause
    )

  /** Commits a group of callers in one append; on a refusal of one event's data, each half alone. */
  const commitGroup = (group: ReadonlyArray<Pending>): Effect.Effect<void> =>
    Effect.gen(function*() {
      const now = yield* Clock.currentTimeMillis
      const budget = Math.min(commitBudgetMs, deadlineOf(group) - now)
      if (budget <= 0) return yield* failAll(group, Outcome.backedUp)
      const events = group.length === 1 ? group[0]!.events : group.flatMap((p) => p.events)
      const leaseUntil = now + options.firstLeaseMs
      const exit = yield* store.append(events, { now, nextAttemptAt: leaseUntil }).pipe(
        Effect.timeout(budget),
        tracedCommit(group, events.length),
        Metrics.trackCommit(events.length),
        Effect.exit
      )
      if (Exit.isSuccess(exit)) return yield* committed(group, events, exit.value, now, leaseUntil)
      const error = Outcome.toCommitFailed(exit.cause)
      const storeError = Cause.findErrorOption(exit.cause)
      if (storeError._tag === "Some" && storeError.value instanceof StoreError && Outcome.refusedForItsData(storeError.value)) {
        if (group.length === 1) return yield* failAll(group, Outcome.refusedAlone(error))
        const half = Math.ceil(group.length / 2)
        yield* commitGroup(group.slice(0, half))
        return yield* commitGroup(group.slice(half))
      }
      if (error.committed === "unknown") {
        const found = yield* resolve(group, events, now, leaseUntil)
        if (found === "committed") return
        if (found === "not committed") {
          return yield* failed(group, new CommitFailed({ reason: `${error.reason} (looked up afterwards: not committed)`, retryable: true, committed: "no" }))
        }
      }
      yield* failed(group, error)
    })

  /** Hands a committed group's events off, then answers its callers; a success ends a failure episode. */
  const committed = (
    group: ReadonlyArray<Pending>,
    events: ReadonlyArray<NewEvent>,
    appended: ReadonlyArray<Appended>,
    now: number,
    leaseUntil: number
  ) =>
    Effect.gen(function*() {
      const rows = events.map((event, i): StoredEvent => ({
        rowId: appended[i]!.rowId, eventId: event.eventId, source: event.source, type: event.type,
        seq: appended[i]!.seq, payload: event.payload, createdAt: now, attempts: 0, leaseUntil,
        traceparent: event.traceparent
      }))
      yield* Metrics.countByKey(Metrics.emits, events)
      // Hand off before answering, so that an emit that has returned is covered by a later flush.
      yield* handoff.offer(rows)
      yield* answer(group, appended)
      if (episode !== undefined) yield* endEpisode
    })

  const endEpisode = Effect.suspend(() => {
    const ended = episode
    episode = undefined
    if (ended === undefined) return Effect.void
    return Effect.flatMap(Clock.currentTimeMillis, (now) => Effect.logInfo("commits succeed again", Outcome.episodeSummary(ended, now)))
  })

  /** Fails a group's callers, counting the failure in the episode (warned once, when it starts). */
  const failed = (group: ReadonlyArray<Pending>, error: CommitFailed) =>
    Effect.gen(function*() {
      const now = yield* Clock.currentTimeMillis
      const starts = episode === undefined
      episode = Outcome.failureIn(episode, now, error, group.length)
      if (starts) {
        yield* Effect.logWarning("commits failing; further failures are counted until a commit succeeds", {
          reason: error.reason, retryable: error.retryable, committed: error.committed, emits: group.length
        })
      }
      yield* failAll(group, error)
    })

  /**
   * The outcome of an append that ended without an answer: once the database has certainly ended
   * the statement (its own bound is shorter than the commit budget), looks the events up, within
   * the callers' time. Until their lease passes nobody else can have claimed or deleted the rows.
   */
  const resolve = (group: ReadonlyArray<Pending>, events: ReadonlyArray<NewEvent>, sentAt: number, leaseUntil: number) =>
    Effect.gen(function*() {
      const deadline = Math.min(deadlineOf(group), leaseUntil)
      const settledAt = sentAt + commitBudgetMs
      const ids = events.map((e) => e.eventId)
      let now = yield* Clock.currentTimeMillis
      if (now < settledAt) yield* Effect.sleep(settledAt - now)
      while ((now = yield* Clock.currentTimeMillis) < deadline) {
        const exit = yield* store.lookup(ids, leaseUntil).pipe(Effect.timeout(deadline - now), Effect.exit)
        if (Exit.isSuccess(exit)) {
          const appended = inInputOrder(ids, exit.value)
          if (appended !== undefined) {
            yield* committed(group, events, appended, sentAt, leaseUntil)
            return "committed" as const
          }
          // One transaction: all of its rows or none of them.
          return exit.value.length === 0 ? "not committed" as const : "unknown" as const
        }
        yield* Effect.sleep(Math.min(lookupRetryMs, Math.max(1, deadline - now)))
      }
      return "unknown" as const
    })

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
      let histogram: ReturnType<typeof Metrics.emitDurationOf> | undefined
      let source = ""
      let type = ""
      for (const p of batch) {
        Deferred.doneUnsafe(p.done, Exit.succeed(p.events.length === appended.length ? appended : appended.slice(at, at + p.events.length)))
        const seconds = (committedAt - p.submittedAt) / 1000
        for (const e of p.events) {
          if (histogram === undefined || e.source !== source || e.type !== type) {
            histogram = Metrics.emitDurationOf(e.source, e.type)
            source = e.source
            type = e.type
          }
          histogram.updateUnsafe(seconds, context)
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

  // Committers run untraced: a commit makes a span only for traced emits (see tracedCommit).
  const committers = yield* Effect.forEach(
    Array.from({ length: options.writeConcurrency }),
    () => Effect.forkScoped(Effect.withTracerEnabled(committer, false)),
    { concurrency: "unbounded" }
  )

  /** Refuses, uncommitted, what waited past its share of the queue; skips what is answered already. */
  const refuseStale = (batch: ReadonlyArray<Pending>, now: number): ReadonlyArray<Pending> => {
    let fresh = 0
    for (const p of batch) {
      if (Deferred.isDoneUnsafe(p.done)) continue
      if (now >= p.refuseAt) Deferred.doneUnsafe(p.done, Exit.fail(Outcome.backedUp))
      else fresh++
    }
    return fresh === batch.length ? batch : batch.filter((p) => !Deferred.isDoneUnsafe(p.done))
  }

  const refuseIfQueued = (p: Pending) => {
    if (!p.taken) Deferred.doneUnsafe(p.done, Exit.fail(Outcome.backedUp))
  }

  /**
   * Refuses queued emits when their share of the queue has passed, even while every committer is
   * busy. It sleeps until the oldest one's time: queue order is submit order, and one that
   * arrives while the watchdog sleeps is younger than what it sleeps for.
   */
  const watchdog = Effect.gen(function*() {
    while (true) {
      const now = yield* Clock.currentTimeMillis
      const oldest = backlog.first()
      if (oldest === undefined) yield* Effect.sleep(queueBudgetMs)
      else if (oldest.refuseAt > now) yield* Effect.sleep(oldest.refuseAt - now)
      else refuseIfQueued(oldest)
    }
  })
  yield* Effect.forkScoped(watchdog)

  // Shutdown: refuse new events, commit what is queued, then stop. Runs before the committers and
  // the watchdog are interrupted (finalizers run in reverse order of registration).
  yield* Effect.addFinalizer(() =>
    Effect.gen(function*() {
      yield* Queue.end(queue)
      const drained = yield* Fiber.joinAll(committers).pipe(Effect.timeoutOption(yield* remainingOr(options.shutdownTimeoutMs)))
      if (drained._tag === "None") {
        yield* Effect.logWarning("shutdown deadline passed with commits still queued")
        yield* Effect.forEach(committers, Fiber.interrupt, { discard: true })
        const stranded = yield* Queue.clear(queue).pipe(Effect.orElseSucceed(() => [] as Array<Pending>))
        const closed = new CommitFailed({ reason: "the emitter closed before the commit", retryable: true, committed: "no" })
        yield* Effect.forEach(stranded, (p) => Deferred.fail(p.done, closed), { discard: true })
      }
      if (episode !== undefined) {
        const now = yield* Clock.currentTimeMillis
        yield* Effect.logWarning("stopped while commits were failing", Outcome.episodeSummary(episode, now))
      }
    })
  )

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

  /** A submit that waited for room in the queue: it is not in the backlog, so it has a timer of its own. */
  const awaitSlow = (pending: Pending) =>
    Effect.raceFirst(
      Deferred.await(pending.done),
      Effect.flatMap(Clock.currentTimeMillis, (now) => Effect.sleep(Math.max(0, pending.refuseAt - now))).pipe(
        Effect.andThen(Effect.sync(() => refuseIfQueued(pending))),
        Effect.andThen(Deferred.await(pending.done))
      )
    )

  const submit = (events: ReadonlyArray<NewEvent>, span?: Tracer.AnySpan): Effect.Effect<ReadonlyArray<Appended>, SubmitError> =>
    events.length === 0 ? Effect.succeed([]) : Effect.withFiber((fiber) => {
      const done = Deferred.makeUnsafe<ReadonlyArray<Appended>, CommitFailed>()
      const submittedAt = fiber.getRef(Clock.Clock).currentTimeMillisUnsafe()
      const pending: Pending = {
        events, done, span, submittedAt, refuseAt: submittedAt + queueBudgetMs, deadline: submittedAt + options.commitTimeoutMs, taken: false
      }
      // No timer per emit: the watchdog refuses what waited too long in the queue, each commit is
      // bounded by the commit budget, and shutdown fails what is stranded.
      if (Queue.offerUnsafe(queue, pending)) {
        backlog.push(pending)
        return Deferred.await(done)
      }
      return Effect.andThen(enqueue(pending), awaitSlow(pending))
    })

  return Sequencer.of({ submit, queued: Effect.sync(() => Queue.sizeUnsafe(queue)) })
})

/**
 * The commit's span, made only when an emit of the batch is traced: the child of a lone traced
 * emit, else a span linked to the traced emits of the batch (as the messaging conventions do for
 * batches). Committers run with the tracer off, so an untraced batch makes no span (nor do the
 * store's and the driver's spans under it), and costs nothing for it.
 */
const maxCommitLinks = 32
const tracedCommit = (group: ReadonlyArray<Pending>, events: number) => <A, E, R>(self: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> => {
  let first: Tracer.AnySpan | undefined
  let links: Array<Tracer.SpanLink> | undefined
  for (const p of group) {
    if (p.span === undefined) continue
    if (first === undefined) first = p.span
    else if ((links ??= [{ span: first, attributes: {} }]).length < maxCommitLinks) links.push({ span: p.span, attributes: {} })
  }
  if (first === undefined) return self
  const attributes = { [Semconv.ATTR_MESSAGING_BATCH_MESSAGE_COUNT]: events }
  const options: Tracer.SpanOptions = links === undefined ? { parent: first, attributes } : { root: true, links, attributes }
  return self.pipe(Effect.withSpan("Sequencer.commit", options), Effect.withTracerEnabled(true))
}

/** Between lookups of an unknown outcome while the database does not answer. */
const lookupRetryMs = 200

const deadlineOf = (group: ReadonlyArray<Pending>) => {
  let deadline = Infinity
  for (const p of group) if (p.deadline < deadline) deadline = p.deadline
  return deadline
}

const failAll = (group: ReadonlyArray<Pending>, error: CommitFailed) =>
  Effect.sync(() => {
    for (const p of group) Deferred.doneUnsafe(p.done, Exit.fail(error))
  })

/** The rows found for `ids`, in their order; undefined unless every id was found. */
const inInputOrder = (ids: ReadonlyArray<string>, found: ReadonlyArray<Appended>): ReadonlyArray<Appended> | undefined => {
  if (found.length !== ids.length) return undefined
  const byId = new Map(found.map((a) => [a.eventId, a]))
  const ordered = ids.map((id) => byId.get(id))
  return ordered.every((a) => a !== undefined) ? ordered as ReadonlyArray<Appended> : undefined
}
