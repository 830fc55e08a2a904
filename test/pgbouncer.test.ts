/**
 * Behind a real PgBouncer in transaction pooling (test/support/pgbouncer.ts), with fewer server
 * connections than the emitter's pool, so consecutive statements of one client connection run on
 * different server connections: the emitter's own pool with `transactionPooling`, and the outbox
 * on the application's client built with `prepare: false`. Skipped when PgBouncer is not installed
 * (.ci/run installs it).
 */
import { assert, describe, it } from "@effect/vitest"
import { PgClient } from "@effect/sql-pg"
import { Effect, Exit, Layer, Option, Redacted } from "effect"
import { SqlClient } from "effect/sql"
import { DurableEmitter } from "../src/DurableEmitter.ts"
import { Emitter } from "../src/Emitter.ts"
import { StoreError } from "../src/Errors.ts"
import { Store } from "../src/Store.ts"
import * as PgStore from "../src/store/PgStore.ts"
import { startIngestServer } from "../src/testing/IngestServer.ts"
import { waitUntil } from "./support/faultRun.ts"
import { databaseUrl, scopedPrefix } from "./support/pg.ts"
import { pgbouncer, pgbouncerBinary } from "./support/pgbouncer.ts"
import { oneToN, seqnumsByKey } from "./support/seqnums.ts"

const ingestServer = Effect.acquireRelease(
  Effect.promise(() => startIngestServer({ record: "events" })),
  (server) => Effect.promise(() => server.close())
)

const options = (prefix: string, ingestUrl: string) => ({
  ingestUrl,
  tablePrefix: prefix,
  requestTimeout: "2 seconds",
  retryBaseDelay: "20 millis",
  retryMaxDelay: "100 millis",
  shutdownTimeout: "2 seconds"
}) as const

