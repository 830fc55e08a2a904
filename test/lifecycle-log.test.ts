/**
 * The emitter's lifecycle in the log: "durable emitter stopped" comes once shutdown has finished,
 * after the publisher's delivery within `shutdownTimeout` (and its deadline warning). TestClock.
 */
import { assert, describe, it } from "@effect/vitest"
import { Context, Effect, Exit, Fiber, Layer, Logger, Scope } from "effect"
import { TestClock } from "effect/testing"
import { DurableEmitter } from "../src/DurableEmitter.ts"
import { Emitter } from "../src/Emitter.ts"
import * as MemoryStore from "../src/testing/MemoryStore.ts"
import { Script, ScriptedTransport } from "../src/testing/ScriptedTransport.ts"

describe("lifecycle log", () => {
  it.effect("\"durable emitter stopped\" is logged when shutdown has finished, after the shutdown-deadline warning", () =>
    Effect.gen(function*() {
      const logs: Array<string> = []
      const logger = Logger.make(({ message }) => void logs.push(JSON.stringify(message)))
      const scope = yield* Scope.make()
      const context = yield* Layer.buildWithScope(
        DurableEmitter.layerNoDeps({ publishLinger: 0, writeLinger: 0, shutdownTimeout: "2 seconds" }).pipe(
          Layer.provideMerge(Layer.mergeAll(MemoryStore.layer, ScriptedTransport.layer([Script.hang]))),
          Layer.provide(Logger.layer([logger]))
        ),
        scope
      )
      yield* Context.get(context, Emitter).emit({ source: "s", type: "t" })
      yield* Context.get(context, ScriptedTransport).awaitCalls(1)
      const closing = yield* Effect.forkChild(Scope.close(scope, Exit.void))
      yield* TestClock.adjust(1_999)
      assert.isUndefined(closing.pollUnsafe())
      assert.isFalse(logs.some((l) => l.includes("durable emitter stopped")), "stopped logged before shutdown finished")
      yield* TestClock.adjust(1)
      yield* Fiber.join(closing)
      const deadline = logs.findIndex((l) => l.includes("shutdown deadline passed"))
      const stopped = logs.findIndex((l) => l.includes("durable emitter stopped"))
      assert.isAtLeast(deadline, 0, logs.join("\n"))
      assert.isAbove(stopped, deadline, logs.join("\n"))
      assert.strictEqual(stopped, logs.length - 1, logs.join("\n"))
    }))
})
