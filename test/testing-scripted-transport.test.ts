import { assert, describe, it } from "@effect/vitest"
import { create, toBinary } from "@bufbuild/protobuf"
import { Effect, Fiber } from "effect"
import { TestClock } from "effect/testing"
import { CloudEventSchema } from "../src/gen/io/cloudevents/v1/cloudevent_pb.js"
import { Script, ScriptedTransport } from "../src/testing/ScriptedTransport.ts"
import { Transport, TransportError } from "../src/Transport.ts"

const event = (i: number, type = "t") =>
  toBinary(
    CloudEventSchema,
    create(CloudEventSchema, {
      id: `id-${i}`,
      source: "s",
      specVersion: "1.0",
      type,
      attributes: { seqnum: { attr: { case: "ceString", value: String(i) } } }
    })
  )
const batch = (n: number) => Array.from({ length: n }, (_, i) => event(i))

const tags = (results: ReadonlyArray<{ _tag: string }>) => results.map((r) => r._tag)

describe("ScriptedTransport", () => {
  it.effect("delivers everything by default and records what was sent, decoded", () =>
    Effect.gen(function*() {
      const transport = yield* Transport
      const script = yield* ScriptedTransport
      yield* TestClock.setTime(1_000)
      assert.deepStrictEqual(tags(yield* transport.publishBatch(batch(2))), ["Delivered", "Delivered"])
      const [call] = yield* script.calls
      assert.strictEqual(call?.at, 1_000)
      assert.deepStrictEqual(call?.events.map((e) => [e.id, e.type, e.seqnum]), [["id-0", "t", "0"], ["id-1", "t", "1"]])
      assert.strictEqual(call?.outcome._tag, "Answered")
      assert.strictEqual(yield* transport.ping, "pong")
    }).pipe(Effect.provide(ScriptedTransport.layer())))

  it.effect("follows the script in order, then falls back to the default", () =>
    Effect.gen(function*() {
      const transport = yield* Transport
      const script = yield* ScriptedTransport
      const unavailable = yield* Effect.flip(transport.publishBatch(batch(3)))
      assert.deepStrictEqual([unavailable.kind, unavailable.code, unavailable.retryAfterMs], ["retryable", "unavailable", 250])
      assert.deepStrictEqual(yield* transport.publishBatch(batch(3)), [
        { _tag: "Delivered" },
        { _tag: "Rejected", code: "SCHEMA_MISSING", reason: "rejected by script" },
        { _tag: "Delivered" }
      ])
      assert.strictEqual((yield* Effect.flip(transport.publishBatch(batch(1)))).kind, "config")
      yield* script.push(Script.reject({ 0: "SCHEMA_MISSING", 2: { code: "ENCODE_ERROR", reason: "bad bytes" } }))
      assert.deepStrictEqual(yield* transport.publishBatch(batch(3)), [
        { _tag: "Rejected", code: "SCHEMA_MISSING", reason: "rejected by script" },
        { _tag: "Delivered" },
        { _tag: "Rejected", code: "ENCODE_ERROR", reason: "bad bytes" }
      ])
      assert.strictEqual(yield* script.remaining, 0)
      yield* script.setDefault(Script.permanent())
      assert.strictEqual((yield* Effect.flip(transport.publishBatch(batch(1)))).kind, "permanent")
      assert.strictEqual(yield* script.callCount, 5)
      assert.deepStrictEqual((yield* script.deliveredEvents).map((e) => e.id), ["id-0", "id-2", "id-1"])
      assert.strictEqual((yield* script.sentEvents).length, 11)
    }).pipe(Effect.provide(ScriptedTransport.layer([Script.unavailable(250), Script.reject([1], "SCHEMA_MISSING"), Script.config()]))))

  it.effect("delays run on the Clock: TestClock drives them", () =>
    Effect.gen(function*() {
      const transport = yield* Transport
      const script = yield* ScriptedTransport
      yield* script.push(Script.delay("2 seconds", Script.unavailable()))
      const fiber = yield* Effect.forkChild(Effect.flip(transport.publishBatch(batch(1))))
      yield* script.awaitCalls(1)
      assert.strictEqual(yield* script.inFlight, 1)
      yield* TestClock.adjust("1999 millis")
      assert.isUndefined(fiber.pollUnsafe())
      yield* TestClock.adjust("1 millis")
      assert.strictEqual((yield* Fiber.join(fiber)).code, "unavailable")
      const [call] = yield* script.calls
      assert.deepStrictEqual([call?.at, call?.settledAt, call?.outcome._tag], [0, 2_000, "Failed"])
      assert.strictEqual(yield* script.inFlight, 0)
    }).pipe(Effect.provide(ScriptedTransport.layer())))

  it.effect("a hang lasts until the caller gives up", () =>
    Effect.gen(function*() {
      const transport = yield* Transport
      const script = yield* ScriptedTransport
      yield* script.push(Script.hang)
      const fiber = yield* Effect.forkChild(
        transport.publishBatch(batch(1)).pipe(Effect.timeout("5 seconds"), Effect.flip)
      )
      yield* TestClock.adjust("5 seconds")
      const error = yield* Fiber.join(fiber)
      assert.strictEqual(error._tag, "TimeoutError")
      assert.strictEqual((yield* script.calls)[0]?.outcome._tag, "Interrupted")
    }).pipe(Effect.provide(ScriptedTransport.layer())))

  it.effect("standing rules reject matching events; custom answers; concurrency is measured", () =>
    Effect.gen(function*() {
      const transport = yield* Transport
      const script = yield* ScriptedTransport
      yield* script.rejectWhere((e) => (e.type === "bad" ? { code: "VALIDATION_FAILED", reason: "bad type" } : undefined))
      const results = yield* transport.publishBatch([event(0), event(1, "bad")])
      assert.deepStrictEqual(results[1], { _tag: "Rejected", code: "VALIDATION_FAILED", reason: "bad type" })

      yield* script.push(Script.respond((b) => Effect.succeed(b.payloads.map(() => ({ _tag: "Rejected", code: "X", reason: "custom" })))))
      assert.deepStrictEqual(tags(yield* transport.publishBatch(batch(2))), ["Rejected", "Rejected"])

      yield* script.setDefault(Script.delay("1 second"))
      const fibers = yield* Effect.forEach([1, 2, 3], () => Effect.forkChild(transport.publishBatch(batch(1))))
      yield* script.awaitCalls(5)
      assert.strictEqual(yield* script.inFlight, 3)
      yield* TestClock.adjust("1 second")
      yield* Effect.forEach(fibers, Fiber.join)
      assert.strictEqual(yield* script.maxInFlight, 3)

      yield* script.setPing(Effect.fail(new TransportError({ kind: "retryable", code: "unavailable", reason: "down" })))
      assert.strictEqual((yield* Effect.flip(transport.ping)).code, "unavailable")
      yield* script.reset
      assert.strictEqual(yield* script.callCount, 0)
      assert.strictEqual(yield* transport.ping, "pong")
    }).pipe(Effect.provide(ScriptedTransport.layer())))
})
