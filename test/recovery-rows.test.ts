/**
 * Recovery of problem rows on a real PostgreSQL with the reference ingest server: poison rows are
 * dead-lettered (UNDECODABLE) without stalling the others; rows past their TTL are expired, per
 * source and type, dead-lettered or deleted; a replayed dead letter is delivered under its original
 * id and seqnum; and expiry over a 250 000-row backlog never touches more than its batch size in
 * one statement.
 */
import { assert, describe, it } from "@effect/vitest"
import { PgClient } from "@effect/sql-pg"
import { Effect, Layer, Metric, Redacted, References } from "effect"
import { SqlClient } from "effect/sql"
import * as Config from "../src/Config.ts"
import { DurableEmitter, services } from "../src/DurableEmitter.ts"
import { Emitter } from "../src/Emitter.ts"
import * as Event from "../src/Event.ts"
import * as Metrics from "../src/Metrics.ts"
import { type NewEvent, Store } from "../src/Store.ts"
import * as PgStore from "../src/store/PgStore.ts"
import { startIngestServer } from "../src/testing/IngestServer.ts"
import * as GrpcTransport from "../src/transport/GrpcTransport.ts"
import { databaseUrl, scopedPrefix as tables } from "./support/pg.ts"
import { fastRecovery } from "./support/recovery.ts"

const url = Redacted.make(databaseUrl)
const SqlLive = PgClient.layer({ url, maxConnections: 2 })

const ingestServer = Effect.acquireRelease(
  Effect.promise(() => startIngestServer({ record: "events" })),
  (server) => Effect.promise(() => server.close())
)

const options = (prefix: string, ingestUrl: string): Config.EmitterOptionsInput => ({
  ...fastRecovery(prefix, ingestUrl),
  databaseUrl: url
})

const query = <A extends object>(text: string) =>
  SqlClient.SqlClient.use((sql) => sql.unsafe<A>(text)).pipe(Effect.orDie)

const count = (table: string) => Effect.map(query<{ n: bigint }>(`SELECT count(*) AS n FROM ${table}`), (rows) => Number(rows[0]!.n))

const waitUntil = <E, R>(what: string, timeoutMs: number, check: Effect.Effect<boolean, E, R>) =>
  Effect.gen(function*() {
    const deadline = Date.now() + timeoutMs
    while (!(yield* check)) {
      if (Date.now() > deadline) return yield* Effect.die(new Error(`${what}: not within ${timeoutMs} ms`))
      yield* Effect.sleep(100)
    }
  })

/** A valid encoded CloudEvent, as `emit` would store it. */
const prepared = (source: string, type: string, data: string): NewEvent => {
  const event = Event.prepare({ source, type, data }, { emitterName: "elsewhere", maxEventBytes: 1 << 20, now: Date.now() })
  if (!("payload" in event)) throw new Error(`cannot prepare: ${String(event)}`)
  return event
}

/** A counter's series of the emitter (named by default): every series carries `emitter`. */
const metricCount = (metric: Metric.Counter<number>, attributes: Record<string, string>) =>
  Effect.map(Metric.value(Metric.withAttributes(metric, { ...attributes, emitter: "durable-emitter" })), (state) => state.count)

