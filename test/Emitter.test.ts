/**
 * The Emitter facade with swapped layers: in-memory Store, scripted Transport, TestClock. This is
 * also how users test their own code against the emitter.
 */
import { assert, describe, it } from "@effect/vitest"
import { Context, Effect, Exit, Fiber, Layer, Metric, Schedule, Scope } from "effect"
import { TestClock } from "effect/testing"
import { DurableEmitter } from "../src/DurableEmitter.ts"
import { Emitter } from "../src/Emitter.ts"
import { InvalidEvent } from "../src/Errors.ts"
import * as Event from "../src/Event.ts"
import { storageVerdict } from "../src/Health.ts"
import * as Metrics from "../src/Metrics.ts"
import { RetryPolicy } from "../src/Publisher.ts"
import { Store } from "../src/Store.ts"
import * as MemoryStore from "../src/testing/MemoryStore.ts"
import { Script, ScriptedTransport } from "../src/testing/ScriptedTransport.ts"

const TestLayer = DurableEmitter.layerNoDeps({ writeLinger: 0, publishLinger: 0, deleteLinger: 0, statsInterval: "1 second" }).pipe(
  Layer.provideMerge(Layer.mergeAll(MemoryStore.layer, ScriptedTransport.layer()))
)

const backlog = Store.use((store) => Effect.map(store.stats, (s) => s.backlog))

