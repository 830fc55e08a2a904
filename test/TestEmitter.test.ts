/**
 * The test kit's emitter (durable-emitter/testing `TestEmitter`): emit and flush complete under
 * `it.effect` with default options; `Emitter.flushWithin` bounds a flush on the Clock; the receipt
 * Schema makes a receipt JSON.
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect, Fiber, Schema } from "effect"
import { TestClock } from "effect/testing"
import { EmitReceipt, Emitter } from "../src/Emitter.ts"
import { Script, ScriptedTransport } from "../src/testing/ScriptedTransport.ts"
import * as TestEmitter from "../src/testing/TestEmitter.ts"

describe("TestEmitter", () => {
  it.effect("emit then flush completes with default options on a TestClock that nobody moves", () =>
    Effect.gen(function*() {
      const receipt = yield* Emitter.emit({ source: "billing", type: "invoice.paid", data: { id: 42 } })
      yield* Emitter.flush
      const delivered = yield* (yield* ScriptedTransport).deliveredEvents
      assert.deepStrictEqual(delivered.map((event) => event.id), [receipt.id])
    }).pipe(Effect.provide(TestEmitter.layer)))

  it.effect("server push-back waits on the TestClock", () =>
    Effect.gen(function*() {
      const script = yield* ScriptedTransport
      yield* script.push(Script.unavailable(3_000))
      yield* Emitter.emit({ source: "s", type: "t" })
      yield* TestClock.adjust("3 seconds")
      yield* Emitter.flush
      assert.strictEqual((yield* script.deliveredEvents).length, 1)
      assert.strictEqual(yield* script.callCount, 2)
    }).pipe(Effect.provide(TestEmitter.layer)))

  it.effect("layerWith takes the emitter's options (a bad one fails the layer)", () =>
    Effect.gen(function*() {
      const error = yield* Effect.flip(Effect.provide(Emitter.flush, TestEmitter.layerWith({ publishBatchSize: 0 })))
      assert.strictEqual(error._tag, "InvalidConfig")
    }))
})

describe("Emitter.flushWithin", () => {
  it.effect("answers complete when everything emitted before it is resolved", () =>
    Effect.gen(function*() {
      yield* Emitter.emitAll([{ source: "s", type: "t" }, { source: "s", type: "t" }])
      assert.deepStrictEqual(yield* Emitter.flushWithin("1 second"), { complete: true, pending: 0 })
    }).pipe(Effect.provide(TestEmitter.layer)))

  it.effect("returns at the bound with what was left while the ingest is unavailable", () =>
    Effect.gen(function*() {
      const script = yield* ScriptedTransport
      yield* script.setDefault(Script.unavailable(5_000))
      yield* Emitter.emitAll([{ source: "s", type: "t" }, { source: "s", type: "t" }, { source: "s", type: "u" }])
      const flushing = yield* Effect.forkChild(Emitter.flushWithin("2 seconds"))
      yield* TestClock.adjust("1999 millis")
      assert.isUndefined(flushing.pollUnsafe())
      yield* TestClock.adjust("1 millis")
      assert.deepStrictEqual(yield* Fiber.join(flushing), { complete: false, pending: 3 })
      // Nothing is dropped: once the ingest answers again, a plain flush completes.
      yield* script.setDefault(Script.deliver)
      yield* TestClock.adjust("10 seconds")
      yield* Emitter.flush
      assert.strictEqual((yield* script.deliveredEvents).length, 3)
    }).pipe(Effect.provide(TestEmitter.layer)))
})

describe("EmitReceipt", () => {
  it.effect("encodes to JSON with seq as a decimal string, and decodes back", () =>
    Effect.gen(function*() {
      const receipt = yield* Emitter.emit({ source: "s", type: "t" })
      assert.throws(() => JSON.stringify(receipt), /BigInt/)
      const json = JSON.stringify(Schema.encodeSync(EmitReceipt)(receipt))
      assert.deepStrictEqual(JSON.parse(json), { id: receipt.id, seq: "1", source: "s", type: "t" })
      assert.deepStrictEqual(Schema.decodeUnknownSync(EmitReceipt)(JSON.parse(json)), receipt)
    }).pipe(Effect.provide(TestEmitter.layer)))
})
