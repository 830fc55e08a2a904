/**
 * The transactional outbox on real PostgreSQL: the emitter built on the application's own PgClient
 * (DurableEmitter.layerFromClient), events written in the application's transactions, delivered
 * to the reference ingest server over loopback HTTP/2 after the commit.
 */
import * as NodeSdk from "@effect/opentelemetry/NodeSdk"
import { assert, describe, it } from "@effect/vitest"
import { PgClient, PgTypes } from "@effect/sql-pg"
import { SpanKind } from "@opentelemetry/api"
import { InMemorySpanExporter, SimpleSpanProcessor } from "@opentelemetry/sdk-trace-base"
import { Deferred, Effect, Exit, Fiber, Layer, Logger, Option, Redacted, Result } from "effect"
import { SqlClient } from "effect/sql"
import { DurableEmitter } from "../src/DurableEmitter.ts"
import { Emitter } from "../src/Emitter.ts"
import * as Event from "../src/Event.ts"
import { startIngestServer } from "../src/testing/IngestServer.ts"
import { databaseUrl, scopedPrefix } from "./support/pg.ts"

const ingestServer = Effect.acquireRelease(
  Effect.promise(() => startIngestServer({ record: "events" })),
  (server) => Effect.promise(() => server.close())
)

/** The application's own client; the emitter shares its pool. */
const appClient = (maxConnections = 4) => PgClient.layer({ url: Redacted.make(databaseUrl), maxConnections })

const fastOptions = (prefix: string, ingestUrl: string) => ({
  ingestUrl,
  tablePrefix: prefix,
  requestTimeout: "2 seconds",
  firstLease: "5 seconds",
  leaseBase: "3 seconds",
  leaseMax: "5 seconds",
  retransmitInterval: "30 seconds",
  retryBaseDelay: "20 millis",
  retryMaxDelay: "100 millis",
  retryBudget: "3 seconds",
  shutdownTimeout: "2 seconds"
}) as const

const createOrders = (prefix: string) =>
  SqlClient.SqlClient.use((sql) =>
    sql.unsafe(`CREATE TABLE IF NOT EXISTS ${prefix}_orders (id text PRIMARY KEY, amount int NOT NULL)`)
  )

const countRows = (table: string) =>
  SqlClient.SqlClient.use((sql) => sql.unsafe<{ n: bigint }>(`SELECT count(*) AS n FROM ${table}`)).pipe(
    Effect.map((rows) => Number(rows[0]!.n))
  )

const lastSeq = (prefix: string) =>
  SqlClient.SqlClient.use((sql) => sql.unsafe<{ last: bigint }>(`SELECT last FROM ${prefix}_sequences`)).pipe(
    Effect.map((rows) => rows.length === 0 ? 0 : Number(rows[0]!.last))
  )

/** Polls `check` every 20 ms until it holds; dies after `timeoutMs`. */
const waitUntil = <E, R>(what: string, timeoutMs: number, check: Effect.Effect<boolean, E, R>) =>
  Effect.gen(function*() {
    const deadline = Date.now() + timeoutMs
    while (!(yield* check)) {
      if (Date.now() > deadline) return yield* Effect.die(new Error(`${what}: not within ${timeoutMs} ms`))
      yield* Effect.sleep(20)
    }
  })

/**
 * A transaction of its own (a fiber of the caller's) that holds `table` in ACCESS EXCLUSIVE mode
 * until `release` completes; answers once the lock is held.
 */
const lockedByAnotherTransaction = (table: string) =>
  Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    const locked = yield* Deferred.make<void>()
    const release = yield* Deferred.make<void>()
    const holder = yield* Effect.forkChild(sql.withTransaction(Effect.gen(function*() {
      yield* sql.unsafe(`LOCK TABLE ${table} IN ACCESS EXCLUSIVE MODE`)
      yield* Deferred.succeed(locked, undefined)
      yield* Deferred.await(release)
    })))
    yield* Deferred.await(locked)
    return { release, holder }
  })

