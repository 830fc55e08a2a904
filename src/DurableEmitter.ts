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
import { type Config as EffectConfig, Effect, Layer, Metric, Option } from "effect"
import * as Config from "./Config.ts"
import { Emitter } from "./Emitter.ts"
import type { InvalidConfig, PackageMissing, StoreError, StoreLocked } from "./Errors.ts"
import { Health } from "./Health.ts"
import { Liveness } from "./Liveness.ts"
import * as Metrics from "./Metrics.ts"
import { Publisher } from "./Publisher.ts"
import { Retransmitter } from "./Retransmitter.ts"
import { Sequencer } from "./Sequencer.ts"
import type { Store } from "./Store.ts"
import * as PgStore from "./store/PgStore.ts"
import type { Transport } from "./Transport.ts"
import * as GrpcTransport from "./transport/GrpcTransport.ts"

// The public layers' types are written out and name only exported services and errors: an app
// exporting a layer composed from them (with `declaration: true`) must be able to name its type,
// which it cannot when an inferred type mentions internal services (Sequencer, Handoff, ...).

/** What the whole emitter provides: the Store too (dead letters, inspection). */
export type DurableEmitterServices = Emitter | Health | Publisher | Store

/** What building the whole emitter can fail with. */
export type DurableEmitterError = InvalidConfig | StoreError | StoreLocked | PackageMissing

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

/** The Store the options ask for: PostgreSQL with `databaseUrl`, else the embedded store. */
const storeLayer = (options: Config.EmitterOptions) =>
  Option.match(options.databaseUrl, {
    onSome: (url) =>
      PgStore.layer({
        url,
        tablePrefix: options.tablePrefix,
        maxConnections: options.maxConnections,
        queryTimeout: options.commitTimeoutMs,
        applicationName: options.name
      }),
    // Loaded only when used: applications on PostgreSQL never load PGlite's WebAssembly.
    onNone: () =>
      Layer.unwrap(Effect.map(
        Effect.promise(() => import("./store/PgliteStore.ts")),
        (PgliteStore) => PgliteStore.layer({ dataDir: options.dataDir, tablePrefix: options.tablePrefix, queryTimeout: options.commitTimeoutMs })
      ))
  })

const transportLayer = (options: Config.EmitterOptions) =>
  GrpcTransport.layer({
    url: options.ingestUrl,
    headers: options.ingestHeaders,
    gzip: options.gzip,
    timeout: options.requestTimeoutMs,
    maxRequestBytes: options.maxRequestBytes
  })

/** The whole emitter from resolved options; the Store is exposed too (dead letters, inspection). */
const fromOptions = (options: Config.EmitterOptions) =>
  services(options).pipe(Layer.provideMerge(storeLayer(options)), Layer.provide(transportLayer(options)))

export const DurableEmitter: {
  /** Options from the environment: DATABASE_URL, DURABLE_EMITTER_INGEST_URL, DURABLE_EMITTER_*. */
  readonly layer: Layer.Layer<DurableEmitterServices, DurableEmitterError | EffectConfig.ConfigError>
  /** Options from code; unset options take their defaults (see Config.defaults). */
  readonly layerWith: (options?: Config.EmitterOptionsInput) => Layer.Layer<DurableEmitterServices, DurableEmitterError>
  /** Everything but the Store and the Transport; fails with InvalidConfig naming the option and the rule. */
  readonly layerNoDeps: (options?: Config.EmitterOptionsInput) => Layer.Layer<Emitter | Health | Publisher, InvalidConfig, Store | Transport>
} = {
  layer: Layer.unwrap(Effect.flatMap(Config.fromEnv, (input) => Effect.map(Config.resolve(input), fromOptions))),
  layerWith: (options = {}) => Layer.unwrap(Effect.map(Config.resolve(options), fromOptions)),
  layerNoDeps: (options = {}) => Layer.unwrap(Effect.map(Config.resolve(options), services))
}
