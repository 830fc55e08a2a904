/**
 * `Metrics.series`: a series with attributes built once, addressing the same series as
 * `Metric.withAttributes` (so exporters, tests and users see one series), with its options kept.
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect, Metric } from "effect"
import * as Metrics from "../src/Metrics.ts"

describe("Metrics.series", () => {
  it.effect("is built once per key and updates the series Metric.withAttributes reads", () =>
    Effect.gen(function*() {
      const attributes = { source: "billing", type: "invoice.paid" }
      const a = Metrics.series(Metrics.delivered, attributes, "billing\u0000invoice.paid")
      assert.strictEqual(Metrics.series(Metrics.delivered, attributes, "billing\u0000invoice.paid"), a, "cached")
      yield* Metric.update(a, 3)
      yield* Metrics.countByKey(Metrics.delivered, [attributes, attributes])
      const read = yield* Metric.value(Metric.withAttributes(Metrics.delivered, attributes))
      assert.strictEqual(read.count, 5)
    }))

  it.effect("keeps the instrument's own attributes and options (a histogram's unit and boundaries)", () =>
    Effect.gen(function*() {
      const h = Metrics.emitDurationOf("billing", "invoice.paid")
      assert.strictEqual(Metrics.emitDurationOf("billing", "invoice.paid"), h, "cached")
      yield* Metric.update(h, 0.02)
      const snapshot = (yield* Metric.snapshot).find((m) =>
        m.id === Metrics.operationDuration.id && m.attributes?.["messaging.destination.name"] === "billing/invoice.paid"
      )
      assert.isDefined(snapshot)
      assert.strictEqual(snapshot!.attributes?.["unit"], "s")
      assert.strictEqual(snapshot!.attributes?.["messaging.operation.name"], "emit")
      const state = snapshot!.state as Metric.HistogramState
      assert.strictEqual(state.count, 1)
      assert.deepStrictEqual(state.buckets.map(([boundary]) => boundary).slice(0, 3), [0.005, 0.01, 0.025])
    }))
})
