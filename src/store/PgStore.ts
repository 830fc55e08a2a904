/**
 * The PostgreSQL Store, on `@effect/sql-pg`: options, the bound on every call, and the wiring.
 * Every operation is one SQL statement (its own transaction); arrays travel as one parameter per
 * column, so a batch of any size is one statement with a fixed text, prepared once per connection.
 * The statements live with what they serve:
 *   pgAppend.ts       append (and appendPlacement.ts: which returned row is whose)
 *   pgEvents.ts       claim, reschedule, delete, expire
 *   pgDeadLetters.ts  dead letters: move, list, replay, purge
 *   pgStats.ts        stats, countBySourceType
 *   pgSchema.ts       table names and migrations
 *   pgStatement.ts    how a statement is declared (text, parameters, columns in one place)
 *   driverFault.ts    how a driver error becomes a StoreError
 *
 * Times are epoch milliseconds from the caller's Clock: written with `to_timestamp(ms / 1000)`
 * (exact to the microsecond) and read back as `extract(epoch) * 1000`, so they round-trip exactly.
 */
import { PgClient } from "@effect/sql-pg"
import { Duration, Effect, Exit, Fiber, Layer, Option, Redacted, Scope } from "effect"
import { SqlClient } from "effect/sql"
import type { SqlError } from "effect/sql/SqlError"
import { InvalidConfig, StoreError } from "../Errors.ts"
import { remainingOr } from "../ShutdownDeadline.ts"
import { Store } from "../Store.ts"
import { checkDatabaseUrl } from "./databaseUrl.ts"
import { toStoreError } from "./driverFault.ts"
import { makeAppend } from "./pgAppend.ts"
import { makeDeadLetterOperations } from "./pgDeadLetters.ts"
import { makeEventOperations } from "./pgEvents.ts"
import { forkRotation, type RotationOptions, rotationSettings } from "./pgRotation.ts"
import { migrate, tables } from "./pgSchema.ts"
import { makeRunner } from "./pgStatement.ts"
import { makeStatsOperations } from "./pgStats.ts"

export interface PgStoreClientOptions extends RotationOptions {
  /** Prefix of every table and index name; a lower-case SQL identifier. Default `durable_emitter`. */
  readonly tablePrefix?: string | undefined
  /**
   * Upper bound of every Store call, measured on the client (a call that takes longer fails with
   * a retryable StoreError). Default 30 seconds.
   */
  readonly queryTimeout?: Duration.Input | undefined
  /**
   * The driver's span per SQL statement (`db.query.text` is the statement's whole text) under the
   * Store's own spans. Default false: the Store's spans only, no SQL text in traces.
   */
  readonly statementSpans?: boolean | undefined
}

export interface PgStoreOptions extends PgStoreClientOptions {
  readonly url: Redacted.Redacted
  /** Default 10. */
  readonly maxConnections?: number | undefined
  /** Default 10 seconds. */
  readonly connectTimeout?: Duration.Input | undefined
  readonly ssl?: PgClient.PgPoolConfig["ssl"]
  /** Default `durable-emitter`. */
  readonly applicationName?: string | undefined
  /**
   * The URL goes through a transaction-pooling proxy (PgBouncer, `pool_mode = transaction`): a
   * server connection serves another client after each transaction, so nothing may live in the
   * session. No startup parameters (PgBouncer refuses `statement_timeout` and the others at
   * connect) and no named prepared statements (sql-pg's advice for such poolers: a name prepared
   * on one server connection is unknown on the next, and inside a transaction that error cannot
   * be retried); the client-side query timeout alone bounds a statement. Default false.
   */
  readonly transactionPooling?: boolean | undefined
}

const defaultQueryTimeout = Duration.seconds(30)
const defaultConnectTimeout = Duration.seconds(10)

/**
 * The Store on an SqlClient from the context, which must speak PostgreSQL (sql-pg, or PGlite
 * through sql-pg's `stream` option). Runs the migrations when built.
 */
export const make = Effect.fnUntraced(function*(options: PgStoreClientOptions & { readonly serverTimeout?: boolean }) {
  const t = yield* tables(options.tablePrefix)
  const queryTimeout = yield* durationOption("queryTimeout", options.queryTimeout, defaultQueryTimeout)
  const rotation = yield* rotationSettings(options)
  const sql = yield* SqlClient.SqlClient
  yield* migrate(sql, t).pipe(Effect.mapError(toStoreError("migrate")))
  // The events table's space comes back by rotation, not by VACUUM (pgPartitions.ts).
  yield* forkRotation(sql, t, rotation)

  // With a server-side statement_timeout, leave the server a moment to answer first: its error
  // says more than ours.
  const clientTimeout = options.serverTimeout ? Duration.sum(queryTimeout, Duration.seconds(1)) : queryTimeout
  const guard = (operation: string) => <A>(effect: Effect.Effect<A, SqlError>): Effect.Effect<A, StoreError> =>
    detached(effect).pipe(
      Effect.mapError(toStoreError(operation)),
      Effect.timeoutOrElse({
        duration: clientTimeout,
        orElse: () =>
          Effect.fail(
            new StoreError({
              operation,
              reason: `no answer within ${Duration.format(clientTimeout)}`,
              retryable: true
            })
          )
      })
    )

  const runner = makeRunner(sql, guard, options.statementSpans ?? false)
  return Store.of({
    append: makeAppend(runner, t),
    ...makeEventOperations(runner, t),
    ...makeDeadLetterOperations(runner, t),
    ...makeStatsOperations(runner, t)
  })
})

