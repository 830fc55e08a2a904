/**
 * The events table that stays small without autovacuum (pgPartitions.ts, pgRotation.ts), on the
 * real PostgreSQL (autovacuum off on these machines) and on PGlite (no autovacuum at all): a
 * table of the migration-1 layout with rows migrates with nothing lost or renumbered, and many
 * rotations under concurrent appends, claims and deletes lose nothing, duplicate nothing and keep
 * the table's size bounded.
 */
import { PgClient } from "@effect/sql-pg"
import { assert, describe, it } from "@effect/vitest"
import { Effect, Layer, Redacted } from "effect"
import { SqlClient } from "effect/sql"
import { eventsTableBytes } from "../src/store/pgPartitions.ts"
import { movable, rotationTargets, type RotationSettings } from "../src/store/pgRotation.ts"
import { migrate, tables } from "../src/store/pgSchema.ts"
import * as PgliteStore from "../src/store/PgliteStore.ts"
import * as PgStore from "../src/store/PgStore.ts"
import { newEvent } from "./StoreContract.ts"
import { databaseUrl, scopedPrefix } from "./support/pg.ts"

const ClientLayer = PgClient.layer({ url: Redacted.make(databaseUrl), maxConnections: 12 })
const PgliteClient = Layer.fresh(PgliteStore.layerClient({ dataDir: PgliteStore.memory }))

const T0 = 1_700_000_000_000
const hour = 3_600_000

const rotations = (sql: SqlClient.SqlClient, prefix: string) =>
  sql.unsafe<{ rotations: string }>(`SELECT rotations::text FROM ${prefix}_rotation`).pipe(
    Effect.map((rows) => Number(rows[0]!.rotations))
  )

const tableBytes = (sql: SqlClient.SqlClient, prefix: string) =>
  Effect.flatMap(tables(prefix), (t) => sql.unsafe<{ bytes: string }>(`SELECT ${eventsTableBytes(t)}::text AS bytes`)).pipe(
    Effect.map((rows) => Number(rows[0]!.bytes))
  )

describe("rotation decisions", () => {
  const settings = { partitionBytes: 1000, maxMoveRows: 10 } as RotationSettings
  it("rotates only once the current partition is full, to the others in ring order", () => {
    assert.deepStrictEqual(rotationTargets({ current: 1, bytes: [5000, 999, 5000] }, 1000), [])
    assert.deepStrictEqual(rotationTargets({ current: 1, bytes: [0, 1000, 0] }, 1000), [2, 0])
    assert.deepStrictEqual(rotationTargets({ current: 2, bytes: [0, 0, 4000] }, 1000), [0, 1])
  })
  it("copies a partition's live rows only while they are few and small next to a partition", () => {
    assert.isTrue(movable({ rows: 10, bytes: 250 }, settings))
    assert.isFalse(movable({ rows: 11, bytes: 100 }, settings))
    assert.isFalse(movable({ rows: 1, bytes: 251 }, settings))
  })
})

