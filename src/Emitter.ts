/**
 * The public facade. `emit` validates and encodes the event, then waits until the write path has
 * committed it: a receipt means the event is durable. Delivery happens afterwards, in the
 * background; `flush` waits for it.
 */
import { Clock, Context, type Duration, Effect, type Fiber, Layer, Option, Schema, Tracer } from "effect"
import type { EmitterOptions } from "./Config.ts"
import {
  type EmitError,
  EventTooLarge,
  InvalidEvent,
  NoTransaction,
  type TransactionalEmitError,
  TransactionOpen
} from "./Errors.ts"
import * as Event from "./Event.ts"
import { Health, type HealthReport } from "./Health.ts"
import * as Metrics from "./Metrics.ts"
import { Outbox } from "./Outbox.ts"
import { Publisher } from "./Publisher.ts"
import { Sequencer } from "./Sequencer.ts"
import type { Appended, NewEvent } from "./Store.ts"
import * as Semconv from "./telemetry/semconv.ts"

/** Proof that an event is committed. */
export interface EmitReceipt {
  /** CloudEvent id, identical on every delivery attempt. */
  readonly id: string
  /** Durable per-(source, type) sequence number, stamped as the `seqnum` attribute. */
  readonly seq: bigint
  readonly source: string
  readonly type: string
}

/**
 * Proof that an event is written in the caller's open transaction: it becomes durable when, and
 * only if, that transaction commits (a rollback leaves no trace: nothing stored, numbered or
 * delivered). Its sequence number is not known yet: it is assigned after the commit, when the
 * event is moved to the events table for delivery (see the README's "Transactional outbox").
 */
export interface TransactionalReceipt {
  readonly id: string
  readonly source: string
  readonly type: string
  /** Assigned after your commit; the delivered event carries it as `seqnum`. */
  readonly seq: undefined
  readonly durable: "when-your-transaction-commits"
}

/**
 * The receipt as data: `JSON.stringify(receipt)` throws on the bigint `seq`, so encode it first,
 * `JSON.stringify(Schema.encodeSync(EmitReceipt)(receipt))`, which writes `seq` as a decimal
 * string; `Schema.decodeUnknownSync(EmitReceipt)(JSON.parse(text))` reads it back.
 */
export const EmitReceipt = Schema.Struct({
  id: Schema.String,
  seq: Schema.BigIntFromString,
  source: Schema.String,
  type: Schema.String
})

/** What `flushWithin` answers. */
export interface FlushResult {
  /** Every event emitted before the call was resolved within the bound. */
  readonly complete: boolean
  /**
   * Events still unresolved when the bound passed (those emitted after the call included); 0 when
   * complete. They are not lost: they stay in the table and delivery goes on.
   */
  readonly pending: number
}

export type EmitterSettings = Pick<EmitterOptions, "name" | "maxEventBytes">

