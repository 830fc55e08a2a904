/**
 * The transactional outbox: events written in the application's own transaction, on the
 * application's own `@effect/sql-pg` client.
 *
 * - `write` runs inside the caller's `sql.withTransaction`: one INSERT into the pending table on
 *   the transaction's connection. Roll back and nothing exists; nothing is numbered.
 * - The promoter moves committed pending rows into the events table (numbering them there, see
 *   src/store/pgOutbox.ts) and hands them to the Publisher like any committed event. It wakes at
 *   once after a commit in this process (`afterCommit`), and polls every retransmit interval as
 *   the safety net: rows a process committed and could not promote (it crashed right after the
 *   commit) are promoted by whichever process polls first.
 * - No NOTIFY, on purpose. A NOTIFY queued in a transaction makes its COMMIT take one
 *   database-wide lock and hold it through the WAL flush, so NOTIFYing commits stop sharing
 *   flushes and run one at a time (seen as `Lock:object` waits on COMMIT in pg_stat_activity;
 *   the outbox benchmark did 1 191 transactions/s with it, 1 732 without). The process that
 *   commits is the one that knows, and it wakes its own promoter.
 */
import { PgClient } from "@effect/sql-pg"
import { Cause, Clock, Context, Duration, Effect, Layer, Option, Queue, Schedule, Semaphore } from "effect"
import { SqlClient } from "effect/sql"
import type { SqlError } from "effect/sql/SqlError"
import { type EmitterOptions } from "./Config.ts"
import { type InvalidConfig, StoreError, TransactionWriteFailed } from "./Errors.ts"
import { Handoff } from "./Handoff.ts"
import * as Metrics from "./Metrics.ts"
import type { NewEvent } from "./Store.ts"
import { toStoreError } from "./store/driverFault.ts"
import { outboxStatements } from "./store/pgOutbox.ts"
import type { Statement } from "./store/pgStatement.ts"
import { tables } from "./store/pgSchema.ts"

export type OutboxOptions = Pick<
  EmitterOptions,
  "tablePrefix" | "claimBatchSize" | "firstLeaseMs" | "retransmitIntervalMs" | "commitTimeoutMs" | "retransmit"
>

/** Which transaction, if any, the calling fiber has open. */
export type OpenTransaction = "none" | "emitter" | "other"

export class Outbox extends Context.Service<Outbox, {
  /**
   * Whether the fiber whose context this is has a transaction open: on the emitter's own client
   * ("emitter"), on another SqlClient ("other"; an emit there could not join it), or none.
   */
  readonly openTransaction: (context: Context.Context<never>) => OpenTransaction
  /** Writes the events in the calling fiber's open transaction (the caller checked there is one). */
  readonly write: (events: ReadonlyArray<NewEvent>, now: number) => Effect.Effect<void, TransactionWriteFailed>
  /** Promotes every committed pending event now (flush uses it); nothing inside the emitter's transaction. */
  readonly promoteAll: Effect.Effect<void, StoreError>
}>()("durable-emitter/Outbox") {
  /** The outbox on the application's PgClient; its promoter runs in the layer's scope. */
  static readonly layer = (options: OutboxOptions): Layer.Layer<Outbox, InvalidConfig, PgClient.PgClient | Handoff> =>
    Layer.effect(Outbox, make(options))
}

/**
 * Which transaction the context holds: the emitter's client is checked first; any other SqlClient
 * in the context with a transaction open means the caller expects atomicity we cannot give.
 */
export const openTransactionIn = (
  ours: SqlClient.SqlClient,
  context: Context.Context<never>
): OpenTransaction => {
  if (Option.isSome(Context.getOption(context, ours.transactionService))) return "emitter"
  const client = Context.getOption(context, SqlClient.SqlClient)
  if (Option.isSome(client) && client.value !== ours && Option.isSome(Context.getOption(context, client.value.transactionService))) {
    return "other"
  }
  return "none"
}

/** How often the promoter vacuums the pending table while it churns (autovacuum may be off). */
const vacuumEvery = Duration.seconds(10)