/**
 * Runs a driver call in a fiber of its own, so that interrupting the caller (this guard's timeout,
 * the Sequencer's commit budget, shutdown) returns at once. sql-pg answers an interruption by
 * draining the connection, for up to 5 s when the server does not answer (a hung or partitioned
 * database): without this, an emit waited that long past commitTimeout, and shutdown 5 s past
 * shutdownTimeout. The driver's drain goes on in the background and ends the connection.
 */
const detached = <A, E, R>(effect: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> =>
  Effect.uninterruptibleMask((restore) =>
    Effect.flatMap(Effect.forkDetach(effect), (fiber) =>
      restore(Fiber.join(fiber)).pipe(
        Effect.onInterrupt(() => Effect.asVoid(Effect.forkDetach(Fiber.interrupt(fiber))))
      ))
  )

/**
 * `layer`, whose release waits at most `within` for the layer's own finalizers and lets them
 * finish in the background. The pool's close waits for every connection to come back, and one
 * whose statement was abandoned (see `detached`) comes back only when sql-pg's drain gives up,
 * 5 s later when the database does not answer: shutdown must not wait for that.
 */
const releasedWithin = <ROut, E>(layer: Layer.Layer<ROut, E>, within: Duration.Input): Layer.Layer<ROut, E> =>
  Layer.effectContext(Effect.gen(function*() {
    const scope = yield* Scope.make()
    const context = yield* Layer.buildWithScope(layer, scope).pipe(Effect.onError(() => Scope.close(scope, Exit.void)))
    // Within the emitter's shutdown deadline too, when it shares one (ShutdownDeadline).
    const ownMs = Duration.toMillis(Duration.fromInputUnsafe(within))
    yield* Effect.addFinalizer((exit) =>
      Effect.flatMap(Effect.forkDetach(Scope.close(scope, exit)), (fiber) =>
        Effect.flatMap(remainingOr(ownMs), (leftMs) => Effect.asVoid(Effect.timeoutOption(Fiber.await(fiber), Math.min(ownMs, leftMs)))))
    )
    return context
  }))

/** What every session of the Store's own pool starts with (none through a transaction pooler). */
const sessionSettings = (queryTimeout: Duration.Duration) => {
  const timeoutMs = String(Math.ceil(Duration.toMillis(queryTimeout)))
  return {
    statement_timeout: timeoutMs,
    idle_in_transaction_session_timeout: timeoutMs,
    // Every statement here is a short one; JIT compiling one costs 20–140 ms (measured on the
    // rotation's UPDATE, whose seqscan-off cost estimate passes every JIT threshold).
    jit: "off"
  }
}

/** How long closing the Store waits for its pool; what is left closes in the background. */
const poolCloseWait = Duration.seconds(1)

const durationOption = (option: string, input: Duration.Input | undefined, fallback: Duration.Duration) => {
  if (input === undefined) return Effect.succeed(fallback)
  const decoded = Duration.fromInput(input)
  return Option.isSome(decoded) && Duration.toMillis(decoded.value) > 0 && Duration.isFinite(decoded.value)
    ? Effect.succeed(decoded.value)
    : Effect.fail(new InvalidConfig({ option, rule: "must be a positive, finite duration" }))
}

/** The Store on the SqlClient in the context (sql-pg, or PGlite through sql-pg). */
export const layerFromClient = (
  options: PgStoreClientOptions = {}
): Layer.Layer<Store, InvalidConfig | StoreError, SqlClient.SqlClient> => Layer.effect(Store, make(options))

/**
 * The Store with its own connection pool. A URL that can never work fails with InvalidConfig
 * (option `url`) before anything connects. Every session gets `statement_timeout` (the query
 * timeout) and `idle_in_transaction_session_timeout`, so the server bounds every statement too;
 * through a transaction-pooling proxy (`transactionPooling`) there is no session to set them on.
 */
export const layer = (options: PgStoreOptions): Layer.Layer<Store, InvalidConfig | StoreError> =>
  Layer.unwrap(Effect.gen(function*() {
    yield* tables(options.tablePrefix)
    yield* checkDatabaseUrl("url", Redacted.value(options.url))
    const queryTimeout = yield* durationOption("queryTimeout", options.queryTimeout, defaultQueryTimeout)
    const connectTimeout = yield* durationOption("connectTimeout", options.connectTimeout, defaultConnectTimeout)
    const maxConnections = options.maxConnections ?? 10
    if (!Number.isInteger(maxConnections) || maxConnections < 1) {
      return yield* new InvalidConfig({ option: "maxConnections", rule: "must be a positive integer" })
    }
    const pooled = options.transactionPooling ?? false
    const client = PgClient.layer({
      url: options.url,
      maxConnections,
      connectTimeout,
      ssl: options.ssl,
      applicationName: options.applicationName ?? "durable-emitter",
      ...(pooled ? { prepare: false } : { startupParameters: sessionSettings(queryTimeout) })
    })
    return Layer.effect(Store, make({ ...options, serverTimeout: !pooled })).pipe(
      Layer.provide(releasedWithin(client, poolCloseWait)),
      Layer.catchTag("SqlError", (error) => Layer.effect(Store, Effect.fail(toStoreError("connect")(error))))
    )
  }))