describe("the migration to the partitioned events table", () => {
  it.live("keeps every row of a migration-1 table with its id, seq and payload, deliverable", () =>
    Effect.gen(function*() {
      const sql = yield* SqlClient.SqlClient
      const prefix = yield* scopedPrefix
      const t = yield* tables(prefix)
      yield* migrate(sql, t, 1)
      // Rows as the store of migration 1 wrote them: identity ids, two keys, some rows gone (acked)
      // so the ids have gaps, one claimed (attempts, a lease, an error), one dead letter.
      yield* sql.unsafe(
        `INSERT INTO ${prefix}_events (source, type, seq, event_id, payload, created_at, next_attempt_at)
         SELECT 's' || (g % 2), 't', g, 'ev-' || g, convert_to(repeat(g::text, 40), 'UTF8'),
           to_timestamp(1700000000 + g), to_timestamp(1700000000 + g)
         FROM generate_series(1, 5000) g`
      )
      yield* sql.unsafe(`INSERT INTO ${prefix}_sequences VALUES ('s0', 't', 5000), ('s1', 't', 5000)`)
      yield* sql.unsafe(`DELETE FROM ${prefix}_events WHERE id % 7 = 0`)
      yield* sql.unsafe(`UPDATE ${prefix}_events SET attempts = 3, last_error = 'timeout' WHERE id = 10`)
      yield* sql.unsafe(
        `INSERT INTO ${prefix}_dead_letters SELECT *, now(), 'INVALID', 'test' FROM ${prefix}_events WHERE id = 11`
      )
      yield* sql.unsafe(`DELETE FROM ${prefix}_events WHERE id = 11`)
      const before = yield* sql.unsafe<{ id: string; seq: string; event_id: string; payload: string }>(
        `SELECT id::text, seq::text, event_id, encode(payload, 'hex') AS payload, attempts, last_error,
           (extract(epoch FROM created_at) * 1000)::int8::text AS created_at,
           (extract(epoch FROM next_attempt_at) * 1000)::int8::text AS next_attempt_at
         FROM ${prefix}_events e ORDER BY e.id`
      )
      assert.strictEqual(before.length, 5000 - Math.floor(5000 / 7) - 1)

      const store = yield* PgStore.make({ tablePrefix: prefix })
      const after = yield* sql.unsafe<{ id: string }>(
        `SELECT id::text, seq::text, event_id, encode(payload, 'hex') AS payload, attempts, last_error,
           (extract(epoch FROM created_at) * 1000)::int8::text AS created_at,
           (extract(epoch FROM next_attempt_at) * 1000)::int8::text AS next_attempt_at
         FROM ${prefix}_events e ORDER BY e.id`
      )
      assert.deepStrictEqual(after, before)
      const partitioned = yield* sql.unsafe<{ relkind: string }>(
        `SELECT relkind FROM pg_class WHERE oid = '${prefix}_events'::regclass`
      )
      assert.strictEqual(partitioned[0]!.relkind, "p")

      // Deliverable: claimed with their ids and seqs, deleted by id; the dead letter replays.
      const claimed = yield* store.claim({ now: T0 + 100 * hour, limit: 10_000, leaseBaseMs: 1000, leaseMaxMs: 1000 })
      assert.deepStrictEqual(
        claimed.map((row) => [String(row.rowId), String(row.seq), row.eventId]),
        before.map((row) => [row.id, row.seq, row.event_id])
      )
      assert.deepStrictEqual(claimed.map((row) => Buffer.from(row.payload).toString("hex")), before.map((r) => r.payload))
      assert.strictEqual(yield* store.replayDeadLetters({}, T0), 1)
      const [replayed] = yield* store.claim({ now: T0, limit: 10, leaseBaseMs: 1000, leaseMaxMs: 1000 })
      assert.deepStrictEqual([replayed!.rowId, replayed!.seq, replayed!.eventId], [11n, 11n, "ev-11"])
      // New rows continue the id sequence and the per-key seqs.
      const [next] = yield* store.append([newEvent("s1", "t")], { now: T0, nextAttemptAt: T0 })
      assert.isTrue(next!.rowId > 5000n, `row id ${next!.rowId} continues after 5000`)
      assert.strictEqual(next!.seq, 5001n)
      assert.strictEqual(yield* store.delete([...claimed.map((row) => row.rowId), 11n, next!.rowId]), before.length + 2)
      assert.strictEqual((yield* store.stats).backlog, 0)
    }).pipe(Effect.scoped, Effect.provide(ClientLayer)), 60_000)
})

interface ChurnOptions {
  readonly producers: number
  readonly batch: number
  readonly minRotations: number
  readonly partitionBytes: number
}

/**
 * Appends, acks (deletes) and claims at once while two stores on the same tables rotate, until
 * `minRotations` rotations happened. Every 10th row is due at once, for the claimers; every 25th
 * is acked half a second later, after a rotation or two; every 1000th is never acked, so it is
 * moved by every rotation that truncates its partition.
 */
/** Between a producer's batches: four producers × 200 rows then offer at most ~20 000 rows/s. */
const pace = "40 millis"

