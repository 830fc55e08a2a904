/**
 * Spans and metrics as an application sees them through OpenTelemetry: the emitter runs with
 * @effect/opentelemetry's NodeSdk and in-memory exporters.
 */
import * as NodeSdk from "@effect/opentelemetry/NodeSdk"
import { assert, describe, it } from "@effect/vitest"
import { AggregationTemporality, type DataPoint, MetricReader, type ResourceMetrics } from "@opentelemetry/sdk-metrics"
import { InMemorySpanExporter, type ReadableSpan, SimpleSpanProcessor } from "@opentelemetry/sdk-trace-base"
import { Effect, Layer } from "effect"
import { DurableEmitter } from "../src/DurableEmitter.ts"
import { Emitter } from "../src/Emitter.ts"
import * as Event from "../src/Event.ts"
import * as MemoryStore from "../src/testing/MemoryStore.ts"
import { ScriptedTransport } from "../src/testing/ScriptedTransport.ts"

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

const points = (metrics: ResourceMetrics, name: string): Array<DataPoint<unknown>> =>
  metrics.scopeMetrics.flatMap((s) => s.metrics).filter((m) => m.descriptor.name === name).flatMap((m) => m.dataPoints as Array<DataPoint<unknown>>)

const setup = () => {
  const spans = new InMemorySpanExporter()
  const reader = new PullReader()
  const otel = NodeSdk.layer(() => ({
    resource: { serviceName: "durable-emitter-test" },
    spanProcessor: new SimpleSpanProcessor(spans),
    metricReader: reader
  }))
  const emitter = DurableEmitter.layerNoDeps({ name: "otel-test", writeLinger: 0, publishLinger: 0, deleteLinger: 0 }).pipe(
    Layer.provideMerge(Layer.mergeAll(MemoryStore.layer, ScriptedTransport.layer()))
  )
  return { spans, reader, layer: emitter.pipe(Layer.provideMerge(otel)) }
}

describe("observability", () => {
  it.live("a span per emit and per publish request; the event carries the emit span; delivery links to it", () => {
    const { layer, spans } = setup()
    return Effect.gen(function*() {
      // The emit spans are children of the caller's span; an untraced caller gets none.
      const receipts = yield* Effect.forEach([1, 2, 3], () => Emitter.emit({ source: "billing", type: "invoice.paid" }))
        .pipe(Effect.withSpan("checkout"))
      const untraced = yield* Emitter.emit({ source: "billing", type: "untraced" })
      yield* Emitter.flush
      const sent = yield* ScriptedTransport.use((s) => s.sentEvents)
      const finished: ReadonlyArray<ReadableSpan> = spans.getFinishedSpans()
      const emitSpans = finished.filter((s) => s.name === "Emitter.emit")
      assert.strictEqual(emitSpans.length, 3)
      const checkout = finished.find((s) => s.name === "checkout")!
      for (const span of emitSpans) assert.strictEqual(span.parentSpanContext?.spanId, checkout.spanContext().spanId)
      const untracedEvent = sent.find((e) => e.id === untraced.id)!
      assert.isUndefined(untracedEvent.cloudEvent!.attributes.traceparent)
      const publishSpans = finished.filter((s) => s.name === "Publisher.publishBatch")
      assert.isAtLeast(publishSpans.length, 1)
      for (const receipt of receipts) {
        const event = sent.find((e) => e.id === receipt.id)!
        const traceparent = String(Event.attributeValue(event.cloudEvent!.attributes.traceparent))
        const [, traceId, spanId] = traceparent.split("-")
        const emitSpan = emitSpans.find((s) => s.spanContext().spanId === spanId)
        assert.isDefined(emitSpan, `the emit span of ${receipt.id}`)
        assert.strictEqual(emitSpan!.spanContext().traceId, traceId)
        const linked = publishSpans.some((p) => p.links.some((l) => l.context.spanId === spanId && l.context.traceId === traceId))
        assert.isTrue(linked, `a publish span links to the emit span of ${receipt.id}`)
      }
      assert.strictEqual(publishSpans[0]!.attributes["publish.status"], "ok")
    }).pipe(Effect.provide(layer))
  })

  it.live("metrics are exported with their attributes", () => {
    const { layer, reader } = setup()
    return Effect.gen(function*() {
      yield* Effect.forEach([1, 2, 3, 4], () => Emitter.emit({ source: "metered", type: "otel.check" }))
      yield* Effect.flip(Emitter.emit({ source: "", type: "x" }))
      yield* Emitter.flush
      const { resourceMetrics } = yield* Effect.promise(() => reader.collect())
      const emits = points(resourceMetrics, "durable_emitter.emit.events")
        .find((p) => p.attributes.source === "metered" && p.attributes.type === "otel.check")
      assert.strictEqual(emits?.value, 4)
      const latency = points(resourceMetrics, "durable_emitter.emit.duration")
        .find((p) => p.attributes.source === "metered" && p.attributes.type === "otel.check")
      assert.strictEqual((latency?.value as { count: number } | undefined)?.count, 4)
      const errors = points(resourceMetrics, "durable_emitter.emit.errors").find((p) => p.attributes.reason === "InvalidEvent")
      assert.isAtLeast(Number(errors?.value), 1)
      const delivered = points(resourceMetrics, "durable_emitter.publish.delivered")
        .find((p) => p.attributes.source === "metered" && p.attributes.type === "otel.check")
      assert.strictEqual(delivered?.value, 4)
      const requests = points(resourceMetrics, "durable_emitter.publish.requests").find((p) => p.attributes.status === "ok")
      assert.isAtLeast(Number(requests?.value), 1)
      assert.isAtLeast(points(resourceMetrics, "durable_emitter.commit.batch_size").length, 1)
      assert.isAtLeast(points(resourceMetrics, "durable_emitter.publish.request_bytes").length, 1)
      const info = points(resourceMetrics, "durable_emitter.config.info").find((p) => p.attributes.name === "otel-test")
      assert.isDefined(info)
      assert.strictEqual(info!.attributes.publishBatchSize, "1000")
      assert.notProperty(info!.attributes, "databaseUrl")
    }).pipe(Effect.provide(layer))
  })
})
