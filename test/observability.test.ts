/**
 * Spans, metrics and logs as an application sees them through OpenTelemetry: the emitter runs with
 * @effect/opentelemetry's NodeSdk and in-memory exporters. They follow the messaging semantic
 * conventions (the constants come from @opentelemetry/semantic-conventions itself), an idle
 * emitter makes no spans, and every series and log line carries the emitter's name.
 */
import * as NodeSdk from "@effect/opentelemetry/NodeSdk"
import { assert, describe, it } from "@effect/vitest"
import { SpanKind } from "@opentelemetry/api"
import { AggregationTemporality, type DataPoint, MetricReader, type ResourceMetrics } from "@opentelemetry/sdk-metrics"
import { InMemorySpanExporter, type ReadableSpan, SimpleSpanProcessor } from "@opentelemetry/sdk-trace-base"
import { ATTR_ERROR_TYPE } from "@opentelemetry/semantic-conventions"
import {
  ATTR_MESSAGING_BATCH_MESSAGE_COUNT,
  ATTR_MESSAGING_DESTINATION_NAME,
  ATTR_MESSAGING_MESSAGE_ID,
  ATTR_MESSAGING_OPERATION_NAME,
  ATTR_MESSAGING_OPERATION_TYPE,
  ATTR_MESSAGING_SYSTEM,
  MESSAGING_OPERATION_TYPE_VALUE_CREATE,
  MESSAGING_OPERATION_TYPE_VALUE_SEND,
  METRIC_MESSAGING_CLIENT_OPERATION_DURATION,
  METRIC_MESSAGING_CLIENT_SENT_MESSAGES
} from "@opentelemetry/semantic-conventions/incubating"
import { Clock, Effect, Layer, Logger, References } from "effect"
import * as Config from "../src/Config.ts"
import { DurableEmitter } from "../src/DurableEmitter.ts"
import { Emitter } from "../src/Emitter.ts"
import * as Event from "../src/Event.ts"
import { Store } from "../src/Store.ts"
import * as MemoryStore from "../src/testing/MemoryStore.ts"
import { Script, ScriptedTransport } from "../src/testing/ScriptedTransport.ts"

/** A reader the test pulls from. */
class PullReader extends MetricReader {
  constructor() {
    super({ aggregationTemporalitySelector: () => AggregationTemporality.CUMULATIVE })
  }
  protected override onForceFlush() {
    return Promise.resolve()
  }
  protected override onShutdown() {
    return Promise.resolve()
  }
}

const metricsNamed = (metrics: ResourceMetrics, name: string) =>
  metrics.scopeMetrics.flatMap((s) => s.metrics).filter((m) => m.descriptor.name === name)

const points = (metrics: ResourceMetrics, name: string): Array<DataPoint<unknown>> =>
  metricsNamed(metrics, name).flatMap((m) => m.dataPoints as Array<DataPoint<unknown>>)

const name = "otel-test"

const setup = (options: Config.EmitterOptionsInput = {}) => {
  const spans = new InMemorySpanExporter()
  const reader = new PullReader()
  const logs: Array<{ readonly message: unknown; readonly annotations: Readonly<Record<string, unknown>> }> = []
  const otel = NodeSdk.layer(() => ({
    resource: { serviceName: "durable-emitter-test" },
    spanProcessor: new SimpleSpanProcessor(spans),
    metricReader: reader
  }))
  const recordLogs = Logger.layer([Logger.make(({ fiber, message }) => {
    logs.push({ message, annotations: fiber.getRef(References.CurrentLogAnnotations) })
  })])
  const emitter = DurableEmitter.layerNoDeps({ name, writeLinger: 0, publishLinger: 0, deleteLinger: 0, ...options }).pipe(
    Layer.provideMerge(Layer.mergeAll(MemoryStore.layer, ScriptedTransport.layer()))
  )
  return { spans, reader, logs, layer: emitter.pipe(Layer.provideMerge(otel), Layer.provide(recordLogs)) }
}