describe("Emitter", () => {
  it.effect("emit returns a receipt after the commit, and the event is delivered and deleted", () =>
    Effect.gen(function*() {
      const receipt = yield* Emitter.emit({ source: "billing", type: "invoice.paid", data: { amount: 10 } })
      assert.strictEqual(receipt.seq, 1n)
      assert.strictEqual(receipt.source, "billing")
      yield* Emitter.flush
      const script = yield* ScriptedTransport
      const [sent] = yield* script.sentEvents
      assert.strictEqual(sent!.id, receipt.id)
      assert.strictEqual(sent!.seqnum, "1")
      assert.strictEqual(yield* backlog, 0)
    }).pipe(Effect.provide(TestLayer)))

  it.effect("a RetryPolicy provided under the emitter's layer replaces the retry Schedule built from the options", () =>
    Effect.gen(function*() {
      const script = yield* ScriptedTransport
      yield* script.setDefault(Script.unavailable())
      yield* Emitter.emit({ source: "s", type: "t" })
      const flushing = yield* Effect.forkChild(Emitter.flush)
      for (let i = 0; i < 30; i++) yield* TestClock.adjust(1_000)
      yield* Fiber.join(flushing)
      // The options' policy would have retried after ~100 ms, ~200 ms, …: this one waits 7 s, twice.
      assert.deepStrictEqual((yield* script.calls).map((c) => c.at), [0, 7_000, 14_000])
      assert.strictEqual(yield* backlog, 1)
    }).pipe(Effect.provide(TestLayer.pipe(Layer.provide(RetryPolicy.layer(Schedule.spaced("7 seconds").pipe(Schedule.upTo({ times: 2 }))))))))

  it.effect("numbers events per source and type", () =>
    Effect.gen(function*() {
      const receipts = yield* Effect.forEach(["a", "b", "a", "a", "b"], (type) => Emitter.emit({ source: "s", type }))
      assert.deepStrictEqual(receipts.map((r) => `${r.type}${r.seq}`), ["a1", "b1", "a2", "a3", "b2"])
    }).pipe(Effect.provide(TestLayer)))

  it.effect("rejects bad input with a typed error and writes nothing", () =>
    Effect.gen(function*() {
      const error = yield* Effect.flip(Emitter.emit({ source: "", type: "t" }))
      assert.instanceOf(error, InvalidEvent)
      assert.strictEqual(error._tag, "InvalidEvent")
      const all = yield* Effect.flip(Emitter.emitAll([{ source: "s", type: "t" }, { source: "s", type: "t", extensions: { BAD: 1 } }]))
      assert.strictEqual((all as InvalidEvent).field, "[1].extensions.BAD")
      assert.strictEqual(yield* backlog, 0)
      const errors = yield* Metric.value(Metric.withAttributes(Metrics.emitErrors, { reason: "InvalidEvent", emitter: "durable-emitter" }))
      assert.isAtLeast(errors.count, 2)
    }).pipe(Effect.provide(TestLayer)))

  it.effect("emitAll commits together and answers in input order", () =>
    Effect.gen(function*() {
      const receipts = yield* Emitter.emitAll([{ source: "s", type: "x" }, { source: "s", type: "y" }, { source: "s", type: "x" }])
      assert.deepStrictEqual(receipts.map((r) => `${r.type}${r.seq}`), ["x1", "y1", "x2"])
    }).pipe(Effect.provide(TestLayer)))

  it.effect("carries the emit span as traceparent", () =>
    Effect.gen(function*() {
      const receipt = yield* Emitter.emit({ source: "s", type: "t" }).pipe(Effect.withSpan("checkout"))
      yield* Emitter.flush
      const [sent] = yield* ScriptedTransport.use((s) => s.sentEvents)
      assert.strictEqual(sent!.id, receipt.id)
      const traceparent = Event.attributeValue(sent!.cloudEvent!.attributes.traceparent)
      assert.match(String(traceparent), /^00-[0-9a-f]{32}-[0-9a-f]{16}-0[01]$/)
    }).pipe(Effect.provide(TestLayer)))

  it.effect("health goes degraded while the ingest fails and healthy again once it delivers", () =>
    Effect.gen(function*() {
      const script = yield* ScriptedTransport
      assert.strictEqual((yield* Emitter.health).status, "healthy")
      yield* script.setDefault(Script.unavailable())
      yield* Emitter.emit({ source: "s", type: "t" })
      yield* script.awaitCalls(1)
      for (let i = 0; i < 5; i++) yield* Effect.yieldNow
      const down = yield* Emitter.health
      assert.strictEqual(down.status, "degraded")
      assert.match(down.reasons.join(";"), /ingest failing/)
      yield* script.setDefault(Script.deliver)
      const flushing = yield* Effect.forkChild(Emitter.flush)
      yield* TestClock.adjust("10 seconds")
      yield* Fiber.join(flushing)
      const up = yield* Emitter.health
      assert.strictEqual(up.status, "healthy", up.reasons.join(";"))
      assert.strictEqual(yield* backlog, 0)
    }).pipe(Effect.provide(TestLayer)))

  it.effect("health degrades when the events table grows past maxTableBytes, is unhealthy past twice it, and recovers", () => {
    // The memory store, with the table size the stats report set by the test.
    const size = { bytes: 100 }
    const SizedStore = Layer.effect(
      Store,
      Store.use((store) => Effect.succeed(Store.of({ ...store, stats: Effect.map(store.stats, (stats) => ({ ...stats, tableBytes: size.bytes })) })))
    ).pipe(Layer.provide(MemoryStore.layer))
    const Sized = DurableEmitter.layerNoDeps({ statsInterval: "1 second", maxTableBytes: 1_000 }).pipe(
      Layer.provideMerge(Layer.mergeAll(SizedStore, ScriptedTransport.layer()))
    )
    const after = (bytes: number) =>
      Effect.gen(function*() {
        size.bytes = bytes
        yield* TestClock.adjust("1 second")
        return yield* Emitter.health
      })
    return Effect.gen(function*() {
      assert.strictEqual((yield* after(1_000)).status, "healthy", "at the bound is fine")
      const over = yield* after(1_500)
      assert.strictEqual(over.status, "degraded")
      assert.match(over.reasons.join(";"), /events table is 0\.0 MiB, over maxTableBytes/)
      assert.strictEqual(over.table?.tableBytes, 1_500)
      assert.strictEqual((yield* after(2_001)).status, "unhealthy")
      assert.strictEqual((yield* after(900)).status, "healthy")
    }).pipe(Effect.provide(Sized))
  })

  it("storageVerdict: healthy up to the bound, degraded past it, unhealthy past twice it", () => {
    const mib = 1024 * 1024
    assert.deepStrictEqual(storageVerdict(512 * mib, 512 * mib), { status: "healthy" })
    assert.deepStrictEqual(storageVerdict(600 * mib, 512 * mib), {
      status: "degraded",
      reason: "events table is 600.0 MiB, over maxTableBytes (512.0 MiB)"
    })
    assert.strictEqual(storageVerdict(1025 * mib, 512 * mib).status, "unhealthy")
  })

  it.effect("health is unhealthy when the ingest refuses our credentials", () =>
    Effect.gen(function*() {
      const script = yield* ScriptedTransport
      yield* script.setDefault(Script.config("unauthenticated"))
      yield* Emitter.emit({ source: "s", type: "t" })
      yield* Emitter.flush
      const report = yield* Emitter.health
      assert.strictEqual(report.status, "unhealthy")
      assert.match(report.reasons.join(";"), /configuration/)
      assert.strictEqual(yield* backlog, 1)
    }).pipe(Effect.provide(TestLayer)))

  it.effect("the retransmitter delivers rows the fast path left behind once their lease ends", () =>
    Effect.gen(function*() {
      const script = yield* ScriptedTransport
      yield* script.setDefault(Script.config("permission_denied"))
      const receipt = yield* Emitter.emit({ source: "s", type: "t" })
      yield* Emitter.flush
      assert.strictEqual(yield* backlog, 1)
      yield* script.setDefault(Script.deliver)
      yield* TestClock.adjust("61 seconds")
      yield* Emitter.flush
      const delivered = yield* script.deliveredEvents
      assert.deepStrictEqual(delivered.map((e) => e.id), [receipt.id])
      assert.strictEqual(delivered[0]!.seqnum, "1")
      assert.strictEqual(yield* backlog, 0)
    }).pipe(Effect.provide(TestLayer)))

  it.effect("a retransmitter waiting for room in a full publish queue still reports itself alive", () =>
    Effect.gen(function*() {
      const scope = yield* Scope.make()
      const context = yield* Layer.buildWithScope(
        DurableEmitter.layerNoDeps({
          publishQueueCapacity: 2, publishBatchSize: 1, publishConcurrency: 1, publishLinger: 0, shutdownTimeout: "1 second"
        }).pipe(Layer.provideMerge(Layer.mergeAll(MemoryStore.layer, ScriptedTransport.layer([Script.hang])))),
        scope
      )
      const emitter = Context.get(context, Emitter)
      yield* Effect.forEach([1, 2, 3, 4, 5, 6], () => emitter.emit({ source: "s", type: "t" }))
      // The first request hangs: the queue stays full, and the rows left out come due after their first lease.
      for (let i = 0; i < 20; i++) yield* TestClock.adjust("5 seconds")
      const report = yield* emitter.health
      assert.notMatch(report.reasons.join("; "), /retransmit loop/)
      assert.isDefined(report.loops.retransmit?.lastSuccessAt)
      assert.isAtLeast(report.loops.retransmit!.lastSuccessAt!, 95_000)
      const closing = yield* Effect.forkChild(Scope.close(scope, Exit.void))
      yield* TestClock.adjust("1 second")
      yield* Fiber.join(closing)
    }))

  it.effect("counts committed events per source and type", () =>
    Effect.gen(function*() {
      const before = (yield* Metric.value(Metric.withAttributes(Metrics.emits, { source: "metered", type: "t", emitter: "durable-emitter" }))).count
      yield* Effect.forEach([1, 2, 3], () => Emitter.emit({ source: "metered", type: "t" }))
      const after = (yield* Metric.value(Metric.withAttributes(Metrics.emits, { source: "metered", type: "t", emitter: "durable-emitter" }))).count
      assert.strictEqual(after - before, 3)
    }).pipe(Effect.provide(TestLayer)))
})