const churn = (prefix: string, options: ChurnOptions) =>
  Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    const storeOptions = { tablePrefix: prefix, partitionBytes: options.partitionBytes, rotationInterval: "10 millis" as const }
    const store = yield* PgStore.make(storeOptions)
    yield* PgStore.make(storeOptions) // a second rotator, as another process would be
    const payload = new Uint8Array(200).fill(42)
    const kept = new Map<bigint, bigint>()
    const slow: Array<{ readonly rowId: bigint; readonly at: number }> = []
    let seen = 0
    const claimedOnce = new Set<bigint>()
    const seqs = new Map<string, Array<bigint>>()
    let deleted = 0
    let appended = 0
    let maxBytes = 0
    let done = false

    const producer = (p: number) =>
      Effect.gen(function*() {
        while (!done) {
          const events = Array.from({ length: options.batch }, () => newEvent(`src${p}`, "churn", payload))
          const rows = yield* store.append(events, { now: T0, nextAttemptAt: T0 + hour })
          const mine = seqs.get(`src${p}`) ?? []
          seqs.set(`src${p}`, mine)
          const acks: Array<bigint> = []
          const due: Array<bigint> = []
          rows.forEach((row, i) => {
            mine.push(row.seq)
            if (appended % 1000 === i) kept.set(row.rowId, row.seq)
            else if (i % 25 === 0) slow.push({ rowId: row.rowId, at: Date.now() })
            else if (i % 10 === 0) due.push(row.rowId)
            else acks.push(row.rowId)
          })
          appended += rows.length
          yield* store.reschedule(due, T0, "due", 0)
          const acked = yield* store.delete(acks)
          deleted += acked
          // Paced: a partition of `partitionBytes` fills in tens of milliseconds at most, as a
          // 32 MiB one does in seconds at full speed. Unpaced, a fast machine appended 45 000 rows/s
          // into 512 KiB partitions, faster than any rotation can take its lock, and the peak
          // measured the machine's speed instead of the rotation.
          yield* Effect.sleep(pace)
        }
      })
    const claimer = Effect.gen(function*() {
      while (!done) {
        const rows = yield* store.claim({ now: T0, limit: 100, leaseBaseMs: hour, leaseMaxMs: hour })
        for (const row of rows) {
          assert.isFalse(claimedOnce.has(row.rowId), `row ${row.rowId} claimed twice`)
          claimedOnce.add(row.rowId)
        }
        const acked = yield* store.delete(rows.map((row) => row.rowId))
        deleted += acked
        if (rows.length === 0) yield* Effect.sleep("5 millis")
      }
    })
    const slowAcker = Effect.gen(function*() {
      while (!done || slow.length > 0) {
        const ripe = slow.findIndex((entry) => entry.at > Date.now() - 500)
        const batch = slow.splice(0, done ? slow.length : ripe === -1 ? slow.length : ripe)
        const acked = yield* store.delete(batch.map((entry) => entry.rowId))
        deleted += acked
        yield* Effect.sleep("5 millis")
      }
    })
    const watcher = Effect.gen(function*() {
      while ((seen = yield* rotations(sql, prefix)) < options.minRotations) {
        const bytes = yield* tableBytes(sql, prefix)
        maxBytes = Math.max(maxBytes, bytes)
        if (process.env.ROTATION_DEBUG) console.log({ seen, bytes, appended, deleted })
        yield* Effect.sleep("20 millis")
      }
      done = true
    })
    yield* Effect.all([
      watcher,
      slowAcker,
      claimer,
      claimer,
      ...Array.from({ length: options.producers }, (_, p) => producer(p))
    ], { concurrency: "unbounded" })
    // The claimers may have stopped with due rows left: take them now.
    const late = yield* store.claim({ now: T0, limit: 1_000_000, leaseBaseMs: hour, leaseMaxMs: hour })
    const lateAcked = yield* store.delete(late.map((row) => row.rowId))
    deleted += lateAcked

    // Left: exactly the rows never acked, under their ids and seqs.
    const left = yield* store.claim({ now: T0 + 10 * hour, limit: 1_000_000, leaseBaseMs: hour, leaseMaxMs: hour })
    assert.deepStrictEqual(
      left.map((row) => [row.rowId, row.seq]).sort((a, b) => Number(a[0]! - b[0]!)),
      [...kept.entries()].sort((a, b) => Number(a[0] - b[0]))
    )
    assert.strictEqual(deleted + left.length, appended, "every row deleted once or still there")
    for (const [source, list] of seqs) {
      assert.deepStrictEqual(list.map(Number), list.map((_, i) => i + 1), `${source}: seqs 1..N in order`)
    }
    return { rotations: yield* rotations(sql, prefix), maxBytes, appended, kept: kept.size }
  })

