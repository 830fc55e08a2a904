/**
 * The emitter for testing your own code: the real emitter (write path, publisher, retransmitter,
 * health) over `MemoryStore` and `ScriptedTransport`, under `it.effect` and its TestClock.
 *
 * Options are the emitter's defaults except the two lingers, `publishLinger` and `deleteLinger`
 * (20 ms each by default), which are 0 here: a linger is a sleep on the Clock, and a TestClock
 * moves only when the test moves it, so with them `Emitter.flush` would wait forever. Every other
 * wait (retry back-off, server push-back, leases, TTL) is still on the Clock: move it with
 * `TestClock.adjust`.
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
import { Layer } from "effect"
import { DurableEmitter } from "../DurableEmitter.ts"
import type { Emitter } from "../Emitter.ts"
import type { InvalidConfig } from "../Errors.ts"
import type { Health } from "../Health.ts"
import type { Publisher } from "../Publisher.ts"
import type { Store } from "../Store.ts"
import type { Transport } from "../Transport.ts"
import * as MemoryStore from "./MemoryStore.ts"
import { ScriptedTransport } from "./ScriptedTransport.ts"

/** The options `layerWith` takes: those of `DurableEmitter.layerNoDeps`. */
export type TestEmitterOptions = NonNullable<Parameters<typeof DurableEmitter.layerNoDeps>[0]>

/** What the test emitter provides: the emitter's services, the Store, and the scripted Transport with its control. */
export type TestEmitterServices = Emitter | Health | Publisher | Store | Transport | ScriptedTransport

/** The options that differ from the emitter's defaults (see the module comment). */
export const testDefaults = { publishLinger: 0, deleteLinger: 0 } as const satisfies TestEmitterOptions

/** The test emitter with `options` (unset ones: the emitter's defaults, lingers 0). */
export const layerWith = (options: TestEmitterOptions = {}): Layer.Layer<TestEmitterServices, InvalidConfig> =>
  DurableEmitter.layerNoDeps({ ...testDefaults, ...options }).pipe(
    Layer.provideMerge(Layer.mergeAll(MemoryStore.layer, ScriptedTransport.layer()))
  )

/** The test emitter with default options (lingers 0). */
export const layer: Layer.Layer<TestEmitterServices, InvalidConfig> = layerWith()