export class Emitter extends Context.Service<Emitter, {
  /** Commits one event; the receipt is returned only after the commit. */
  readonly emit: (event: Event.EmitInput) => Effect.Effect<EmitReceipt, EmitError>
  /** Commits several events in one transaction: all or none. Receipts in input order. */
  readonly emitAll: (events: ReadonlyArray<Event.EmitInput>) => Effect.Effect<ReadonlyArray<EmitReceipt>, EmitError>
  /**
   * Writes one event in the caller's open transaction of the emitter's client (the emitter built
   * with `DurableEmitter.layerFromClient`, the call inside that client's `sql.withTransaction`):
   * it commits or rolls back with the transaction. Fails with NoTransaction when none is open.
   */
  readonly emitInTransaction: (event: Event.EmitInput) => Effect.Effect<TransactionalReceipt, TransactionalEmitError>
  /** Several events in the caller's open transaction; receipts in input order. */
  readonly emitAllInTransaction: (
    events: ReadonlyArray<Event.EmitInput>
  ) => Effect.Effect<ReadonlyArray<TransactionalReceipt>, TransactionalEmitError>
  /**
   * Completes when every event emitted before the call is delivered (and its row deleted),
   * dead-lettered, or left to the retransmitter.
   */
  readonly flush: Effect.Effect<void>
  /** `flush`, waiting at most `within` (Effect's Clock): answers whether it completed and what was left. */
  readonly flushWithin: (within: Duration.Input) => Effect.Effect<FlushResult>
  /** Liveness of every loop, transport state, backlog against the TTL, and a verdict. */
  readonly health: Effect.Effect<HealthReport>
}>()("durable-emitter/Emitter") {
  static readonly layer = (settings: EmitterSettings): Layer.Layer<Emitter, never, Sequencer | Publisher | Health> =>
    Layer.effect(Emitter, make(settings))

  /** `yield* Emitter.emit(event)` inside a program that provides the Emitter. */
  static readonly emit = (event: Event.EmitInput) => Emitter.use((emitter) => emitter.emit(event))
  static readonly emitAll = (events: ReadonlyArray<Event.EmitInput>) => Emitter.use((emitter) => emitter.emitAll(events))
  static readonly emitInTransaction = (event: Event.EmitInput) => Emitter.use((emitter) => emitter.emitInTransaction(event))
  static readonly emitAllInTransaction = (events: ReadonlyArray<Event.EmitInput>) =>
    Emitter.use((emitter) => emitter.emitAllInTransaction(events))
  static readonly flush = Emitter.use((emitter) => emitter.flush)
  static readonly flushWithin = (within: Duration.Input) => Emitter.use((emitter) => emitter.flushWithin(within))
  static readonly health = Emitter.use((emitter) => emitter.health)
}

/** W3C traceparent of a span, carried in the event so a consumer continues the trace. */
const traceparentOf = (span: Tracer.AnySpan) => `00-${span.traceId}-${span.spanId}-${span.sampled ? "01" : "00"}`

const emitSpanAttributes = {
  [Semconv.ATTR_MESSAGING_SYSTEM]: Semconv.MESSAGING_SYSTEM,
  [Semconv.ATTR_MESSAGING_OPERATION_NAME]: Semconv.OPERATION_EMIT,
  [Semconv.ATTR_MESSAGING_OPERATION_TYPE]: Semconv.MESSAGING_OPERATION_TYPE_VALUE_CREATE
}

/** An emit inside the application's transaction: delivered only if that transaction commits. */
const transactionalSpanAttributes = { ...emitSpanAttributes, "durable_emitter.transactional": true }

/** What is known of the events once prepared: their destination, and the id of a single one. */
const annotateEmitSpan = (span: Tracer.AnySpan, prepared: ReadonlyArray<NewEvent>) => {
  if (span._tag !== "Span") return
  const destination = Semconv.sharedDestination(prepared)
  if (destination !== undefined) span.attribute(Semconv.ATTR_MESSAGING_DESTINATION_NAME, destination)
  if (prepared.length === 1) {
    const event = prepared[0]!
    span.attribute(Semconv.ATTR_MESSAGING_MESSAGE_ID, event.eventId)
    span.attribute(Semconv.ATTR_CLOUDEVENTS_EVENT_ID, event.eventId)
    span.attribute(Semconv.ATTR_CLOUDEVENTS_EVENT_SOURCE, event.source)
    span.attribute(Semconv.ATTR_CLOUDEVENTS_EVENT_TYPE, event.type)
  } else {
    span.attribute(Semconv.ATTR_MESSAGING_BATCH_MESSAGE_COUNT, prepared.length)
  }
}

/** Validates and encodes the inputs; the first refusal names its input's index in a batch. */
const prepareAll = (
  inputs: ReadonlyArray<Event.EmitInput>,
  context: Event.PrepareContext
): ReadonlyArray<NewEvent> | InvalidEvent | EventTooLarge => {
  const prepared: Array<NewEvent> = new Array(inputs.length)
  for (let i = 0; i < inputs.length; i++) {
    const event = Event.prepare(inputs[i]!, context)
    if (event instanceof InvalidEvent) {
      return inputs.length === 1 ? event : new InvalidEvent({ field: `[${i}].${event.field}`, rule: event.rule })
    }
    if (event instanceof EventTooLarge) return event
    prepared[i] = event
  }
  return prepared
}

