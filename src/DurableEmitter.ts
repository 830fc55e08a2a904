/**
 * The layer an application provides. It composes the write path, delivery, recovery and health
 * around a Store and a Transport:
 * - `layer`: options from the environment (DATABASE_URL, DURABLE_EMITTER_*), PostgreSQL or the
 *   embedded store, the gRPC transport;
 * - `layerWith(options)`: the same with options from code;
 * - `layerFromClient(options)`: on the application's own `@effect/sql-pg` client (PgClient from the
 *   context), sharing its pool; `Emitter.emitInTransaction` writes in that client's transactions;
 * - `layerNoDeps(options)`: everything but the Store and the Transport, for tests that provide
 *   their own (e.g. MemoryStore and ScriptedTransport from "durable-emitter/testing").
 *
 * Closing the layer's scope is shutdown: emits are refused (EmitterClosed), queued emits are
 * committed, the publisher delivers within `shutdownTimeout`, then everything stops; rows not
 * delivered stay in the table for the next start.
 */
import { Effect, Layer, Metric, Option } from "effect"
import * as Config from "./Config.ts"
import { Emitter } from "./Emitter.ts"
import { Health } from "./Health.ts"
import { Liveness } from "./Liveness.ts"
import * as Metrics from "./Metrics.ts"
import { Outbox } from "./Outbox.ts"
import { Publisher } from "./Publisher.ts"
import { Retransmitter } from "./Retransmitter.ts"
import { Sequencer } from "./Sequencer.ts"
import * as PgStore from "./store/PgStore.ts"
import * as GrpcTransport from "./transport/GrpcTransport.ts"

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

/** The same with the transactional outbox, on the application's PgClient. */
export const outboxServices = (options: Config.EmitterOptions) =>
  Emitter.layer(options).pipe(
    Layer.provideMerge(Layer.mergeAll(Health.layer(options), Retransmitter.layer(options), lifecycle(options), Outbox.layer(options))),
    Layer.provideMerge(Sequencer.layer(options)),
    Layer.provideMerge(Publisher.layer(options)),
    Layer.provide(Liveness.layer)
  )

/** Options of `layerFromClient`: the connection is the application's, so none of its settings. */
export type FromClientOptions = Omit<Config.EmitterOptionsInput, "databaseUrl" | "dataDir" | "maxConnections">

const fromClient = (options: Config.EmitterOptions) =>
  outboxServices(options).pipe(
    Layer.provideMerge(PgStore.layerFromClient({ tablePrefix: options.tablePrefix, queryTimeout: options.commitTimeoutMs })),
    Layer.provide(transportLayer(options))
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

export const DurableEmitter = {
  /** Options from the environment: DATABASE_URL, DURABLE_EMITTER_INGEST_URL, DURABLE_EMITTER_*. */
  layer: Layer.unwrap(Effect.flatMap(Config.fromEnv, (input) => Effect.map(Config.resolve(input), fromOptions))),
  /** Options from code; unset options take their defaults (see Config.defaults). */
  layerWith: (options: Config.EmitterOptionsInput = {}) => Layer.unwrap(Effect.map(Config.resolve(options), fromOptions)),
  /**
   * On the application's own PgClient (from the context): the emitter shares its pool, runs its
   * migrations on it, and `Emitter.emitInTransaction` inside that client's `sql.withTransaction`
   * writes the events in the transaction (the transactional outbox).
   */
  layerFromClient: (options: FromClientOptions = {}) =>
    Layer.unwrap(Effect.map(Config.resolve(options), fromClient)),
  /** Everything but the Store and the Transport; fails with InvalidConfig naming the option and the rule. */
  layerNoDeps: (options: Config.EmitterOptionsInput = {}) => Layer.unwrap(Effect.map(Config.resolve(options), services))
}
