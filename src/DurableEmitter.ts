/**
 * The layer an application provides. It composes the write path, delivery, recovery and health
 * around a Store and a Transport:
 * - `layer`: options from the environment (DATABASE_URL, DURABLE_EMITTER_*), PostgreSQL or the
 *   embedded store, the gRPC transport;
 * - `layerWith(options)`: the same with options from code;
 * - `layerFromClient(options)`: on the application's own `@effect/sql-pg` client (PgClient from the
 *   context), sharing its pool; `Emitter.emitInTransaction` writes in that client's transactions;
 * - `layerNoDeps(options)`: everything but the Store and the Transport, for tests that provide
 *   their own (e.g. MemoryStore and ScriptedTransport from "durable-emitter/testing"); it takes
 *   only the options of what it builds (`ingestUrl`, `tablePrefix`, … belong to the layers you
 *   provide, and are refused here rather than ignored).
 *
 * `DurableEmitter` is not a service of its own but the composition of the services (Emitter,
 * Sequencer, Publisher, Retransmitter, Health), hence a plain object of layers. Which Store and
 * Transport the options ask for is decided in ./config/layers.ts alone.
 *
 * Closing the layer's scope is shutdown: emits are refused (EmitterClosed), queued emits are
 * committed, the publisher delivers within `shutdownTimeout`, then everything stops; rows not
 * delivered stay in the table for the next start.
 */
import type { PgClient } from "@effect/sql-pg"
import { type Config as EffectConfig, Effect, Layer, Metric, Option, References } from "effect"
import type { SqlClient } from "effect/sql"
import * as Config from "./Config.ts"
import { storeLayer, storeOnClientLayer, transportLayer } from "./config/layers.ts"
import { Emitter } from "./Emitter.ts"
import { InvalidConfig, type PackageMissing, type StoreError, type StoreLocked } from "./Errors.ts"
import { Health } from "./Health.ts"
import { Liveness } from "./Liveness.ts"
import * as Metrics from "./Metrics.ts"
import { Outbox } from "./Outbox.ts"
import { Publisher } from "./Publisher.ts"
import { Retransmitter } from "./Retransmitter.ts"
import { Sequencer } from "./Sequencer.ts"
import { ShutdownDeadline } from "./ShutdownDeadline.ts"
import type { Store } from "./Store.ts"
import type { Transport } from "./Transport.ts"

// The public layers' types are written out and name only exported services and errors: an app
// exporting a layer composed from them (with `declaration: true`) must be able to name its type,
// which it cannot when an inferred type mentions internal services (Sequencer, Handoff, ...).

/** What the whole emitter provides: the Store too (dead letters, inspection). */
export type DurableEmitterServices = Emitter | Health | Publisher | Store

/** What building the whole emitter can fail with. */
export type DurableEmitterError = InvalidConfig | StoreError | StoreLocked | PackageMissing

const allParts: ReadonlyArray<Config.Part> = ["store", "transport", "emitter"]

/** The start line: where the events go, and what differs from the defaults (the gauge has everything). */
export const startLine = (options: Config.EmitterOptions, parts: ReadonlyArray<Config.Part>): string => {
  const store = !parts.includes("store")
    ? "Store and Transport provided by the caller"
    : Option.isSome(options.databaseUrl)
    ? `PostgreSQL, tables ${options.tablePrefix}_*`
    : `embedded store in ${options.dataDir}, tables ${options.tablePrefix}_*`
  const ingest = parts.includes("transport") ? `; ingest ${options.ingestUrl}` : ""
  const changed = Config.describeChanged(options, Config.defaults, parts, ["name", "store", "dataDir", "tablePrefix", "ingestUrl"])
  return `durable emitter "${options.name}" started: ${store}${ingest}; ${changed === "" ? "every other option at its default" : changed}`
}

/** Logs the start (one line) and publishes the effective settings as the config-info gauge. */
const lifecycle = (options: Config.EmitterOptions, parts: ReadonlyArray<Config.Part>) =>
  Layer.effectDiscard(Effect.gen(function*() {
    yield* Metric.update(Metric.withAttributes(Metrics.configInfo, Config.describe(options, parts)), 1)
    yield* Effect.logInfo(startLine(options, parts))
  }))

/**
 * Logs the stop. Built before every service, so its finalizer runs after theirs: the line comes
 * once shutdown has finished (the publisher's delivery within `shutdownTimeout` included).
 */
const stopped = Layer.effectDiscard(Effect.addFinalizer(() => Effect.logInfo("durable emitter stopped")))

/**
 * The services around `beside` (nothing, or the Outbox), from resolved options. `parts` are the
 * parts the whole emitter is built with, for the start line and the gauge (the benchmark passes
 * all); `deadline` is the shutdown deadline, shared with the Store when the caller builds it too.
 */
const compose = <A, E, R>(
  options: Config.EmitterOptions,
  parts: ReadonlyArray<Config.Part>,
  deadline: Layer.Layer<ShutdownDeadline>,
  beside: Layer.Layer<A, E, R>
) =>
  Emitter.layer(options).pipe(
    Layer.provideMerge(Layer.mergeAll(Health.layer(options), Retransmitter.layer(options), lifecycle(options, parts), beside)),
    Layer.provideMerge(Sequencer.layer(options)),
    Layer.provideMerge(Publisher.layer(options)),
    Layer.provide(Layer.merge(Liveness.layer, deadline)),
    Layer.provide(stopped),
    annotatedWith(options.name)
  )

