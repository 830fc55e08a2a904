/**
 * The Store contract against a real PostgreSQL (DATABASE_URL, default the local `test` database),
 * plus what only a real database can show: several OS processes appending and migrating at once,
 * statement bounds, and stats on a large table. Every test works on its own tables (a unique
 * prefix) and drops them afterwards.
 */
import { assert, describe, it, layer } from "@effect/vitest"
import { PgClient } from "@effect/sql-pg"
import { Effect, Layer, Redacted } from "effect"
import { SqlClient } from "effect/sql"
import { type ChildProcessWithoutNullStreams, spawn } from "node:child_process"
import { type AddressInfo, createServer, type Server, type Socket } from "node:net"
import { fileURLToPath } from "node:url"
import { InvalidConfig, StoreError } from "../src/Errors.ts"
import { Store } from "../src/Store.ts"
import * as PgStore from "../src/store/PgStore.ts"
import { newEvent, storeContract } from "./StoreContract.ts"
import { watchOutput } from "./support/childOutput.ts"

const url = process.env.DATABASE_URL ?? "postgres://postgres@127.0.0.1:5432/test"
const ClientLayer = PgClient.layer({ url: Redacted.make(url), maxConnections: 20 })

const runId = `det_${process.pid}_${Date.now().toString(36)}`
let prefixes = 0
const freshPrefix = () => `${runId}_${prefixes++}`

const dropTables = (prefix: string) =>
  SqlClient.SqlClient.use((sql) =>
    sql.unsafe(
      `DROP TABLE IF EXISTS ${prefix}_events, ${prefix}_sequences, ${prefix}_dead_letters, ${prefix}_pending, ${prefix}_migrations, ${prefix}_rotation`
    )
  ).pipe(Effect.orDie)

/** A Store on fresh tables, dropped when the scope closes (which must be before the client's). */
const scopedStore = Effect.gen(function*() {
  const prefix = freshPrefix()
  yield* Effect.addFinalizer(() => dropTables(prefix))
  const store = yield* PgStore.make({ tablePrefix: prefix })
  return { store, prefix }
})

const FreshStore = Layer.effect(Store, Effect.map(scopedStore, ({ store }) => store))

// The live clock: the contract passes its times explicitly, and the pool's and the Store's own
// timers (idle connections, query bounds) have no business on a TestClock that nobody advances.
layer(ClientLayer, { timeout: "30 seconds", excludeTestServices: true })("PgStore", (it) => {
  storeContract(it, FreshStore)

  it.effect("rejects a table prefix that is not a plain SQL identifier, or too long", () =>
    Effect.gen(function*() {
      for (const tablePrefix of ["Bad", "x; DROP TABLE y", "1abc", "", "a".repeat(42)]) {
        const error = yield* Effect.flip(PgStore.make({ tablePrefix }))
        assert.instanceOf(error, InvalidConfig, tablePrefix)
        assert.strictEqual((error as InvalidConfig).option, "tablePrefix")
      }
      const ok = freshPrefix()
      yield* Effect.addFinalizer(() => dropTables(ok))
      yield* PgStore.make({ tablePrefix: ok })
      const invalid = yield* Effect.flip(
        Effect.gen(function*() {
          yield* Store
        }).pipe(Effect.provide(PgStore.layer({ url: Redacted.make(url), maxConnections: 0 })))
      )
      assert.instanceOf(invalid, InvalidConfig)
    }))

  it.effect("migrations are idempotent, also when several layers start at once", () =>
    Effect.gen(function*() {
      const sql = yield* SqlClient.SqlClient
      const prefix = freshPrefix()
      yield* Effect.addFinalizer(() => dropTables(prefix))
      yield* Effect.all(Array.from({ length: 6 }, () => PgStore.make({ tablePrefix: prefix })), {
        concurrency: "unbounded"
      })
      yield* PgStore.make({ tablePrefix: prefix })
      const versions = yield* sql.unsafe<{ version: number }>(`SELECT version FROM ${prefix}_migrations`)
      assert.deepStrictEqual(versions.map((v) => v.version), [1, 2, 3])
    }))
})