const make = Effect.fnUntraced(function*(settings: EmitterSettings) {
  // Emits fail in the caller's fiber, which does not carry the emitter's metric attributes.
  const countError = (error: EmitError | TransactionalEmitError) =>
    Metrics.count(Metrics.emitErrors, 1, { reason: error._tag, emitter: settings.name })
  const failed = <E extends EmitError | TransactionalEmitError>(error: E) => Effect.andThen(countError(error), Effect.fail(error))

  const sequencer = yield* Sequencer
  const publisher = yield* Publisher
  const health = yield* Health

  /**
   * Validates and encodes the events, then commits them and answers `receipts` of what the store
   * assigned. Written against the fiber directly (its Clock, its current span): this runs once per
   * emit and every Effect step here costs.
   */
  const outbox = yield* Effect.serviceOption(Outbox)

  const prepareContext = (fiber: Fiber.Fiber<unknown, unknown>): Event.PrepareContext => {
    const span = Context.getOption(fiber.context, Tracer.ParentSpan)
    return {
      emitterName: settings.name,
      maxEventBytes: settings.maxEventBytes,
      now: fiber.getRef(Clock.Clock).currentTimeMillisUnsafe(),
      traceparent: span._tag === "Some" ? traceparentOf(span.value) : undefined
    }
  }

  /**
   * Validates and encodes the events, then commits them and answers `receipts` of what the store
   * assigned. Written against the fiber directly (its Clock, its current span): this runs once per
   * emit and every Effect step here costs. Inside an open transaction it refuses (it would commit
   * on its own): the caller wanted atomicity, and `emitInTransaction` gives it.
   */
  const commitOn = <A>(
    fiber: Fiber.Fiber<unknown, unknown>,
    inputs: ReadonlyArray<Event.EmitInput>,
    receipts: (prepared: ReadonlyArray<NewEvent>, appended: ReadonlyArray<Appended>) => A
  ): Effect.Effect<A, EmitError> => {
    const open = Option.isSome(outbox) ? outbox.value.openTransaction(fiber.context) : "none"
    if (open !== "none") return failed(new TransactionOpen({ client: open }))
    const prepared = prepareAll(inputs, prepareContext(fiber))
    if (!Array.isArray(prepared)) return failed(prepared as InvalidEvent | EventTooLarge)
    const span = Context.getOption(fiber.context, Tracer.ParentSpan)
    if (span._tag === "Some") annotateEmitSpan(span.value, prepared)
    return sequencer.submit(prepared, span._tag === "Some" ? span.value : undefined).pipe(
      Effect.map((appended) => receipts(prepared, appended)),
      Effect.tapError(countError)
    )
  }

  const writeInTransaction = (
    fiber: Fiber.Fiber<unknown, unknown>,
    inputs: ReadonlyArray<Event.EmitInput>
  ): Effect.Effect<ReadonlyArray<TransactionalReceipt>, TransactionalEmitError> => {
    if (Option.isNone(outbox)) {
      return failed(new NoTransaction({ reason: "the emitter is not built on your client: use DurableEmitter.layerFromClient" }))
    }
    const open = outbox.value.openTransaction(fiber.context)
    if (open !== "emitter") {
      return failed(new NoTransaction({
        reason: open === "other"
          ? "the open transaction belongs to another SqlClient than the emitter's"
          : "call it inside sql.withTransaction of the emitter's client"
      }))
    }
    const context = prepareContext(fiber)
    const prepared = prepareAll(inputs, context)
    if (!Array.isArray(prepared)) return failed(prepared as InvalidEvent | EventTooLarge)
    const span = Context.getOption(fiber.context, Tracer.ParentSpan)
    if (span._tag === "Some") annotateEmitSpan(span.value, prepared)
    return outbox.value.write(prepared, context.now).pipe(
      Effect.as(prepared.map((event): TransactionalReceipt => ({
        id: event.eventId, source: event.source, type: event.type, seq: undefined, durable: "when-your-transaction-commits"
      }))),
      Effect.tapError(countError)
    )
  }

  /**
   * The emit span is a child of the caller's span, made only when the caller is traced (as
   * OpenTelemetry instrumentations do with `requireParentSpan`): an untraced caller gets no root
   * span per event and pays nothing for one. It is the messaging conventions' create span,
   * `emit {destination}`; the event carries it as `traceparent`, the commit is its child (or
   * links to it), the publish request links to it.
   */
  const traced = <A, E extends { readonly _tag: string }>(
    inputs: ReadonlyArray<Event.EmitInput>,
    run: (fiber: Fiber.Fiber<unknown, unknown>) => Effect.Effect<A, E>,
    attributes: Record<string, unknown> = emitSpanAttributes
  ): Effect.Effect<A, E> =>
    Effect.withFiber((fiber) =>
      Context.getOption(fiber.context, Tracer.ParentSpan)._tag === "None"
        ? run(fiber)
        : Effect.withFiber(run).pipe(
          Effect.tapError((error) => Effect.annotateCurrentSpan(Semconv.ATTR_ERROR_TYPE, error._tag)),
          Effect.withSpan(Semconv.spanName(Semconv.OPERATION_EMIT, Semconv.sharedDestination(inputs)), {
            kind: "producer",
            attributes
          }, { captureStackTrace: false }) // its call site is this file, never the caller's: no stack per emit
        )
    )

  const receiptOf = (event: NewEvent, appended: Appended): EmitReceipt => ({
    id: event.eventId,
    seq: appended.seq,
    source: event.source,
    type: event.type
  })

  const emitAll = (inputs: ReadonlyArray<Event.EmitInput>) =>
    traced(inputs, (fiber) => commitOn(fiber, inputs, (prepared, appended) => prepared.map((event, i) => receiptOf(event, appended[i]!))))

  const emit = (input: Event.EmitInput) =>
    traced([input], (fiber) => commitOn(fiber, [input], (prepared, appended) => receiptOf(prepared[0]!, appended[0]!)))

  /** The same `emit {destination}` span, marked transactional: the event is written, not yet committed. */
  const inTransaction = <A>(inputs: ReadonlyArray<Event.EmitInput>, pick: (r: ReadonlyArray<TransactionalReceipt>) => A) =>
    traced(inputs, (fiber) => Effect.map(writeInTransaction(fiber, inputs), pick), transactionalSpanAttributes)

  // Committed transactional events are promoted first, so flush covers them too.
  const promoted = Option.match(outbox, {
    onNone: () => Effect.void,
    onSome: (o) => o.promoteAll.pipe(Effect.catchCause((cause) => Effect.logWarning("flush: promotion failed", { cause })))
  })

  /** Delivery of everything emitted before: committed transactional events are promoted first. */
  const flushAll = Effect.andThen(promoted, publisher.flush)

  const flushWithin = (within: Duration.Input): Effect.Effect<FlushResult> =>
    flushAll.pipe(
      Effect.timeoutOption(within),
      Effect.flatMap((done) =>
        Option.isSome(done)
          ? Effect.succeed({ complete: true, pending: 0 })
          : Effect.map(publisher.state, (state) => ({ complete: false, pending: state.pending }))
      ),
      Effect.withSpan("Emitter.flushWithin")
    )

  return Emitter.of({
    emit,
    emitAll,
    emitInTransaction: (input) => inTransaction([input], (r) => r[0]!),
    emitAllInTransaction: (inputs) => inTransaction(inputs, (r) => r),
    flush: flushAll.pipe(Effect.withSpan("Emitter.flush")),
    flushWithin,
    health: health.report
  })
})