const make = Effect.fnUntraced(function*(options: OutboxOptions) {
  const sql = yield* PgClient.PgClient
  const handoff = yield* Handoff
  const t = yield* tables(options.tablePrefix)
  const text = outboxStatements(t)
  const run = <In, Out>(statement: Statement<In, Out>, input: In) =>
    sql.unsafe(statement.text, statement.bind(input)).values.pipe(Effect.map((rows) => rows.map(statement.decode)))
  /** Bounded like every Store call: a hung promotion fails (and is tried again) instead of hanging. */
  const bounded = (operation: string) => <A>(effect: Effect.Effect<A, SqlError>): Effect.Effect<A, StoreError> =>
    effect.pipe(
      Effect.mapError(toStoreError(operation)),
      Effect.timeoutOrElse({
        duration: options.commitTimeoutMs,
        orElse: () => Effect.fail(new StoreError({ operation, reason: `no answer within ${options.commitTimeoutMs} ms`, retryable: true }))
      })
    )

  // One wake-up is enough however many commits asked for it.
  const wake = yield* Queue.dropping<true>(1)
  const wakeUp = Effect.sync(() => Queue.offerUnsafe(wake, true))
  const onCommit = sql.afterCommit(Effect.asVoid(wakeUp))

  const write = (events: ReadonlyArray<NewEvent>, now: number): Effect.Effect<void, TransactionWriteFailed> =>
    (events.length === 1 ? run(text.insertPendingOne, { event: events[0]!, now }) : run(text.insertPending, { events, now })).pipe(
      bounded("write in transaction"),
      Effect.mapError((error) => new TransactionWriteFailed({ reason: error.reason, retryable: error.retryable })),
      Effect.andThen(onCommit)
    )

  // Promotions of this process one at a time (the advisory lock orders them across processes).
  const promoting = yield* Semaphore.make(1)
  /** Rows promoted since the last vacuum of the pending table (read and reset by the vacuum loop). */
  const churn = { promoted: 0 }

  /** One promotion: up to claimBatchSize committed events, numbered, handed to the Publisher. */
  const promoteBatch = Effect.gen(function*() {
    const now = yield* Clock.currentTimeMillis
    const events = yield* run(text.promote, { limit: options.claimBatchSize, leaseUntil: now + options.firstLeaseMs }).pipe(bounded("promote"))
    if (events.length === 0) return 0
    yield* Metrics.countByKey(Metrics.emits, events)
    yield* handoff.offer(events)
    churn.promoted += events.length
    return events.length
  })

  const promoteCommitted: Effect.Effect<void, StoreError> = promoting.withPermits(1)(
    Effect.gen(function*() {
      while ((yield* promoteBatch) >= options.claimBatchSize) { /* more may wait */ }
    })
  )

  /**
   * Not from inside the emitter's client's transaction (`Emitter.flush` may be called in one):
   * there the statement would run on that transaction's connection, see its uncommitted events and
   * hand them over, to be sent before a rollback takes them back; and on a pool of one it would
   * wait for the connection the transaction holds. Nothing it wrote can be promoted before it
   * commits, and what others committed their own commits promote.
   */
  const promoteAll: Effect.Effect<void, StoreError> = Effect.withFiber((fiber) =>
    openTransactionIn(sql, fiber.context) === "emitter" ? Effect.void : promoteCommitted
  )

  const vacuum = Effect.suspend(() => {
    if (churn.promoted === 0) return Effect.void
    churn.promoted = 0
    return sql.unsafe(text.vacuumPending).raw.pipe(bounded("vacuum"), Effect.asVoid)
  })

  const logFailure = (what: string) => (cause: Cause.Cause<unknown>) =>
    Effect.logWarning(`outbox ${what} failed; trying again`, { reason: Cause.squash(cause) instanceof Error ? (Cause.squash(cause) as Error).message : String(Cause.squash(cause)) })

  // The promoter: at once on a wake-up, else every retransmit interval (the safety net).
  const promoter = Effect.gen(function*() {
    while (true) {
      yield* promoteAll.pipe(Effect.catchCause(logFailure("promotion")))
      yield* Queue.take(wake).pipe(Effect.timeoutOption(options.retransmitIntervalMs))
    }
  })

  if (options.retransmit) {
    yield* Effect.forkScoped(promoter)
    yield* Effect.forkScoped(vacuum.pipe(Effect.catchCause(logFailure("vacuum")), Effect.repeat(Schedule.spaced(vacuumEvery))))
  } else {
    // Without the retransmitter this process promotes only what it committed itself.
    yield* Effect.forkScoped(Effect.gen(function*() {
      while (true) {
        yield* Queue.take(wake)
        yield* promoteAll.pipe(Effect.catchCause(logFailure("promotion")))
      }
    }))
  }

  return Outbox.of({
    openTransaction: (context) => openTransactionIn(sql, context),
    write,
    promoteAll
  })
})