describe("PgStore on a large table", () => {
  it.live("stats on a large table are estimates that stay close, and exact again once it is small", () =>
    Effect.gen(function*() {
      const sql = yield* SqlClient.SqlClient
      const { prefix, store } = yield* scopedStore
      yield* sql.unsafe(
        `INSERT INTO ${prefix}_events (source, type, seq, event_id, payload, created_at, next_attempt_at)
         SELECT 's', 't', g, g::text, convert_to(repeat('x', 100), 'UTF8'),
           to_timestamp(1700000000 + g), to_timestamp(1700000000 + g)
         FROM generate_series(1, 150000) g`
      )
      const close = (actual: number, expected: number) =>
        assert.isTrue(Math.abs(actual - expected) <= expected * 0.2, `${actual} is not within 20% of ${expected}`)
      // never analyzed: the sample hits its limit and the density estimate takes over
      const fresh = yield* store.stats
      assert.isFalse(fresh.exact)
      close(fresh.backlog, 150_000)
      close(fresh.payloadBytes, 15_000_000)
      assert.deepStrictEqual(fresh.oldestCreatedAt._tag, "Some")
      yield* sql.unsafe(`ANALYZE ${prefix}_events`)
      const analyzed = yield* store.stats
      assert.isFalse(analyzed.exact)
      close(analyzed.backlog, 150_000)
      close(analyzed.payloadBytes, 15_000_000)
      yield* sql.unsafe(`DELETE FROM ${prefix}_events WHERE seq > 50000`)
      yield* sql.unsafe(`VACUUM ANALYZE ${prefix}_events`)
      const small = yield* store.stats
      assert.isTrue(small.exact)
      assert.strictEqual(small.backlog, 50_000)
      assert.strictEqual(small.payloadBytes, 5_000_000)
    }).pipe(Effect.scoped, Effect.provide(ClientLayer)), 60_000)
})

describe("PgStore storage figures", () => {
  it.live("tableBytes is the whole table (every partition's heap, indexes, TOAST); deletes show as dead tuples until a vacuum", () =>
    Effect.gen(function*() {
      const sql = yield* SqlClient.SqlClient
      const { prefix, store } = yield* scopedStore
      const events = Array.from({ length: 1000 }, () => newEvent("s", "t", new Uint8Array(200)))
      const rows = yield* store.append(events, { now: 0, nextAttemptAt: 0 })
      const [size] = yield* sql.unsafe<{ total: number }>(
        `SELECT sum(pg_total_relation_size(relid))::float8 AS total FROM pg_partition_tree('${prefix}_events')`
      )
      const full = yield* store.stats
      assert.strictEqual(full.tableBytes, size!.total)
      assert.isAbove(full.tableBytes, full.payloadBytes)
      yield* store.delete(rows.slice(0, 600).map((row) => row.rowId))
      // PostgreSQL's statistics reach the shared counters a moment after the transaction
      let dead = 0
      for (let i = 0; i < 150 && dead < 600; i++) {
        dead = (yield* store.stats).deadTuples
        if (dead < 600) yield* Effect.sleep(100)
      }
      assert.strictEqual(dead, 600)
      yield* sql.unsafe(`VACUUM ${prefix}_events`)
      let after = dead
      for (let i = 0; i < 150 && after > 0; i++) {
        after = (yield* store.stats).deadTuples
        if (after > 0) yield* Effect.sleep(100)
      }
      assert.strictEqual(after, 0)
    }).pipe(Effect.scoped, Effect.provide(ClientLayer)), 60_000)
})

// ---------------------------------------------------------------------------------------------
// Several OS processes on one database

const workerPath = fileURLToPath(new URL("./fixtures/append-worker.ts", import.meta.url))

interface Worker {
  readonly child: ChildProcessWithoutNullStreams
  readonly lines: Array<string>
  readonly line: (expected: string) => Effect.Effect<void>
  readonly exit: Effect.Effect<{ readonly code: number | null; readonly stderr: string }>
}