const messaging = (span: ReadableSpan) => ({
  system: span.attributes[ATTR_MESSAGING_SYSTEM],
  operation: span.attributes[ATTR_MESSAGING_OPERATION_NAME],
  type: span.attributes[ATTR_MESSAGING_OPERATION_TYPE],
  destination: span.attributes[ATTR_MESSAGING_DESTINATION_NAME]
})

describe("observability", () => {
  it.live("emit (create) and publish (send) spans per the messaging conventions; the commit is the emit's child", () => {
    const { layer, spans } = setup()
    return Effect.gen(function*() {
      // The emit spans are children of the caller's span; an untraced caller gets none.
      const receipts = yield* Effect.forEach([1, 2, 3], () => Emitter.emit({ source: "billing", type: "invoice.paid" }))
        .pipe(Effect.withSpan("checkout"))
      const untraced = yield* Emitter.emit({ source: "billing", type: "untraced" })
      yield* Emitter.flush
      const sent = yield* ScriptedTransport.use((s) => s.sentEvents)
      const finished: ReadonlyArray<ReadableSpan> = spans.getFinishedSpans()
      const checkout = finished.find((s) => s.name === "checkout")!

      const emitSpans = finished.filter((s) => s.name === "emit billing/invoice.paid")
      assert.strictEqual(emitSpans.length, 3)
      for (const span of emitSpans) {
        assert.strictEqual(span.kind, SpanKind.PRODUCER)
        assert.strictEqual(span.parentSpanContext?.spanId, checkout.spanContext().spanId)
        assert.deepStrictEqual(messaging(span), {
          system: "chip_ingress", operation: "emit", type: MESSAGING_OPERATION_TYPE_VALUE_CREATE, destination: "billing/invoice.paid"
        })
      }
      assert.deepStrictEqual(emitSpans.map((s) => s.attributes[ATTR_MESSAGING_MESSAGE_ID]).sort(), receipts.map((r) => r.id).sort())
      assert.isFalse(finished.some((s) => s.name.includes("untraced")), "an untraced emit makes no span")
      const untracedEvent = sent.find((e) => e.id === untraced.id)!
      assert.isUndefined(untracedEvent.cloudEvent!.attributes.traceparent)

      // Each commit (one emit per batch here) is the child of its emit span, the store's append under it.
      const commits = finished.filter((s) => s.name === "Sequencer.commit")
      assert.strictEqual(commits.length, 3)
      for (const commit of commits) {
        const parent = emitSpans.find((e) => e.spanContext().spanId === commit.parentSpanContext?.spanId)
        assert.isDefined(parent, "the commit's parent is an emit span")
        assert.strictEqual(commit.spanContext().traceId, checkout.spanContext().traceId)
        assert.strictEqual(commit.attributes[ATTR_MESSAGING_BATCH_MESSAGE_COUNT], 1)
      }
      const appends = finished.filter((s) => s.name === "MemoryStore.append")
      assert.strictEqual(appends.length, 3, "the untraced emit's append makes no span either")
      for (const append of appends) assert.isTrue(commits.some((c) => c.spanContext().spanId === append.parentSpanContext?.spanId))

      const sendSpans = finished.filter((s) => s.name.startsWith("send"))
      assert.isAtLeast(sendSpans.length, 1)
      for (const span of sendSpans) {
        assert.strictEqual(span.kind, SpanKind.CLIENT)
        assert.strictEqual(messaging(span).system, "chip_ingress")
        assert.strictEqual(messaging(span).operation, "send")
        assert.strictEqual(messaging(span).type, MESSAGING_OPERATION_TYPE_VALUE_SEND)
        assert.strictEqual(span.name, messaging(span).destination === undefined ? "send" : `send ${messaging(span).destination}`)
        assert.isUndefined(span.attributes[ATTR_ERROR_TYPE])
      }
      for (const receipt of receipts) {
        const event = sent.find((e) => e.id === receipt.id)!
        const traceparent = String(Event.attributeValue(event.cloudEvent!.attributes.traceparent))
        const [, traceId, spanId] = traceparent.split("-")
        const emitSpan = emitSpans.find((s) => s.spanContext().spanId === spanId)
        assert.isDefined(emitSpan, `the emit span of ${receipt.id}`)
        assert.strictEqual(emitSpan!.spanContext().traceId, traceId)
        const linked = sendSpans.some((p) => p.links.some((l) => l.context.spanId === spanId && l.context.traceId === traceId))
        assert.isTrue(linked, `a send span links to the emit span of ${receipt.id}`)
      }
    }).pipe(Effect.provide(layer))
  })

  it.live("a failed emit and a failed request carry error.type", () => {
    const { layer, spans } = setup()
    return Effect.gen(function*() {
      yield* Effect.flip(Emitter.emit({ source: "", type: "refused" })).pipe(Effect.withSpan("caller"))
      yield* ScriptedTransport.use((s) => s.push(Script.permanent("invalid_argument")))
      yield* Emitter.emit({ source: "billing", type: "doomed" }).pipe(Effect.withSpan("caller"))
      yield* Emitter.flush
      const finished = spans.getFinishedSpans()
      const refused = finished.find((s) => s.name === "emit /refused")
      assert.isDefined(refused, finished.map((s) => s.name).join(", "))
      assert.strictEqual(refused!.attributes[ATTR_ERROR_TYPE], "InvalidEvent")
      const failedSend = finished.find((s) => s.name === "send billing/doomed" && s.attributes[ATTR_ERROR_TYPE] !== undefined)
      assert.isDefined(failedSend, finished.map((s) => `${s.name} ${JSON.stringify(s.attributes)}`).join("\n"))
      assert.strictEqual(failedSend!.attributes[ATTR_ERROR_TYPE], "invalid_argument")
    }).pipe(Effect.provide(layer))
  })

  it.live("an idle emitter makes no spans; a retransmit that claimed rows makes one", () => {
    const { layer, spans } = setup({ retransmitInterval: "50 millis", statsInterval: "50 millis", expiryInterval: "50 millis" })
    return Effect.gen(function*() {
      yield* Effect.sleep("400 millis") // about 8 ticks of each loop
      assert.deepStrictEqual(spans.getFinishedSpans().map((s) => s.name), [])
      // A row due now, as a crashed process leaves it: the retransmitter claims and delivers it.
      const now = yield* Clock.currentTimeMillis
      const event = Event.prepare({ source: "billing", type: "left.behind" }, { emitterName: name, maxEventBytes: 1 << 20, now, traceparent: undefined })
      assert.isFalse(event instanceof Error)
      yield* Store.use((store) => store.append([event as Exclude<typeof event, Error>], { now, nextAttemptAt: now }))
      yield* Emitter.flush
      yield* Effect.sleep("200 millis")
      const names = spans.getFinishedSpans().map((s) => s.name)
      const claims = spans.getFinishedSpans().filter((s) => s.name === "Retransmitter.claim")
      assert.strictEqual(claims.length, 1, names.join(", "))
      assert.strictEqual(claims[0]!.attributes[ATTR_MESSAGING_BATCH_MESSAGE_COUNT], 1)
      // Besides: the test's own append and flush, the send with its transport call.
      const expected = ["Retransmitter.claim", "MemoryStore.append", "Emitter.flush", "ScriptedTransport.publishBatch", "send billing/left.behind"]
      assert.isTrue(names.every((n) => expected.includes(n)), names.join(", "))
    }).pipe(Effect.provide(layer))
  })

  it.live("metrics per the conventions (seconds, messages, UCUM units); every series and log line names the emitter", () => {
    const { layer, reader, logs } = setup()
    return Effect.gen(function*() {
      yield* Effect.forEach([1, 2, 3, 4], () => Emitter.emit({ source: "metered", type: "otel.check" }))
      yield* Effect.flip(Emitter.emit({ source: "", type: "x" }))
      yield* Emitter.flush
      yield* ScriptedTransport.use((s) => s.push(Script.reject([0], "SCHEMA_MISSING")))
      yield* Emitter.emit({ source: "metered", type: "refused" })
      yield* Emitter.flush
      const { resourceMetrics } = yield* Effect.promise(() => reader.collect())
      const sentOf = (type: string) =>
        points(resourceMetrics, METRIC_MESSAGING_CLIENT_SENT_MESSAGES).filter((p) => p.attributes[ATTR_MESSAGING_DESTINATION_NAME] === `metered/${type}`)
      const sent = sentOf("otel.check")
      assert.strictEqual(sent.length, 1, JSON.stringify(sent))
      assert.strictEqual(sent[0]!.value, 4)
      assert.deepInclude(sent[0]!.attributes, { [ATTR_MESSAGING_SYSTEM]: "chip_ingress", [ATTR_MESSAGING_OPERATION_NAME]: "send", emitter: name })
      assert.isUndefined(sent[0]!.attributes[ATTR_ERROR_TYPE])
      const refused = sentOf("refused")
      assert.strictEqual(refused.length, 1)
      assert.strictEqual(refused[0]!.attributes[ATTR_ERROR_TYPE], "SCHEMA_MISSING")

      const durations = metricsNamed(resourceMetrics, METRIC_MESSAGING_CLIENT_OPERATION_DURATION)
      assert.isAtLeast(durations.length, 1)
      for (const m of durations) assert.strictEqual(m.descriptor.unit, "s")
      const durationPoints = points(resourceMetrics, METRIC_MESSAGING_CLIENT_OPERATION_DURATION)
      const create = durationPoints.find((p) =>
        p.attributes[ATTR_MESSAGING_OPERATION_TYPE] === "create" && p.attributes[ATTR_MESSAGING_DESTINATION_NAME] === "metered/otel.check")
      const histogram = create?.value as { count: number; max?: number } | undefined
      assert.strictEqual(histogram?.count, 4)
      assert.isBelow(histogram!.max!, 5, "in seconds")
      assert.isDefined(durationPoints.find((p) => p.attributes[ATTR_MESSAGING_OPERATION_TYPE] === "send"))

      for (const bytes of ["durable_emitter.publish.request_bytes", "durable_emitter.table.payload_bytes"]) {
        for (const m of metricsNamed(resourceMetrics, bytes)) assert.strictEqual(m.descriptor.unit, "By", bytes)
      }
      for (const m of metricsNamed(resourceMetrics, "durable_emitter.commit.duration")) assert.strictEqual(m.descriptor.unit, "ms")

      // The name: on every series (emits fail in the caller's fiber and name it themselves) ...
      const all = resourceMetrics.scopeMetrics.flatMap((s) => s.metrics)
      const ours = all.filter((m) => m.descriptor.name.startsWith("durable_emitter.") || m.descriptor.name.startsWith("messaging."))
      assert.isAtLeast(ours.length, 10)
      for (const m of ours) {
        for (const p of m.dataPoints) assert.strictEqual(p.attributes.emitter, name, `${m.descriptor.name} ${JSON.stringify(p.attributes)}`)
      }
      const errors = points(resourceMetrics, "durable_emitter.emit.errors").find((p) => p.attributes.reason === "InvalidEvent")
      assert.isAtLeast(Number(errors?.value), 1)
      const info = points(resourceMetrics, "durable_emitter.config.info").find((p) => p.attributes.name === name)
      assert.isDefined(info)
      assert.strictEqual(info!.attributes.publishBatchSize, "1000")
      assert.notProperty(info!.attributes, "databaseUrl")
      // ... and on every log line.
      assert.isAtLeast(logs.length, 1)
      for (const log of logs) assert.strictEqual(log.annotations.emitter, name, JSON.stringify(log.message))
    }).pipe(Effect.provide(layer))
  })
})