describe("recovery of problem rows", () => {
  it.live("a poison row is dead-lettered as UNDECODABLE with a reason; the rows around it are delivered; no crash loop", () =>
    Effect.gen(function*() {
      const prefix = yield* tables
      const server = yield* ingestServer
      const deadBefore = yield* metricCount(Metrics.deadLettered, { code: "UNDECODABLE", source: "elsewhere", type: "poison" })
      yield* Effect.gen(function*() {
        const store = yield* Store
        const now = Date.now()
        const good = Array.from({ length: 10 }, (_, i) => prepared("elsewhere", "good", `good ${i}`))
        const garbage: NewEvent = { eventId: "garbage-row", source: "elsewhere", type: "poison", payload: Uint8Array.from([0x0a, 0xff, 0xff]) }
        const mismatch: NewEvent = { ...prepared("elsewhere", "poison", "mismatch"), eventId: "not-the-payload-id" }
        // Poison among good rows, all due: they come back in the same claim.
        const rows = [...good.slice(0, 5), garbage, ...good.slice(5), mismatch]
        yield* store.append(rows, { now: now - 2_000, nextAttemptAt: now - 1_000 })
        const fresh = yield* Effect.forEach(Array.from({ length: 20 }, (_, i) => i), (i) =>
          Emitter.emit({ source: "app", type: "fresh", data: `fresh ${i}` }), { concurrency: 5 })

        yield* waitUntil("poison handled", 5_000, Effect.map(count(`${prefix}_events`), (n) => n === 0))
        for (const id of [...good.map((g) => g.eventId), ...fresh.map((r) => r.id)]) assert.isTrue(server.received.ids.has(id), id)
        assert.isFalse(server.received.ids.has(garbage.eventId))
        assert.strictEqual(server.received.stats.rejectedEvents, 0, "nothing undecodable was sent")

        const dead = yield* store.listDeadLetters({})
        assert.deepStrictEqual(dead.map((d) => d.eventId).sort(), ["garbage-row", "not-the-payload-id"])
        for (const d of dead) {
          assert.strictEqual(d.code, "UNDECODABLE")
          assert.strictEqual(d.attempts, 1, "dead-lettered at its first claim")
        }
        assert.match(dead.find((d) => d.eventId === "garbage-row")!.reason, /not a CloudEvent: .+/)
        assert.match(dead.find((d) => d.eventId === "not-the-payload-id")!.reason, /does not match the row's event id not-the-payload-id/)
        assert.deepStrictEqual(Array.from(dead.find((d) => d.eventId === "garbage-row")!.payload), [0x0a, 0xff, 0xff], "bytes kept as they were")

        // No crash loop: the retransmit loop keeps succeeding, nothing is dead-lettered twice, and
        // the emitter still delivers.
        yield* Effect.sleep(500)
        const health = yield* Emitter.health
        const loop = health.loops["retransmit"]!
        assert.strictEqual(loop.consecutiveFailures, 0)
        assert.isAtLeast(loop.lastSuccessAt!, Date.now() - 1_000)
        assert.notStrictEqual(health.status, "unhealthy", health.reasons.join("; "))
        // health and the gauges show the events table's size and its dead tuples
        assert.isAbove(health.table?.tableBytes ?? 0, 0)
        assert.isAtLeast(health.table?.deadTuples ?? -1, 0)
        assert.isAbove((yield* Metric.value(Metric.withAttributes(Metrics.tableBytes, { emitter: "durable-emitter" }))).value, 0)
        assert.strictEqual((yield* store.listDeadLetters({})).length, 2)
        const after = yield* Emitter.emit({ source: "app", type: "fresh", data: "after" })
        yield* Emitter.flush
        assert.isTrue(server.received.ids.has(after.id))
      }).pipe(Effect.provide(DurableEmitter.layerWith(options(prefix, server.url))))
      const deadAfter = yield* metricCount(Metrics.deadLettered, { code: "UNDECODABLE", source: "elsewhere", type: "poison" })
      assert.strictEqual(deadAfter - deadBefore, 2)
    }).pipe(Effect.provide(SqlLive)))

  for (const deadLetterExpired of [true, false]) {
    it.live(`an expired backlog is ${deadLetterExpired ? "dead-lettered as \"expired\"" : "deleted"}, counted per source and type; fresh events are not touched`, () =>
      Effect.gen(function*() {
        const prefix = yield* tables
        const server = yield* ingestServer
        // Distinct keys per run: the metric is process-wide.
        const source = `aged-${deadLetterExpired}`
        const perKey = [[source, "x", 5], [source, "y", 3], [`${source}-b`, "x", 2]] as const
        const before = yield* Effect.forEach(perKey, ([s, t]) => metricCount(Metrics.expired, { source: s, type: t }))
        const layer = DurableEmitter.layerWith({
          ...options(prefix, server.url),
          ttl: "3 seconds",
          expiryInterval: 200,
          expiryBatchSize: 4,
          deadLetterExpired
        })
        yield* Effect.gen(function*() {
          const store = yield* Store
          const now = Date.now()
          // Old rows nobody will retransmit soon (a long lease, as after many attempts).
          const old = perKey.flatMap(([s, t, n]) => Array.from({ length: n }, (_, i) => prepared(s, t, `${i}`)))
          yield* store.append(old, { now: now - 60_000, nextAttemptAt: now + 3_600_000 })
          const fresh = yield* Effect.forEach(Array.from({ length: 20 }, (_, i) => i), (i) =>
            Emitter.emit({ source, type: "fresh", data: `${i}` }), { concurrency: 5 })
          yield* Emitter.flush
          yield* waitUntil("expiry", 5_000, Effect.map(count(`${prefix}_events`), (n) => n === 0))

          for (const r of fresh) assert.isTrue(server.received.ids.has(r.id), "fresh events are delivered, not expired")
          for (const e of old) assert.isFalse(server.received.ids.has(e.eventId))
          const dead = yield* store.listDeadLetters({})
          if (deadLetterExpired) {
            assert.deepStrictEqual(dead.map((d) => d.eventId).sort(), old.map((e) => e.eventId).sort())
            for (const d of dead) {
              assert.strictEqual(d.code, "expired")
              assert.isAbove(d.reason.length, 0)
            }
          } else {
            assert.strictEqual(dead.length, 0)
          }
        }).pipe(Effect.provide(layer))
        const after = yield* Effect.forEach(perKey, ([s, t]) => metricCount(Metrics.expired, { source: s, type: t }))
        assert.deepStrictEqual(after.map((n, i) => n - before[i]!), perKey.map(([, , n]) => n))
      }).pipe(Effect.provide(SqlLive)))
  }

  it.live("a replayed dead letter comes back with the same row id and seq, and is delivered with the same CloudEvent id and seqnum", () =>
    Effect.gen(function*() {
      const prefix = yield* tables
      const server = yield* ingestServer
      yield* Effect.gen(function*() {
        const store = yield* Store
        server.faults.reject({ type: "needs.schema", code: "SCHEMA_MISSING", reason: "schema not registered yet" })
        const fine = yield* Effect.forEach([0, 1, 2, 3, 4], (i) => Emitter.emit({ source: "app", type: "fine", data: `${i}` }))
        const refused = yield* Effect.forEach([0, 1, 2], (i) => Emitter.emit({ source: "app", type: "needs.schema", data: `${i}` }))
        yield* Emitter.flush
        for (const r of fine) assert.isTrue(server.received.ids.has(r.id))
        const dead = yield* store.listDeadLetters({ type: "needs.schema" })
        assert.deepStrictEqual(dead.map((d) => d.eventId).sort(), refused.map((r) => r.id).sort())
        for (const d of dead) assert.strictEqual(d.code, "SCHEMA_MISSING")

        // The schema is registered; the server is down for a moment so the replayed rows can be inspected.
        server.faults.clearRejections()
        yield* Effect.promise(() => server.faults.down("unavailable"))
        assert.strictEqual(yield* store.replayDeadLetters({ type: "needs.schema" }, Date.now()), 3)
        assert.strictEqual((yield* store.listDeadLetters({})).length, 0)
        const rows = yield* query<{ id: bigint; event_id: string; seq: bigint }>(`SELECT id, event_id, seq FROM ${prefix}_events ORDER BY id`)
        assert.deepStrictEqual(
          rows.map((r) => [r.id, r.event_id, r.seq]),
          [...dead].sort((a, b) => Number(a.rowId - b.rowId)).map((d) => [d.rowId, d.eventId, d.seq])
        )
        yield* Effect.promise(() => server.faults.up())
        yield* waitUntil("replay delivered", 5_000, Effect.map(count(`${prefix}_events`), (n) => n === 0))
        for (const r of refused) {
          const delivered = server.received.events.filter((e) => e.id === r.id)
          assert.strictEqual(delivered.length, 1, r.id)
          assert.strictEqual(delivered[0]!.seqnum, r.seq.toString())
          assert.strictEqual(delivered[0]!.type, "needs.schema")
        }
      }).pipe(Effect.provide(DurableEmitter.layerWith(options(prefix, server.url))))
    }).pipe(Effect.provide(SqlLive)))

  it.live("expiry of a 250 000-row backlog never touches more than expiryBatchSize rows in one statement", () =>
    Effect.gen(function*() {
      const started = Date.now()
      const prefix = yield* tables
      const server = yield* ingestServer
      const rows = 250_000
      const batch = 5_000
      const storeLayer = PgStore.layer({ url, tablePrefix: prefix, maxConnections: 4 })
      yield* Effect.provide(Store.useSync(() => undefined), storeLayer) // the migrations

      // Seen from the database: a statement-level trigger logs how many rows each DELETE removed.
      const log = `${prefix}_delete_log`
      yield* Effect.addFinalizer(() =>
        Effect.andThen(query(`DROP TABLE IF EXISTS ${log}`), query(`DROP FUNCTION IF EXISTS ${log}_fn() CASCADE`)).pipe(
          Effect.provide(SqlLive),
          Effect.orDie,
          Effect.asVoid
        )
      )
      yield* query(`CREATE TABLE ${log} (n int8 NOT NULL)`)
      yield* query(`CREATE FUNCTION ${log}_fn() RETURNS trigger LANGUAGE plpgsql AS
        $$ BEGIN INSERT INTO ${log} SELECT count(*) FROM old_rows; RETURN NULL; END $$`)
      yield* query(`CREATE TRIGGER ${log}_trigger AFTER DELETE ON ${prefix}_events
        REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION ${log}_fn()`)
      yield* query(`INSERT INTO ${prefix}_events (source, type, seq, event_id, payload, created_at, next_attempt_at)
        SELECT 'src' || (g % 5), 't' || (g % 2), g, 'old-' || g, decode(repeat('ab', 100), 'hex'),
          now() - interval '2 days' - g * interval '1 millisecond', now() + interval '1 hour'
        FROM generate_series(1, ${rows}) g`)
      yield* query(`ANALYZE ${prefix}_events`)
      const inserted = Date.now()

      // From the Store's side: every expire call and what it answered.
      const calls: Array<{ limit: number; total: number }> = []
      const byKey = new Map<string, number>()
      const RecordingStore = Layer.effect(Store, Effect.gen(function*() {
        const store = yield* Store
        return Store.of({
          ...store,
          expire: (o) =>
            store.expire(o).pipe(Effect.tap((counts) =>
              Effect.sync(() => {
                calls.push({ limit: o.limit, total: counts.reduce((n, c) => n + c.count, 0) })
                for (const c of counts) byKey.set(`${c.source} ${c.type}`, (byKey.get(`${c.source} ${c.type}`) ?? 0) + c.count)
              })
            ))
        })
      })).pipe(Layer.provide(storeLayer))
      const resolved = yield* Config.resolve({ ...options(prefix, server.url), expiryBatchSize: batch, expiryInterval: "1 minute" })
      const emitter = services(resolved).pipe(
        Layer.provideMerge(RecordingStore),
        Layer.provide(GrpcTransport.layer({ url: server.url, timeout: resolved.requestTimeoutMs })),
        // One warning per batch of 5 000 is expected here; keep the test output readable.
        Layer.provide(Layer.succeed(References.MinimumLogLevel, "Error"))
      )
      yield* waitUntil("expiry of the backlog", 60_000, Effect.map(count(`${prefix}_events`), (n) => n === 0)).pipe(
        Effect.provide(emitter)
      )
      const expiredAt = Date.now()

      const nonEmpty = calls.filter((c) => c.total > 0)
      for (const c of calls) {
        assert.strictEqual(c.limit, batch)
        assert.isAtMost(c.total, batch)
      }
      assert.strictEqual(nonEmpty.reduce((n, c) => n + c.total, 0), rows)
      assert.isAtLeast(nonEmpty.length, rows / batch)
      const statements = (yield* query<{ n: bigint }>(`SELECT n FROM ${log}`)).map((r) => Number(r.n)).filter((n) => n > 0)
      assert.isAtMost(Math.max(...statements), batch, "rows deleted by one statement")
      assert.strictEqual(statements.reduce((a, b) => a + b, 0), rows)
      // Counted per source and type: 5 sources × 2 types, 25 000 rows each.
      assert.deepStrictEqual([...byKey.values()], Array.from({ length: 10 }, () => rows / 10))
      assert.strictEqual(byKey.size, 10)
      const dead = yield* query<{ code: string; n: bigint }>(`SELECT code, count(*) AS n FROM ${prefix}_dead_letters GROUP BY code`)
      assert.deepStrictEqual(dead.map((d) => [d.code, Number(d.n)]), [["expired", rows]])
      console.log(
        `expiry of ${rows} rows: ${statements.length} DELETE statements, largest ${Math.max(...statements)} rows ` +
          `(${calls.length} expire calls); setup ${inserted - started} ms, expiry ${expiredAt - inserted} ms`
      )
    }).pipe(Effect.provide(SqlLive)), 120_000)
})