/** Starts `node append-worker.ts ...args` with this Node (24, types stripped); killed with the scope. */
const startWorker = (args: ReadonlyArray<string>) =>
  Effect.acquireRelease(
    Effect.sync((): Worker => {
      const child = spawn(process.execPath, [workerPath, ...args], {
        env: { ...process.env, DATABASE_URL: url },
        stdio: ["pipe", "pipe", "pipe"]
      })
      const lines: Array<string> = []
      const output = watchOutput(child, { onLine: (line) => lines.push(line) })
      const exited = new Promise<number | null>((resolve) => child.on("exit", (code) => resolve(code)))
      return {
        child,
        lines,
        line: (expected) =>
          Effect.callback<void>((resume) => {
            const check = () => {
              if (lines.includes(expected)) {
                child.stdout.off("data", check)
                resume(Effect.void)
              }
            }
            child.stdout.on("data", check)
            child.on("exit", () => resume(Effect.die(new Error(`worker exited before "${expected}": ${output.stderr()}`))))
            check()
          }),
        exit: Effect.promise(() => exited).pipe(Effect.map((code) => ({ code, stderr: output.stderr() })))
      }
    }),
    (worker) =>
      Effect.sync(() => {
        if (worker.child.exitCode === null && worker.child.signalCode === null) worker.child.kill()
      })
  )

const go = (workers: ReadonlyArray<Worker>) => Effect.sync(() => workers.forEach((w) => w.child.stdin.write("go\n")))

describe("PgStore across processes", () => {
  it.live("two processes appending at once: every key's seqs are 1..N, no duplicate, no gap", () =>
    Effect.gen(function*() {
      const sql = yield* SqlClient.SqlClient
      const prefix = freshPrefix()
      yield* Effect.addFinalizer(() => dropTables(prefix))
      const batches = 150
      const batchSize = 40
      const workers = yield* Effect.all(
        ["A", "B"].map((name) => startWorker(["append", prefix, name, String(batches), String(batchSize)]))
      )
      yield* Effect.forEach(workers, (w) => w.line("ready"), { concurrency: "unbounded" })
      yield* go(workers)
      const exits = yield* Effect.forEach(workers, (w) => w.exit, { concurrency: "unbounded" })
      for (const exit of exits) assert.strictEqual(exit.code, 0, exit.stderr)

      const rows = yield* sql.unsafe<{ id: bigint; source: string; seq: bigint; event_id: string }>(
        `SELECT id, source, seq, event_id FROM ${prefix}_events ORDER BY source, seq`
      )
      assert.strictEqual(rows.length, 2 * batches * batchSize)
      const byKey = new Map<string, Array<(typeof rows)[number]>>()
      for (const row of rows) byKey.set(row.source, [...(byKey.get(row.source) ?? []), row])
      assert.strictEqual(byKey.size, 4)
      let interleavedKeys = 0
      for (const [key, keyRows] of byKey) {
        assert.deepStrictEqual(
          keyRows.map((row) => Number(row.seq)),
          Array.from({ length: keyRows.length }, (_, i) => i + 1),
          key
        )
        let switches = 0
        for (let i = 1; i < keyRows.length; i++) {
          if (keyRows[i]!.event_id[0] !== keyRows[i - 1]!.event_id[0]) switches++
        }
        if (switches >= 4) interleavedKeys++
      }
      // the processes really did write at the same time (otherwise this test proves nothing)
      assert.isAtLeast(interleavedKeys, 1)

      // what each process was told is what was committed
      const committed = new Map(rows.map((row) => [row.event_id, row]))
      for (const worker of workers) {
        const answers = JSON.parse(worker.lines.at(-1)!) as Array<[string, string, string]>
        assert.strictEqual(answers.length, batches * batchSize)
        for (const [eventId, rowId, seq] of answers) {
          const row = committed.get(eventId)
          assert.isDefined(row, eventId)
          assert.strictEqual(String(row!.id), rowId)
          assert.strictEqual(String(row!.seq), seq)
        }
      }
    }).pipe(Effect.scoped, Effect.provide(ClientLayer)), 60_000)

  it.live("four processes migrating at once all succeed", () =>
    Effect.gen(function*() {
      const sql = yield* SqlClient.SqlClient
      const prefix = freshPrefix()
      yield* Effect.addFinalizer(() => dropTables(prefix))
      const workers = yield* Effect.all(Array.from({ length: 4 }, () => startWorker(["migrate", prefix])))
      yield* Effect.forEach(workers, (w) => w.line("ready"), { concurrency: "unbounded" })
      yield* go(workers)
      const exits = yield* Effect.forEach(workers, (w) => w.exit, { concurrency: "unbounded" })
      for (const exit of exits) assert.strictEqual(exit.code, 0, exit.stderr)
      for (const worker of workers) assert.include(worker.lines, "done")
      const tables = yield* sql.unsafe<{ tablename: string }>(
        `SELECT tablename FROM pg_tables WHERE tablename LIKE '${prefix}\\_%' ORDER BY tablename`
      )
      assert.deepStrictEqual(tables.map((t) => t.tablename.slice(prefix.length + 1)), [
        "dead_letters",
        "events",
        "events_0",
        "events_1",
        "events_2",
        "migrations",
        "pending",
        "rotation",
        "sequences"
      ])
      const versions = yield* sql.unsafe<{ version: number }>(`SELECT version FROM ${prefix}_migrations`)
      assert.deepStrictEqual(versions.map((v) => v.version), [1, 2, 3])
    }).pipe(Effect.scoped, Effect.provide(ClientLayer)), 60_000)
})