/** Everything but the Store and the Transport, from resolved options. */
export const services = (
  options: Config.EmitterOptions,
  parts: ReadonlyArray<Config.Part> = allParts,
  deadline: Layer.Layer<ShutdownDeadline> = ShutdownDeadline.layer(options.shutdownTimeoutMs)
) => compose(options, parts, deadline, Layer.empty)

/** The same with the transactional outbox, on the application's PgClient. */
export const outboxServices = (
  options: Config.EmitterOptions,
  parts: ReadonlyArray<Config.Part> = allParts,
  deadline: Layer.Layer<ShutdownDeadline> = ShutdownDeadline.layer(options.shutdownTimeoutMs)
) => compose(options, parts, deadline, Outbox.layer(options))

/**
 * Builds a layer (and so every fiber it forks) with `emitter: name` added to the application's
 * metric attributes and log annotations: every series and log line of the emitter carries it.
 */
const annotatedWith = (name: string) => <A, E, R>(layer: Layer.Layer<A, E, R>): Layer.Layer<A, E, R> =>
  Layer.unwrap(Effect.gen(function*() {
    const attributes = yield* Metric.CurrentMetricAttributes
    const annotations = yield* References.CurrentLogAnnotations
    return layer.pipe(Layer.provide(Layer.mergeAll(
      Layer.succeed(Metric.CurrentMetricAttributes, { ...attributes, emitter: name }),
      Layer.succeed(References.CurrentLogAnnotations, { ...annotations, emitter: name })
    )))
  }))


/** Options of `layerFromClient`: the connection is the application's PgClient, so none of its settings. */
export type FromClientOptions = Omit<Config.EmitterOptionsInput, ClientOwned>
type ClientOwned = "databaseUrl" | "dataDir" | "maxConnections" | "connectTimeout"
const clientOwned: ReadonlyArray<ClientOwned> = ["databaseUrl", "dataDir", "maxConnections", "connectTimeout"]

/** Refuses (rather than ignores) the options the application's client owns. */
const resolveFromClient = (input: FromClientOptions) => {
  const owned = clientOwned.find((key) => (input as Config.EmitterOptionsInput)[key] !== undefined)
  return owned === undefined
    ? Config.resolve(input)
    : Effect.fail(new InvalidConfig({ option: owned, rule: "is not used here: the connection is your PgClient's (configure it there)" }))
}

// One shutdown deadline for the services and the Store (its pool's close waits only what is left).
const fromClient = (options: Config.EmitterOptions, deadline = ShutdownDeadline.layer(options.shutdownTimeoutMs)) =>
  outboxServices(options, allParts, deadline).pipe(
    Layer.provideMerge(storeOnClientLayer(options).pipe(annotatedWith(options.name), Layer.provide(deadline))),
    Layer.provide(transportLayer(options).pipe(annotatedWith(options.name)))
  )

/** The whole emitter from resolved options; the Store is exposed too (dead letters, inspection). */
const fromOptions = (options: Config.EmitterOptions, deadline = ShutdownDeadline.layer(options.shutdownTimeoutMs)) =>
  services(options, allParts, deadline).pipe(
    Layer.provideMerge(storeLayer(options).pipe(annotatedWith(options.name), Layer.provide(deadline))),
    Layer.provide(transportLayer(options).pipe(annotatedWith(options.name)))
  )

export const DurableEmitter: {
  /** Options from the environment: DATABASE_URL, DURABLE_EMITTER_INGEST_URL, DURABLE_EMITTER_*. */
  readonly layer: Layer.Layer<DurableEmitterServices, DurableEmitterError | EffectConfig.ConfigError>
  /** Options from code; unset options take their defaults (see Config.defaults). */
  readonly layerWith: (options?: Config.EmitterOptionsInput) => Layer.Layer<DurableEmitterServices, DurableEmitterError>
  /**
   * On the application's own PgClient (from the context): the emitter shares its pool, runs its
   * migrations on it, and `Emitter.emitInTransaction` inside that client's `sql.withTransaction`
   * writes the events in the transaction (the transactional outbox).
   */
  readonly layerFromClient: (
    options?: FromClientOptions
  ) => Layer.Layer<DurableEmitterServices, InvalidConfig | StoreError, PgClient.PgClient | SqlClient.SqlClient>
  /**
   * Everything but the Store and the Transport; fails with InvalidConfig naming the option and the
   * rule, and refuses the options of the Store and the Transport (yours to configure).
   */
  readonly layerNoDeps: (options?: Config.ServicesOptionsInput) => Layer.Layer<Emitter | Health | Publisher, InvalidConfig, Store | Transport>
} = {
  layer: Layer.unwrap(Effect.flatMap(Config.fromEnv, (input) => Effect.map(Config.resolve(input), fromOptions))),
  layerWith: (options = {}) => Layer.unwrap(Effect.map(Config.resolve(options), fromOptions)),
  layerFromClient: (options = {}) => Layer.unwrap(Effect.map(resolveFromClient(options), fromClient)),
  layerNoDeps: (options = {}) =>
    Layer.unwrap(Effect.map(Config.resolve(options, ["emitter"]), (resolved) => services(resolved, ["emitter"])))
}