describe.skipIf(pgbouncerBinary === undefined)("behind PgBouncer (transaction pooling)", () => {
  it.live("the emitter's own pool without transactionPooling fails at the start, naming the refused parameter", () =>
    Effect.gen(function*() {
      const bouncer = yield* pgbouncer(2)
      const server = yield* ingestServer
      const prefix = yield* scopedPrefix
      const exit = yield* Effect.exit(Effect.scoped(Layer.build(
        DurableEmitter.layerWith({ ...options(prefix, server.url), databaseUrl: Redacted.make(bouncer.url) })
      )))
      assert.isTrue(Exit.isFailure(exit))
      const error = Option.getOrUndefined(Exit.findErrorOption(exit))
      assert.instanceOf(error, StoreError)
      assert.include(error.message, "unsupported startup parameter")
    }))

  it.live("with transactionPooling every event is delivered once, numbered 1..N per key, and its row deleted", () =>
    Effect.gen(function*() {
      const bouncer = yield* pgbouncer(2)
      const server = yield* ingestServer
      const prefix = yield* scopedPrefix
      yield* Effect.gen(function*() {
        const one = yield* Effect.forEach(oneToN(300), (i) =>
          Emitter.emit({ source: "billing", type: "invoice.paid", data: { i } }), { concurrency: 30 })
        const all = yield* Emitter.emitAll(oneToN(50).map((i) => ({ source: "billing", type: "invoice.voided", data: { i } })))
        yield* Emitter.flush
        assert.strictEqual(server.received.stats.events, 350)
        assert.strictEqual(server.received.stats.duplicates, 0)
        assert.deepStrictEqual([...server.received.ids].sort(), [...one, ...all].map((r) => r.id).sort())
        const seqs = seqnumsByKey(server.received.events)
        assert.deepStrictEqual(seqs.get("billing invoice.paid"), oneToN(300))
        assert.deepStrictEqual(seqs.get("billing invoice.voided"), oneToN(50))
        // Acknowledged rows are deleted, through the pooler too; stats read pg_class through it.
        yield* waitUntil("backlog 0", 5_000, Store.use((s) => Effect.map(s.stats, (stats) => stats.backlog === 0)))
      }).pipe(Effect.provide(DurableEmitter.layerWith({
        ...options(prefix, server.url),
        databaseUrl: Redacted.make(bouncer.url),
        transactionPooling: true,
        maxConnections: 6
      })))
    }))

  it.live("the Store's transactions (rotations) and statements between them, many times: none fails", () =>
    Effect.gen(function*() {
      const bouncer = yield* pgbouncer(2)
      const prefix = yield* scopedPrefix
      // A rotation is a transaction; a statement prepared on one server connection and reused in
      // it on another fails there and aborts it (and, seen without this option, the server
      // connection's next client got "current transaction is aborted" on its append).
      const rounds = yield* Effect.gen(function*() {
        const store = yield* Store
        for (let round = 0; round < 40; round++) {
          yield* Effect.forEach(oneToN(6), () =>
            Effect.flatMap(
              store.append([{ source: "s", type: "t", eventId: crypto.randomUUID(), payload: new Uint8Array(100) }], { now: Date.now(), nextAttemptAt: Date.now() + 60_000 }),
              (appended) => store.delete(appended.map((a) => a.rowId))
            ), { concurrency: 6, discard: true })
          yield* Effect.sleep(35)
        }
        return 40
      }).pipe(Effect.provide(PgStore.layer({
        url: Redacted.make(bouncer.url),
        tablePrefix: prefix,
        transactionPooling: true,
        maxConnections: 6,
        // Every check rotates: the current partition is always over one byte.
        partitionBytes: 1,
        rotationInterval: "30 millis"
      })))
      assert.strictEqual(rounds, 40)
      const rotations = yield* SqlClient.SqlClient.use((sql) => sql.unsafe<{ n: bigint | string }>(`SELECT rotations AS n FROM ${prefix}_rotation`)).pipe(
        Effect.provide(PgClient.layer({ url: Redacted.make(databaseUrl), maxConnections: 1 }))
      )
      assert.isAtLeast(Number(rotations[0]!.n), 20)
    }))

  it.live("the outbox on the application's client with prepare: false: a commit is delivered, a rollback is not", () =>
    Effect.gen(function*() {
      const bouncer = yield* pgbouncer(2)
      const server = yield* ingestServer
      const prefix = yield* scopedPrefix
      const app = PgClient.layer({ url: Redacted.make(bouncer.url), maxConnections: 4, prepare: false })
      yield* Effect.gen(function*() {
        const sql = yield* SqlClient.SqlClient
        yield* sql.unsafe(`CREATE TABLE ${prefix}_orders (id text PRIMARY KEY)`)
        const order = (id: string, fail: boolean) =>
          sql.withTransaction(Effect.gen(function*() {
            yield* sql.unsafe(`INSERT INTO ${prefix}_orders (id) VALUES ($1)`, [id])
            const receipt = yield* Emitter.emitInTransaction({ source: "shop", type: "order.placed", subject: id, data: { id } })
            if (fail) return yield* Effect.fail("declined" as const)
            return receipt
          }))
        const kept = yield* Effect.forEach(oneToN(40), (i) => order(`o-${i}`, false), { concurrency: 8 })
        const rolledBack = yield* Effect.forEach(oneToN(10), (i) => Effect.exit(order(`x-${i}`, true)), { concurrency: 4 })
        assert.isTrue(rolledBack.every(Exit.isFailure))
        yield* Emitter.flush
        assert.strictEqual(server.received.stats.duplicates, 0)
        assert.deepStrictEqual([...server.received.ids].sort(), kept.map((r) => r.id).sort())
        assert.deepStrictEqual(seqnumsByKey(server.received.events).get("shop order.placed"), oneToN(40))
        const orders = yield* sql.unsafe<{ n: bigint | string }>(`SELECT count(*) AS n FROM ${prefix}_orders`)
        assert.strictEqual(Number(orders[0]!.n), 40)
      }).pipe(Effect.provide(DurableEmitter.layerFromClient(options(prefix, server.url)).pipe(Layer.provideMerge(app))))
    }))
})
