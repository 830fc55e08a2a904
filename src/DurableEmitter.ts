/**
 * The layer an application provides. It composes the write path, delivery, recovery and health
 * around a Store and a Transport:
 * - `layer`: options from the environment (DATABASE_URL, DURABLE_EMITTER_*), PostgreSQL or the
 *   embedded store, the gRPC transport;
 * - `layerWith(options)`: the same with options from code;
 * - `layerNoDeps(options)`: everything but the Store and the Transport, for tests that provide
 *   their own (e.g. MemoryStore and ScriptedTransport from "durable-emitter/testing").
 *
 * Closing the layer's scope is shutdown: emits are refused (EmitterClosed), queued emits are
 * committed, the publisher delivers within `shutdownTimeout`, then everything stops; rows not
 * delivered stay in the table for the next start.
 */
import { Effect, Layer, Metric } from "effect"
import * as Config from "./Config.ts"
import { Emitter } from "./Emitter.ts"
import { Health } from "./Health.ts"
import { Liveness } from "./Liveness.ts"
import * as Metrics from "./Metrics.ts"
import { Publisher } from "./Publisher.ts"
import { Retransmitter } from "./Retransmitter.ts"
import { Sequencer } from "./Sequencer.ts"

/** Logs start and stop, and publishes the effective settings as the config-info gauge. */
const lifecycle = (options: Config.EmitterOptions) =>
  Layer.effectDiscard(Effect.gen(function*() {
    const settings = Config.describe(options)
    yield* Metric.update(Metric.withAttributes(Metrics.configInfo, settings), 1)
    yield* Effect.logInfo("durable emitter started", settings)
    yield* Effect.addFinalizer(() => Effect.logInfo("durable emitter stopped"))
  }))

/** Everything but the Store and the Transport, from resolved options. */
export const services = (options: Config.EmitterOptions) =>
  Emitter.layer(options).pipe(
    Layer.provideMerge(Layer.mergeAll(Health.layer(options), Retransmitter.layer(options), lifecycle(options))),
    Layer.provideMerge(Sequencer.layer(options)),
    Layer.provideMerge(Publisher.layer(options)),
    Layer.provide(Liveness.layer)
  )

export const DurableEmitter = {
  /** Everything but the Store and the Transport; fails with InvalidConfig naming the option and the rule. */
  layerNoDeps: (options: Config.EmitterOptionsInput = {}) => Layer.unwrap(Effect.map(Config.resolve(options), services))
}
