/**
 * The transactional outbox with real processes on real PostgreSQL: each emitter process writes a
 * business row and its event in one application transaction (`emitInTransaction`) and prints the
 * receipt after its COMMIT (./fixtures/emitter-worker.ts, `outbox` mode).
 */
import { assert, describe, it } from "@effect/vitest"
import { PgClient } from "@effect/sql-pg"
import { Effect, Redacted } from "effect"
import { SqlClient } from "effect/sql"
import { startIngestServer } from "../src/testing/IngestServer.ts"
import { type Receipt, startEmitterProcess } from "./fixtures/emitter-process.ts"
import { waitUntil } from "./support/faultRun.ts"
import { databaseUrl, scopedPrefix } from "./support/pg.ts"
import { fastRecovery } from "./support/recovery.ts"
import { oneToN, seqnumsByKey } from "./support/seqnums.ts"

const SqlLive = PgClient.layer({ url: Redacted.make(databaseUrl), maxConnections: 2 })

const ingestServer = Effect.acquireRelease(
  Effect.promise(() => startIngestServer({ record: "events" })),
  (server) => Effect.promise(() => server.close())
)

/** A business table, dropped with the test's scope (on a client of its own: the test's is gone by then). */
const ordersTable = (prefix: string) =>
  Effect.acquireRelease(
    SqlClient.SqlClient.use((sql) => sql.unsafe(`CREATE TABLE ${prefix}_orders (id text PRIMARY KEY)`)).pipe(
      Effect.as(`${prefix}_orders`),
      Effect.orDie
    ),
    (table) => SqlClient.SqlClient.use((sql) => sql.unsafe(`DROP TABLE IF EXISTS ${table}`)).pipe(Effect.provide(SqlLive), Effect.ignore)
  )

const column = (query: string) =>
  SqlClient.SqlClient.use((sql) => sql.unsafe<{ v: string }>(query)).pipe(
    Effect.map((rows) => rows.map((r) => String(r.v))),
    Effect.orDie
  )

describe("transactional outbox across processes", () => {
  it.live("SIGKILL after commits that were never delivered: a new process delivers every one, and exactly the committed ones", () =>
    Effect.gen(function*() {
      const prefix = yield* scopedPrefix
      const orders = yield* ordersTable(prefix)
      const server = yield* ingestServer
      const receipts: Array<Receipt> = []
      yield* Effect.scoped(Effect.gen(function*() {
        // Its ingest port is closed: whatever it commits stays undelivered when it is killed.
        const child = yield* startEmitterProcess("outbox-crash", {
          mode: "continuous",
          fibers: 4,
          keys: [["shop", "order.placed"], ["shop", "order.paid"]],
          outbox: { ordersTable: orders },
          options: { ...fastRecovery(prefix, "http://127.0.0.1:9"), name: "outbox-crash" }
        })
        yield* child.ready
        yield* child.receiptsAtLeast(200, 20_000)
        yield* child.kill
        receipts.push(...child.receipts)
      }))
      assert.strictEqual(server.received.stats.events, 0)
      const committed = yield* column(`SELECT id AS v FROM ${orders}`)
      // Every receipt was committed (some commits may have had no receipt printed yet).
      const committedSet = new Set(committed)
      for (const r of receipts) assert.isTrue(committedSet.has(r.id), `receipt ${r.id} without its business row`)

      const recovery = yield* startEmitterProcess("outbox-recovery", {
        mode: "idle",
        outbox: { ordersTable: orders },
        options: { ...fastRecovery(prefix, server.url), name: "outbox-recovery" }
      })
      yield* recovery.ready
      yield* waitUntil("recovery", 20_000, Effect.sync(() => server.received.ids.size >= committed.length), () =>
        `(${server.received.ids.size} of ${committed.length} delivered)`)
      yield* Effect.sleep(300)
      // Exactly the committed events: none of a rolled-back or unfinished transaction, none missing.
      assert.deepStrictEqual([...server.received.ids].sort(), [...committed].sort())
      for (const [key, seqs] of seqnumsByKey(server.received.events)) assert.deepStrictEqual(seqs, oneToN(seqs.length), key)
      const stopped = yield* recovery.stop(5_000)
      assert.isTrue(stopped.stopped, recovery.stderr())
    }).pipe(Effect.provide(SqlLive)), 120_000)

  it.live("two processes emitting the same key in their transactions: every event once, seqnums 1..N", () =>
    Effect.gen(function*() {
      const prefix = yield* scopedPrefix
      const orders = yield* ordersTable(prefix)
      const server = yield* ingestServer
      const workers = yield* Effect.forEach(["a", "b"], (name) =>
        startEmitterProcess(`outbox-${name}`, {
          mode: "count",
          fibers: 4,
          count: 50,
          keys: [["shop", "order.placed"]],
          outbox: { ordersTable: orders },
          options: { ...fastRecovery(prefix, server.url), name: `outbox-${name}` }
        }))
      yield* Effect.forEach(workers, (w) => w.ready, { discard: true })
      const done = yield* Effect.forEach(workers, (w) => w.done(60_000))
      for (const d of done) assert.deepStrictEqual(d, { emitted: 200, errors: 0 })
      const receipts = workers.flatMap((w) => w.receipts)
      yield* waitUntil("delivery", 20_000, Effect.sync(() => server.received.ids.size >= receipts.length))
      assert.deepStrictEqual([...server.received.ids].sort(), receipts.map((r) => r.id).sort())
      assert.strictEqual(server.received.stats.duplicates, 0)
      assert.deepStrictEqual(seqnumsByKey(server.received.events).get("shop order.placed"), oneToN(400))
      assert.deepStrictEqual((yield* column(`SELECT count(*) AS v FROM ${orders}`))[0], "400")
      for (const w of workers) assert.isTrue((yield* w.stop(5_000)).stopped, w.stderr())
    }).pipe(Effect.provide(SqlLive)), 120_000)
})