const placeOrder = (prefix: string, id: string, fail = false) =>
  SqlClient.SqlClient.use((sql) =>
    sql.withTransaction(Effect.gen(function*() {
      yield* sql.unsafe(`INSERT INTO ${prefix}_orders (id, amount) VALUES ($1, 1999)`, [id])
      const receipt = yield* Emitter.emitInTransaction({ source: "shop", type: "order.placed", subject: id, data: { id } })
      if (fail) return yield* Effect.fail("payment declined" as const)
      return receipt
    }))
  )

describe("transactional outbox (layerFromClient)", () => {
  it.live("an event commits with the business row and is delivered; a rollback leaves nothing and consumes no seq", () =>
    Effect.gen(function*() {
      const server = yield* ingestServer
      const prefix = yield* scopedPrefix
      yield* Effect.gen(function*() {
        yield* createOrders(prefix)
        const rolledBack = yield* placeOrder(prefix, "o-1", true).pipe(Effect.exit)
        assert.isTrue(Exit.isFailure(rolledBack))
        const receipt = yield* placeOrder(prefix, "o-2")
        assert.strictEqual(receipt.seq, undefined)
        assert.strictEqual(receipt.durable, "when-your-transaction-commits")
        yield* waitUntil("delivered", 5_000, Effect.sync(() => server.received.stats.events === 1))
        yield* Emitter.flush
        assert.strictEqual(yield* countRows(`${prefix}_orders`), 1)
        assert.deepStrictEqual([...server.received.ids], [receipt.id])
        // The rolled-back event consumed no sequence number: the committed one is #1.
        assert.strictEqual(server.received.events[0]!.seqnum, "1")
        assert.strictEqual(yield* lastSeq(prefix), 1)
        assert.strictEqual(yield* countRows(`${prefix}_pending`), 0)
        yield* waitUntil("acknowledged rows deleted", 5_000, Effect.map(countRows(`${prefix}_events`), (n) => n === 0))
      }).pipe(Effect.provide(DurableEmitter.layerFromClient(fastOptions(prefix, server.url)).pipe(Layer.provideMerge(appClient()))))
    }))

  it.live("emitAllInTransaction, a rolled-back savepoint and a failure after the emit", () =>
    Effect.gen(function*() {
      const server = yield* ingestServer
      const prefix = yield* scopedPrefix
      yield* Effect.gen(function*() {
        const sql = yield* SqlClient.SqlClient
        const events = (tag: string, n: number) =>
          Array.from({ length: n }, (_, i) => ({ source: "shop", type: "order.placed", data: { tag, i } }))
        const kept = yield* sql.withTransaction(Effect.gen(function*() {
          const outer = yield* Emitter.emitAllInTransaction(events("outer", 3))
          // A savepoint rolled back while the outer transaction commits: its events go with it.
          const inner = yield* sql.withTransaction(Effect.gen(function*() {
            yield* Emitter.emitAllInTransaction(events("inner", 2))
            return yield* Effect.fail("inner fails" as const)
          })).pipe(Effect.exit)
          assert.isTrue(Exit.isFailure(inner))
          return outer
        }))
        // The application's transaction fails after the emit: nothing of it is delivered.
        const failed = yield* sql.withTransaction(Effect.gen(function*() {
          yield* Emitter.emitAllInTransaction(events("failed", 4))
          yield* sql.unsafe("SELECT 1/0")
        })).pipe(Effect.exit)
        assert.isTrue(Exit.isFailure(failed))
        // Interrupted after the emit: rolled back as well.
        const interrupted = yield* Effect.forkChild(sql.withTransaction(Effect.gen(function*() {
          yield* Emitter.emitAllInTransaction(events("interrupted", 2))
          yield* Effect.never
        })))
        yield* Effect.sleep(100)
        yield* Fiber.interrupt(interrupted)
        yield* Emitter.flush
        assert.deepStrictEqual([...server.received.ids].sort(), kept.map((r) => r.id).sort())
        assert.deepStrictEqual(server.received.events.map((e) => e.seqnum), ["1", "2", "3"])
        assert.strictEqual(yield* countRows(`${prefix}_pending`), 0)
      }).pipe(Effect.provide(DurableEmitter.layerFromClient(fastOptions(prefix, server.url)).pipe(Layer.provideMerge(appClient()))))
    }))

  it.live("Emitter.flush inside the transaction does not send its uncommitted events: a rollback after it leaves nothing delivered", () =>
    Effect.gen(function*() {
      const server = yield* ingestServer
      const prefix = yield* scopedPrefix
      yield* Effect.gen(function*() {
        const sql = yield* SqlClient.SqlClient
        let rolledBack = ""
        const outcome = yield* sql.withTransaction(Effect.gen(function*() {
          rolledBack = (yield* Emitter.emitInTransaction({ source: "shop", type: "order.placed", data: "flushed inside" })).id
          yield* Emitter.flush
          return yield* Effect.fail("roll back" as const)
        })).pipe(Effect.flip)
        assert.strictEqual(outcome, "roll back")
        const committed = yield* sql.withTransaction(Emitter.emitInTransaction({ source: "shop", type: "order.placed", data: "committed" }))
        yield* Emitter.flush
        assert.isFalse(server.received.ids.has(rolledBack))
        assert.deepStrictEqual([...server.received.ids], [committed.id])
        assert.deepStrictEqual(server.received.events.map((e) => e.seqnum), ["1"])
      }).pipe(Effect.provide(DurableEmitter.layerFromClient(fastOptions(prefix, server.url)).pipe(Layer.provideMerge(appClient()))))
      // On a pool of one connection, which the transaction holds, flush inside it does not wait for
      // a connection (commitTimeout, 10 s here): it has nothing of that transaction to promote.
      yield* Effect.gen(function*() {
        const sql = yield* SqlClient.SqlClient
        const inside = yield* sql.withTransaction(Effect.gen(function*() {
          yield* Emitter.emitInTransaction({ source: "shop", type: "order.placed", data: "pool of one" })
          return yield* Emitter.flush.pipe(Effect.timeoutOption("3 seconds"))
        }))
        assert.isTrue(Option.isSome(inside), "flush inside the transaction waited for the pool")
        yield* Emitter.flush
        assert.deepStrictEqual(server.received.events.map((e) => e.seqnum), ["1", "2"])
      }).pipe(Effect.provide(DurableEmitter.layerFromClient(fastOptions(prefix, server.url)).pipe(Layer.provideMerge(appClient(1)))))
    }))

  it.live("an application client that reads int8 as a string (its own codec): receipts still carry bigint seqs, rows are deleted", () =>
    Effect.gen(function*() {
      const server = yield* ingestServer
      const prefix = yield* scopedPrefix
      const types = PgTypes.makeRegistry()
      types.register<string>(20, {
        encode: (value) => {
          const bytes = new Uint8Array(8)
          new DataView(bytes.buffer).setBigInt64(0, BigInt(value))
          return Result.succeed(bytes)
        },
        decode: (bytes) => Result.succeed(new DataView(bytes.buffer, bytes.byteOffset, 8).getBigInt64(0).toString())
      })
      const stringInt8 = PgClient.layer({ url: Redacted.make(databaseUrl), maxConnections: 4, types })
      yield* Effect.gen(function*() {
        const sql = yield* SqlClient.SqlClient
        const [probe] = yield* sql.unsafe<{ n: unknown }>("SELECT 5::int8 AS n")
        assert.strictEqual(probe!.n, "5") // the application's choice, on its own client
        const plain = yield* Emitter.emit({ source: "shop", type: "order.placed" })
        assert.strictEqual(plain.seq, 1n)
        yield* sql.withTransaction(Emitter.emitInTransaction({ source: "shop", type: "order.placed" }))
        yield* Emitter.flush
        assert.deepStrictEqual(server.received.events.map((e) => e.seqnum), ["1", "2"])
        assert.strictEqual(yield* countRows(`${prefix}_events`), 0)
      }).pipe(Effect.provide(DurableEmitter.layerFromClient(fastOptions(prefix, server.url)).pipe(Layer.provideMerge(stringInt8))))
    }))

  it.live("an application client that renames result columns: a second start finds its migrations applied", () =>
    Effect.gen(function*() {
      const server = yield* ingestServer
      const prefix = yield* scopedPrefix
      const renaming = PgClient.layer({ url: Redacted.make(databaseUrl), maxConnections: 4, transformResultNames: (name) => name.toUpperCase() })
      const emitter = DurableEmitter.layerFromClient(fastOptions(prefix, server.url))
      const emitOne = Effect.andThen(Emitter.emit({ source: "shop", type: "order.placed" }), (receipt) => Effect.andThen(Emitter.flush, Effect.succeed(receipt.seq)))
      yield* Effect.gen(function*() {
        assert.strictEqual(yield* emitOne.pipe(Effect.provide(emitter)), 1n)
        assert.strictEqual(yield* emitOne.pipe(Effect.provide(emitter)), 2n)
      }).pipe(Effect.provide(renaming))
      assert.deepStrictEqual(server.received.events.map((e) => e.seqnum), ["1", "2"])
    }))

  const clientSettings: ReadonlyArray<readonly [string, Partial<PgClient.PgClientConfig>]> = [
    ["multiplexed", { multiplex: true }],
    ["without prepared statements", { prepare: false }],
    ["camelCase result names and JSON transforms", { transformJson: true, transformResultNames: (s) => s.replace(/_(\w)/g, (_, c: string) => c.toUpperCase()) }]
  ]
  for (const [name, settings] of clientSettings) {
    it.live(`on an application client ${name}: plain and transactional emits, every event once, seqs 1..N`, () =>
      Effect.gen(function*() {
        const server = yield* ingestServer
        const prefix = yield* scopedPrefix
        const client = PgClient.layer({ url: Redacted.make(databaseUrl), maxConnections: 4, ...settings })
        yield* Effect.gen(function*() {
          const sql = yield* SqlClient.SqlClient
          yield* Effect.forEach(Array.from({ length: 200 }), () => Emitter.emit({ source: "shop", type: "order.placed" }), { concurrency: 50 })
          yield* Effect.forEach(Array.from({ length: 50 }), () => sql.withTransaction(Emitter.emitInTransaction({ source: "shop", type: "order.placed" })), { concurrency: 10 })
          yield* Emitter.flush
          const seqs = server.received.events.map((e) => Number(e.seqnum)).sort((a, b) => a - b)
          assert.deepStrictEqual(seqs, Array.from({ length: 250 }, (_, i) => i + 1))
          assert.strictEqual(server.received.stats.duplicates, 0)
        }).pipe(Effect.provide(DurableEmitter.layerFromClient(fastOptions(prefix, server.url)).pipe(Layer.provideMerge(client))))
      }), 30_000)
  }

  it.live("a transactional emit is an `emit {destination}` producer span marked transactional, a child of the caller's span", () =>
    Effect.gen(function*() {
      const server = yield* ingestServer
      const prefix = yield* scopedPrefix
      const spans = new InMemorySpanExporter()
      const otel = NodeSdk.layer(() => ({ resource: { serviceName: "outbox-spans" }, spanProcessor: new SimpleSpanProcessor(spans) }))
      // Read inside the layer's scope: closing the SDK empties the in-memory exporter.
      yield* Effect.gen(function*() {
        const sql = yield* SqlClient.SqlClient
        yield* sql.withTransaction(Emitter.emitInTransaction({ source: "shop", type: "order.placed" })).pipe(Effect.withSpan("checkout"))
        yield* Emitter.flush
        const finished = spans.getFinishedSpans()
        const emits = finished.filter((span) => span.name.startsWith("emit"))
        // (withTransaction makes a span of its own, so inside a transaction a caller is always traced.)
        assert.deepStrictEqual(emits.map((span) => span.name), ["emit shop/order.placed"])
        const [emit] = emits
        assert.strictEqual(emit!.kind, SpanKind.PRODUCER)
        assert.strictEqual(emit!.attributes["durable_emitter.transactional"], true)
        assert.strictEqual(emit!.attributes["messaging.operation.name"], "emit")
        assert.strictEqual(emit!.attributes["cloudevents.event_type"], "order.placed")
        const checkout = finished.find((span) => span.name === "checkout")!
        assert.strictEqual(emit!.spanContext().traceId, checkout.spanContext().traceId, "in the caller's trace")
      }).pipe(Effect.provide(DurableEmitter.layerFromClient(fastOptions(prefix, server.url)).pipe(
        Layer.provideMerge(appClient()),
        Layer.provideMerge(otel)
      )))
    }))

  it.live("refusals: emit inside the transaction, emitInTransaction outside one, an invalid event (nothing written)", () =>
    Effect.gen(function*() {
      const server = yield* ingestServer
      const prefix = yield* scopedPrefix
      yield* Effect.gen(function*() {
        const sql = yield* SqlClient.SqlClient
        yield* createOrders(prefix)
        const outside = yield* Emitter.emitInTransaction({ source: "shop", type: "order.placed" }).pipe(Effect.flip)
        assert.strictEqual(outside._tag, "NoTransaction")
        const committed = yield* sql.withTransaction(Effect.gen(function*() {
          yield* sql.unsafe(`INSERT INTO ${prefix}_orders (id, amount) VALUES ('o-9', 5)`)
          const plain = yield* Emitter.emit({ source: "shop", type: "order.placed" }).pipe(Effect.flip)
          assert.strictEqual(plain._tag, "TransactionOpen")
          const invalid = yield* Emitter.emitInTransaction({ source: "", type: "order.placed" }).pipe(Effect.flip)
          assert.strictEqual(invalid._tag, "InvalidEvent")
          // The application decides: here it commits its row anyway.
          return "committed"
        }))
        assert.strictEqual(committed, "committed")
        yield* Emitter.flush
        assert.strictEqual(yield* countRows(`${prefix}_orders`), 1)
        assert.strictEqual(server.received.stats.events, 0)
        assert.strictEqual(yield* countRows(`${prefix}_pending`), 0)
        // Outside a transaction emit keeps its group commit.
        const receipt = yield* Emitter.emit({ source: "shop", type: "order.placed" })
        assert.strictEqual(receipt.seq, 1n)
      }).pipe(Effect.provide(DurableEmitter.layerFromClient(fastOptions(prefix, server.url)).pipe(Layer.provideMerge(appClient()))))
    }))

  it.live("a 5 s open transaction holding an event does not hold up emits of the same key outside it", () =>
    Effect.gen(function*() {
      const server = yield* ingestServer
      const prefix = yield* scopedPrefix
      yield* Effect.gen(function*() {
        const sql = yield* SqlClient.SqlClient
        const long = yield* Effect.forkChild(sql.withTransaction(Effect.gen(function*() {
          const receipt = yield* Emitter.emitInTransaction({ source: "shop", type: "order.placed", data: "long" })
          yield* Effect.sleep(5_000)
          return receipt
        })))
        yield* Effect.sleep(100)
        const started = Date.now()
        const outside = yield* Effect.forEach(Array.from({ length: 50 }, (_, i) => i), (i) =>
          Emitter.emit({ source: "shop", type: "order.placed", data: { i } }), { concurrency: 10 })
        const took = Date.now() - started
        assert.isBelow(took, 2_000, `50 emits beside the open transaction took ${took} ms`)
        const held = yield* Fiber.join(long)
        yield* Emitter.flush
        assert.strictEqual(server.received.stats.events, 51)
        // Numbered after its commit: after every event committed while it was open.
        const heldEvent = server.received.events.find((e) => e.id === held.id)!
        assert.strictEqual(heldEvent.seqnum, "51")
        assert.deepStrictEqual(outside.map((r) => Number(r.seq)).sort((a, b) => a - b), Array.from({ length: 50 }, (_, i) => i + 1))
      }).pipe(Effect.provide(DurableEmitter.layerFromClient(fastOptions(prefix, server.url)).pipe(Layer.provideMerge(appClient()))))
    }), 20_000)

  it.live("a shared pool of one connection: the emit joins the transaction instead of waiting for the connection", () =>
    Effect.gen(function*() {
      const server = yield* ingestServer
      const prefix = yield* scopedPrefix
      yield* Effect.gen(function*() {
        yield* createOrders(prefix)
        yield* placeOrder(prefix, "o-1")
        yield* Emitter.flush
        assert.strictEqual(server.received.stats.events, 1)
      }).pipe(Effect.provide(DurableEmitter.layerFromClient(fastOptions(prefix, server.url)).pipe(Layer.provideMerge(appClient(1)))))
    }))

  it.live("a write in the transaction with no answer within commitTimeout fails with TransactionWriteFailed; the rollback leaves nothing", () =>
    Effect.gen(function*() {
      const server = yield* ingestServer
      const prefix = yield* scopedPrefix
      yield* Effect.gen(function*() {
        const sql = yield* SqlClient.SqlClient
        yield* createOrders(prefix)
        // Another transaction holds the pending table: the event's INSERT waits for its lock.
        const { release, holder } = yield* lockedByAnotherTransaction(`${prefix}_pending`)
        const started = Date.now()
        let outcome: { readonly error: { readonly _tag: string; readonly message: string }; readonly waited: number } | undefined
        const rolledBack = yield* sql.withTransaction(Effect.gen(function*() {
          yield* sql.unsafe(`INSERT INTO ${prefix}_orders (id, amount) VALUES ('o-1', 1999)`)
          const error = yield* Emitter.emitInTransaction({ source: "shop", type: "order.placed" }).pipe(Effect.flip)
          outcome = { error, waited: Date.now() - started }
          // The statement may still wait on the connection: let the rollback through.
          yield* Deferred.succeed(release, undefined)
          return yield* Effect.fail("the application rolls back" as const)
        })).pipe(Effect.exit)
        yield* Fiber.join(holder)
        assert.isTrue(Exit.isFailure(rolledBack))
        assert.isDefined(outcome, "the emit did not fail")
        assert.strictEqual(outcome.error._tag, "TransactionWriteFailed")
        assert.include(outcome.error.message, "no answer within 800 ms")
        assert.isTrue(outcome.waited >= 750 && outcome.waited < 5_000, `failed after ${outcome.waited} ms`)
        yield* Emitter.flush
        assert.strictEqual(yield* countRows(`${prefix}_orders`), 0)
        assert.strictEqual(yield* countRows(`${prefix}_pending`), 0)
        assert.strictEqual(server.received.stats.events, 0)
      }).pipe(Effect.provide(
        DurableEmitter.layerFromClient({ ...fastOptions(prefix, server.url), commitTimeout: "800 millis" }).pipe(Layer.provideMerge(appClient(6)))
      ))
    }))

  it.live("a promotion with no answer within commitTimeout fails, is logged and tried again; the event is delivered once", () =>
    Effect.gen(function*() {
      const server = yield* ingestServer
      const prefix = yield* scopedPrefix
      const logs: Array<string> = []
      const logger = Logger.make(({ message }) => void logs.push(JSON.stringify(message)))
      yield* Effect.gen(function*() {
        yield* createOrders(prefix)
        // Another transaction holds the events table: a promotion's INSERT waits for its lock.
        const { release, holder } = yield* lockedByAnotherTransaction(`${prefix}_events`)
        const receipt = yield* placeOrder(prefix, "o-1")
        yield* waitUntil("a promotion timed out", 5_000, Effect.sync(() => logs.some((l) => l.includes("outbox promotion failed"))))
        assert.strictEqual(server.received.stats.events, 0)
        yield* Deferred.succeed(release, undefined)
        yield* Fiber.join(holder)
        yield* waitUntil("delivered", 15_000, Effect.sync(() => server.received.stats.events >= 1))
        yield* Emitter.flush
        const failure = logs.find((l) => l.includes("outbox promotion failed"))!
        assert.include(failure, "no answer within 800 ms")
        assert.deepStrictEqual([...server.received.ids], [receipt.id])
        assert.strictEqual(server.received.events[0]!.seqnum, "1")
        assert.strictEqual(yield* countRows(`${prefix}_pending`), 0)
      }).pipe(Effect.provide(
        DurableEmitter.layerFromClient({ ...fastOptions(prefix, server.url), commitTimeout: "800 millis", retransmitInterval: "200 millis" }).pipe(
          Layer.provideMerge(appClient(6)),
          Layer.provide(Logger.layer([logger]))
        )
      ))
    }))

  it.live("the emitter vacuums the pending table while events go through it (autovacuum is off here)", () =>
    Effect.gen(function*() {
      const server = yield* ingestServer
      const prefix = yield* scopedPrefix
      yield* Effect.gen(function*() {
        const sql = yield* SqlClient.SqlClient
        yield* createOrders(prefix)
        const pending = `${prefix}_pending`
        const vacuums = sql.unsafe<{ n: number }>(`SELECT vacuum_count::int AS n FROM pg_stat_user_tables WHERE relname = '${pending}'`).pipe(
          Effect.map((rows) => rows[0]?.n ?? 0)
        )
        assert.strictEqual(yield* vacuums, 0)
        yield* Effect.forEach(Array.from({ length: 1_000 }, (_, i) => `o-${i}`), (id) => placeOrder(prefix, id), { concurrency: 4, discard: true })
        yield* Emitter.flush
        // Every promoted row leaves a dead tuple behind; the emitter vacuums every 10 s after churn.
        yield* waitUntil("the pending table vacuumed", 15_000, Effect.map(vacuums, (n) => n >= 1))
        assert.strictEqual(server.received.stats.events, 1_000)
        assert.strictEqual(yield* countRows(pending), 0)
      }).pipe(Effect.provide(DurableEmitter.layerFromClient(fastOptions(prefix, server.url)).pipe(Layer.provideMerge(appClient(6)))))
    }), 40_000)

  it.live("a commit whose process never promoted it (it died right after the commit) is delivered by polling", () =>
    Effect.gen(function*() {
      const server = yield* ingestServer
      const prefix = yield* scopedPrefix
      // Pending rows committed by "another process" (here: plain SQL), as one that died right after
      // its commit would leave them; the payload is a real encoded event.
      const commitElsewhere = (data: string) =>
        SqlClient.SqlClient.use((sql) => {
          const event = Event.prepare({ source: "shop", type: "order.placed", data }, { emitterName: "other", maxEventBytes: 1 << 20, now: Date.now(), traceparent: undefined })
          if (!("payload" in event)) return Effect.die(event)
          return sql.unsafe(
            `INSERT INTO ${prefix}_pending (event_id, source, type, payload, created_at) VALUES ($1, $2, $3, $4, now())`,
            [event.eventId, event.source, event.type, event.payload]
          ).pipe(Effect.as(event.eventId))
        })
      const delivered = (id: string) => Effect.sync(() => server.received.ids.has(id))
      yield* Effect.gen(function*() {
        // The layer is built (tables migrated) before the row is written; the first poll is at once.
        yield* Emitter.flush
        const id = yield* commitElsewhere("polled")
        const started = Date.now()
        yield* waitUntil("delivered by polling", 5_000, delivered(id))
        // Nothing woke the promoter but its poll (every second here).
        assert.isAtMost(Date.now() - started, 4_000)
        assert.strictEqual(server.received.stats.duplicates, 0)
      }).pipe(Effect.provide(DurableEmitter.layerFromClient({ ...fastOptions(prefix, server.url), retransmitInterval: "1 second" }).pipe(Layer.provideMerge(appClient()))))
    }), 30_000)
})