describe("rotation on PostgreSQL (autovacuum off)", () => {
  it.live("many rotations under concurrent appends, claims and deletes: nothing lost or doubled, size bounded", () =>
    Effect.gen(function*() {
      const prefix = yield* scopedPrefix
      const partitionBytes = 512 * 1024
      const result = yield* churn(prefix, { producers: 4, batch: 200, minRotations: 30, partitionBytes })
      assert.isAtLeast(result.rotations, 30)
      // Three partitions of partitionBytes each, plus what the churn adds while a rotation waits
      // for its lock (100 ms at a time): a few MB here, where the same churn without rotation
      // leaves more than 60 MB.
      assert.isBelow(result.maxBytes, 32 * partitionBytes, `peak ${result.maxBytes} bytes`)
      assert.isAbove(result.appended, 30 * 1000)
    }).pipe(Effect.scoped, Effect.provide(ClientLayer)), 240_000)
})

describe("rotation on PGlite", () => {
  it.live("many rotations with appends, claims and deletes on one connection: nothing lost, size bounded", () =>
    Effect.gen(function*() {
      const partitionBytes = 256 * 1024
      const result = yield* churn("durable_emitter", { producers: 2, batch: 100, minRotations: 15, partitionBytes })
      assert.isAtLeast(result.rotations, 15)
      assert.isBelow(result.maxBytes, 8 * partitionBytes, `peak ${result.maxBytes} bytes`)
    }).pipe(Effect.scoped, Effect.provide(PgliteClient)), 240_000)
})

describe("rotation next to a long-open transaction (the outbox)", () => {
  it.live("a transaction holding rows in a partition keeps them through the rotations around it", () =>
    Effect.gen(function*() {
      const sql = yield* SqlClient.SqlClient
      const prefix = yield* scopedPrefix
      const store = yield* PgStore.make({ tablePrefix: prefix, partitionBytes: 1, rotationInterval: "20 millis" })
      const payload = new Uint8Array(100).fill(7)
      const inTransaction = Array.from({ length: 50 }, () => newEvent("outbox", "t", payload))
      const before = yield* rotations(sql, prefix)
      // The appends run in the open transaction: their partition cannot be truncated until it ends.
      const held = yield* sql.withTransaction(Effect.gen(function*() {
        const rows = yield* store.append(inTransaction, { now: T0, nextAttemptAt: T0 })
        // Meanwhile the others rotate around that partition (every partition is "full" at 1 byte):
        // twice round the ring, so its turn came up and was skipped.
        yield* Effect.gen(function*() {
          while ((yield* rotations(sql, prefix)) < before + 6) yield* Effect.sleep("20 millis")
        }).pipe(Effect.timeout("30 seconds"))
        return rows
      }))
      // After the commit the partition is rotated too: its rows are moved, not lost.
      const after = yield* rotations(sql, prefix)
      while ((yield* rotations(sql, prefix)) < after + 6) yield* Effect.sleep("20 millis")
      const claimed = yield* store.claim({ now: T0, limit: 1000, leaseBaseMs: 1000, leaseMaxMs: 1000 })
      assert.deepStrictEqual(
        claimed.map((row) => [row.rowId, row.seq, row.eventId]),
        held.map((row) => [row.rowId, row.seq, row.eventId])
      )
    }).pipe(Effect.scoped, Effect.provide(ClientLayer)), 60_000)
})
