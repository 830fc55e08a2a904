/**
 * The public facade. `emit` validates and encodes the event, then waits until the write path has
 * committed it: a receipt means the event is durable. Delivery happens afterwards, in the
 * background; `flush` waits for it.
 */
import { Clock, Context, type Duration, Effect, type Fiber, Layer, Option, Schema, Tracer } from "effect"
import type { EmitterOptions } from "./Config.ts"
import { type EmitError, EventTooLarge, InvalidEvent } from "./Errors.ts"
import * as Event from "./Event.ts"
import { Health, type HealthReport } from "./Health.ts"
import * as Metrics from "./Metrics.ts"
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

const make = Effect.fnUntraced(function*(settings: EmitterSettings) {
  // Emits fail in the caller's fiber, which does not carry the emitter's metric attributes.
  const countError = (error: EmitError) => Metrics.count(Metrics.emitErrors, 1, { reason: error._tag, emitter: settings.name })
  const failed = (error: EmitError) => Effect.andThen(countError(error), Effect.fail(error))

  const sequencer = yield* Sequencer
  const publisher = yield* Publisher
  const health = yield* Health

  /**
   * Validates and encodes the events, then commits them and answers `receipts` of what the store
   * assigned. Written against the fiber directly (its Clock, its current span): this runs once per
   * emit and every Effect step here costs.
   */
  const commitOn = <A>(
    fiber: Fiber.Fiber<unknown, unknown>,
    inputs: ReadonlyArray<Event.EmitInput>,
    receipts: (prepared: ReadonlyArray<NewEvent>, appended: ReadonlyArray<Appended>) => A
  ): Effect.Effect<A, EmitError> => {
    const span = Context.getOption(fiber.context, Tracer.ParentSpan)
    const context: Event.PrepareContext = {
      emitterName: settings.name,
      maxEventBytes: settings.maxEventBytes,
      now: fiber.getRef(Clock.Clock).currentTimeMillisUnsafe(),
      traceparent: span._tag === "Some" ? traceparentOf(span.value) : undefined
    }
    const prepared: Array<NewEvent> = new Array(inputs.length)
    for (let i = 0; i < inputs.length; i++) {
      const event = Event.prepare(inputs[i]!, context)
      if (event instanceof InvalidEvent) {
        return failed(inputs.length === 1 ? event : new InvalidEvent({ field: `[${i}].${event.field}`, rule: event.rule }))
      }
      if (event instanceof EventTooLarge) return failed(event)
      prepared[i] = event
    }
    if (span._tag === "Some") annotateEmitSpan(span.value, prepared)
    return sequencer.submit(prepared, span._tag === "Some" ? span.value : undefined).pipe(
      Effect.map((appended) => receipts(prepared, appended)),
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
  const traced = <A>(
    inputs: ReadonlyArray<Event.EmitInput>,
    receipts: (prepared: ReadonlyArray<NewEvent>, appended: ReadonlyArray<Appended>) => A
  ): Effect.Effect<A, EmitError> =>
    Effect.withFiber((fiber) =>
      Context.getOption(fiber.context, Tracer.ParentSpan)._tag === "None"
        ? commitOn(fiber, inputs, receipts)
        : Effect.withFiber((inner) => commitOn(inner, inputs, receipts)).pipe(
          Effect.tapError((error) => Effect.annotateCurrentSpan(Semconv.ATTR_ERROR_TYPE, error._tag)),
          Effect.withSpan(Semconv.spanName(Semconv.OPERATION_EMIT, Semconv.sharedDestination(inputs)), {
            kind: "producer",
            attributes: emitSpanAttributes
          })
        )
    )

  const receiptOf = (event: NewEvent, appended: Appended): EmitReceipt => ({
    id: event.eventId,
    seq: appended.seq,
    source: event.source,
    type: event.type
  })

  const emitAll = (inputs: ReadonlyArray<Event.EmitInput>) =>
    traced(inputs, (prepared, appended) => prepared.map((event, i) => receiptOf(event, appended[i]!)))

  const emit = (input: Event.EmitInput) => traced([input], (prepared, appended) => receiptOf(prepared[0]!, appended[0]!))

  const flushWithin = (within: Duration.Input): Effect.Effect<FlushResult> =>
    publisher.flush.pipe(
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
    flush: publisher.flush.pipe(Effect.withSpan("Emitter.flush")),
    flushWithin,
    health: health.report
  })
})