// ---------------------------------------------------------------------------------------------
// Bounds: no call waits forever

describe("PgStore bounds", () => {
  /** Holds an exclusive lock on the sequences table while `blocked` runs, so an append must wait. */
  const whileSequencesLocked = <A, E, R>(prefix: string, blocked: Effect.Effect<A, E, R>) =>
    SqlClient.SqlClient.use((sql) =>
      sql.withTransaction(
        Effect.andThen(sql.unsafe(`LOCK TABLE ${prefix}_sequences IN ACCESS EXCLUSIVE MODE`), blocked)
      )
    )

  const appendOne = Store.use((store) => store.append([newEvent("a", "x")], { now: 0, nextAttemptAt: 0 }))

  it.live("the server's statement_timeout fails a blocked append with a retryable StoreError", () =>
    Effect.gen(function*() {
      const { prefix } = yield* scopedStore
      const storeLayer = PgStore.layer({ url: Redacted.make(url), tablePrefix: prefix, queryTimeout: "300 millis" })
      const error = yield* whileSequencesLocked(prefix, Effect.flip(Effect.provide(appendOne, storeLayer)))
      assert.instanceOf(error, StoreError)
      assert.strictEqual(error.operation, "append")
      assert.isTrue(error.retryable)
      assert.include(error.reason, "StatementTimeoutError")
    }).pipe(Effect.scoped, Effect.provide(ClientLayer)), 20_000)

  it.live("the client-side bound fails a blocked append when the server has no timeout", () =>
    Effect.gen(function*() {
      const { prefix } = yield* scopedStore
      // a pool of its own: ClientLayer again would be the same (memoized) client, whose queries
      // inside the locking transaction run on that transaction's connection
      const storeLayer = PgStore.layerFromClient({ tablePrefix: prefix, queryTimeout: "300 millis" }).pipe(
        Layer.provide(Layer.fresh(ClientLayer))
      )
      const started = Date.now()
      const error = yield* whileSequencesLocked(prefix, Effect.flip(Effect.provide(appendOne, storeLayer)))
      assert.instanceOf(error, StoreError)
      assert.isTrue(error.retryable)
      assert.include(error.reason, "no answer within")
      assert.isBelow(Date.now() - started, 5_000)
    }).pipe(Effect.scoped, Effect.provide(ClientLayer)), 20_000)

  it.live("a server that accepts but never answers fails the layer within the connect timeout", () =>
    Effect.gen(function*() {
      const sockets: Array<Socket> = []
      const server = yield* Effect.acquireRelease(
        Effect.callback<Server>((resume) => {
          const server = createServer((socket) => void sockets.push(socket))
          server.listen(0, "127.0.0.1", () => resume(Effect.succeed(server)))
        }),
        (server) => Effect.sync(() => {
          sockets.forEach((socket) => socket.destroy())
          server.close()
        })
      )
      const port = (server.address() as AddressInfo).port
      const started = Date.now()
      const error = yield* Effect.flip(
        Effect.provide(
          appendOne,
          PgStore.layer({ url: Redacted.make(`postgres://postgres@127.0.0.1:${port}/test`), connectTimeout: "500 millis" })
        )
      )
      const elapsed = Date.now() - started
      assert.instanceOf(error, StoreError)
      assert.isTrue((error as StoreError).retryable)
      assert.isAtLeast(sockets.length, 1, "never reached the silent server")
      assert.isAtLeast(elapsed, 450)
      assert.isBelow(elapsed, 5_000)
    }).pipe(Effect.scoped), 20_000)
})
