/**
 * The test kit: `TestEmitter.layer` is the real emitter over MemoryStore and ScriptedTransport for
 * `it.effect` tests (lingers 0, so flush completes on a TestClock); swap MemoryStore and
 * ScriptedTransport in yourself with `DurableEmitter.layerNoDeps`; run the reference ingest server
 * (in-process or as a separate process) to test against a real one.
 *
 * ```ts
 * import { it } from "@effect/vitest"
 * import { Emitter } from "durable-emitter"
 * import { TestEmitter } from "durable-emitter/testing"
 * import { Effect } from "effect"
 *
 * it.effect("emits", () =>
 *   Effect.gen(function*() {
 *     yield* Emitter.emit({ source: "s", type: "t" })
 *     yield* Emitter.flush
 *   }).pipe(Effect.provide(TestEmitter.layer)))
 * ```
 */
export * from "./IngestServer.ts"
export * from "./IngestServerProcess.ts"
export * as MemoryStore from "./MemoryStore.ts"
export * from "./ScriptedTransport.ts"
export * as TestEmitter from "./TestEmitter.ts"
