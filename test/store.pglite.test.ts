/**
 * The Store contract against the embedded PGlite store (in memory, a fresh database per test),
 * plus what only it has: the wire-protocol bridge, the lock file on its data directory, reopening
 * a directory, and surviving a SIGKILL.
 *
 * Not run here, with reason: PgStore's "several OS processes on one database" tests. The embedded
 * store is exclusive to one process by design; instead, a second process must get StoreLocked.
 * PgStore's statement-timeout tests: PGlite is one session running one statement at a time, so
 * nothing can hold a lock that an append waits on.
 */
import { PGlite } from "@electric-sql/pglite"
import { assert, describe, it } from "@effect/vitest"
import { Context, Effect, Layer } from "effect"
import { SqlClient } from "effect/sql"
import { type ChildProcessWithoutNullStreams, spawn } from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import type { Duplex } from "node:stream"
import { fileURLToPath } from "node:url"
import { InvalidConfig, StoreLocked } from "../src/Errors.ts"
import { Store } from "../src/Store.ts"
import { makeBridge } from "../src/store/pgliteBridge.ts"
import * as PgliteStore from "../src/store/PgliteStore.ts"
import { newEvent, storeContract } from "./StoreContract.ts"
import { watchOutput } from "./support/childOutput.ts"

storeContract(it, PgliteStore.layer({ dataDir: PgliteStore.memory }))

// ---------------------------------------------------------------------------------------------
// Helpers

const tempDir = Effect.acquireRelease(
  Effect.sync(() => fs.mkdtempSync(path.join(os.tmpdir(), "de-pglite-"))),
  (dir) => Effect.sync(() => fs.rmSync(dir, { recursive: true, force: true }))
)

/** The Store on `dataDir` for the rest of the scope: a new instance (no layer memoization). */
const openStore = (dataDir: string) =>
  Layer.build(Layer.fresh(PgliteStore.layer({ dataDir }))).pipe(Effect.map((context) => Context.get(context, Store)))

const lockFile = (dir: string) => path.join(dir, PgliteStore.lockFileName)
const lockHolder = (dir: string) => fs.existsSync(lockFile(dir)) ? Number(fs.readFileSync(lockFile(dir), "utf8").split("\n")[0]) : undefined

const workerPath = fileURLToPath(new URL("./fixtures/pglite-worker.ts", import.meta.url))

interface Worker {
  readonly child: ChildProcessWithoutNullStreams
  readonly lines: Array<string>
  /** Waits until `predicate` holds for the lines so far. */
  readonly until: (predicate: (lines: ReadonlyArray<string>) => boolean) => Effect.Effect<void>
  readonly exit: Effect.Effect<{ readonly code: number | null; readonly signal: string | null; readonly stderr: string }>
}

/** Starts `node pglite-worker.ts ...args` with this Node (24, types stripped); killed with the scope. */
const startWorker = (args: ReadonlyArray<string>) =>
  Effect.acquireRelease(
    Effect.sync((): Worker => {
      const child = spawn(process.execPath, [workerPath, ...args], { stdio: ["pipe", "pipe", "pipe"] })
      const lines: Array<string> = []
      const output = watchOutput(child, { onLine: (line) => lines.push(line) })
      const exited = new Promise<{ code: number | null; signal: string | null }>((resolve) =>
        child.on("exit", (code, signal) => resolve({ code, signal }))
      )
      return {
        child,
        lines,
        until: (predicate) =>
          Effect.callback<void>((resume) => {
            const check = () => {
              if (predicate(lines)) {
                child.stdout.off("data", check)
                resume(Effect.void)
              }
            }
            child.stdout.on("data", check)
            child.on("exit", () => resume(Effect.die(new Error(`worker exited early: ${lines.join("\n")} ${output.stderr()}`))))
            check()
          }),
        exit: Effect.promise(() => exited).pipe(Effect.map((exit) => ({ ...exit, stderr: output.stderr() })))
      }
    }),
    (worker) =>
      Effect.sync(() => {
        if (worker.child.exitCode === null && worker.child.signalCode === null) worker.child.kill("SIGKILL")
      })
  )

/** The pid of a process that has exited. */
const deadPid = Effect.callback<number>((resume) => {
  const child = spawn(process.execPath, ["-e", ""])
  child.on("exit", () => resume(Effect.succeed(child.pid!)))
})

const T0 = 1_700_000_000_000
const everything = { now: Number.MAX_SAFE_INTEGER / 2, limit: 1_000_000, leaseBaseMs: 1, leaseMaxMs: 1 }

// ---------------------------------------------------------------------------------------------
// Options

describe("PgliteStore options", () => {
  it.live("rejects a bad table prefix or an empty dataDir before touching the disk", () =>
    Effect.gen(function*() {
      const dir = path.join(yield* tempDir, "never")
      const bad = yield* Effect.flip(Effect.scoped(Layer.build(PgliteStore.layer({ dataDir: dir, tablePrefix: "Bad" }))))
      assert.instanceOf(bad, InvalidConfig)
      assert.strictEqual((bad as InvalidConfig).option, "tablePrefix")
      const empty = yield* Effect.flip(Effect.scoped(Layer.build(PgliteStore.layer({ dataDir: "" }))))
      assert.instanceOf(empty, InvalidConfig)
      assert.strictEqual((empty as InvalidConfig).option, "dataDir")
      assert.isFalse(fs.existsSync(dir))
    }), 60_000)
})

// ---------------------------------------------------------------------------------------------
// The bridge: PostgreSQL wire protocol to PGlite

/** Reads backend messages off a bridge connection. */
const backend = (socket: Duplex) => {
  const messages: Array<{ readonly type: string; readonly body: Buffer }> = []
  let pending = Buffer.alloc(0)
  let ended = false
  const waiters = new Set<() => void>()
  const wake = () => waiters.forEach((w) => w())
  socket.on("data", (chunk: Buffer) => {
    pending = Buffer.concat([pending, chunk])
    while (pending.length >= 5 && pending.length >= 1 + pending.readInt32BE(1)) {
      const length = pending.readInt32BE(1)
      messages.push({ type: String.fromCharCode(pending[0]!), body: pending.subarray(5, 1 + length) })
      pending = pending.subarray(1 + length)
    }
    wake()
  })
  socket.on("end", () => {
    ended = true
    wake()
  })
  const waitFor = (done: () => boolean) =>
    Effect.callback<void>((resume) => {
      const check = () => {
        if (done()) {
          waiters.delete(check)
          resume(Effect.void)
        }
      }
      waiters.add(check)
      check()
      return Effect.sync(() => waiters.delete(check))
    }).pipe(Effect.timeout("10 seconds"), Effect.orDie)
  return {
    messages,
    /** Waits for the n-th ReadyForQuery in total. */
    readyForQuery: (n: number) => waitFor(() => messages.filter((m) => m.type === "Z").length >= n),
    ended: waitFor(() => ended),
    get isEnded() {
      return ended
    }
  }
}

const startupPacket = () => {
  const params = Buffer.from("user\0postgres\0database\0postgres\0\0")
  const head = Buffer.alloc(8)
  head.writeInt32BE(8 + params.length, 0)
  head.writeInt32BE(196608, 4)
  return Buffer.concat([head, params])
}
const message = (type: string, body: Buffer) => {
  const head = Buffer.alloc(5)
  head.write(type, 0, "latin1")
  head.writeInt32BE(4 + body.length, 1)
  return Buffer.concat([head, body])
}
const query = (sql: string) => message("Q", Buffer.from(`${sql}\0`))
const parse = (name: string, sql: string) => message("P", Buffer.from(`${name}\0${sql}\0\0\0`))
const sync = message("S", Buffer.alloc(0))
const terminate = message("X", Buffer.alloc(0))
const cancelRequest = () => {
  const packet = Buffer.alloc(16)
  packet.writeInt32BE(16, 0)
  packet.writeInt32BE(80877102, 4)
  return packet
}
/** Values of the DataRows received, as text. */
const dataRows = (messages: ReadonlyArray<{ readonly type: string; readonly body: Buffer }>) =>
  messages.filter((m) => m.type === "D").map((m) => m.body.subarray(6, 6 + m.body.readInt32BE(2)).toString())
const errorCodes = (messages: ReadonlyArray<{ readonly type: string; readonly body: Buffer }>) =>
  messages.filter((m) => m.type === "E").map((m) => /C([0-9A-Z]{5})\0/.exec(m.body.toString("latin1"))?.[1])
const transactionStatus = (messages: ReadonlyArray<{ readonly type: string; readonly body: Buffer }>) =>
  messages.filter((m) => m.type === "Z").map((m) => String.fromCharCode(m.body[0]!))

const pglite = Effect.acquireRelease(Effect.promise(() => PGlite.create()), (pg) => Effect.promise(() => pg.close()))

describe("PGlite bridge", () => {
  it.live("frames messages: a startup and queries split into 1-byte writes, several in one write", () =>
    Effect.gen(function*() {
      const bridge = makeBridge(yield* pglite)
      const socket = bridge.connect()
      const server = backend(socket)
      for (const byte of startupPacket()) socket.write(Buffer.from([byte]))
      yield* server.readyForQuery(1)
      assert.strictEqual(server.messages[0]!.type, "R")
      assert.strictEqual(server.messages[0]!.body.readInt32BE(0), 0, "AuthenticationOk")
      assert.isTrue(server.messages.some((m) => m.type === "K"), "BackendKeyData")

      socket.write(Buffer.concat([query("SELECT 1"), query("SELECT 2")]))
      const third = query("SELECT 3")
      socket.write(third.subarray(0, 3))
      socket.write(third.subarray(3, 9))
      socket.write(third.subarray(9))
      yield* server.readyForQuery(4)
      assert.deepStrictEqual(dataRows(server.messages), ["1", "2", "3"])

      socket.write(Buffer.concat([query("SELECT 4"), terminate, query("SELECT 5")]))
      yield* server.ended
      assert.deepStrictEqual(dataRows(server.messages), ["1", "2", "3", "4"])
    }).pipe(Effect.scoped), 60_000)

  it.live("one connection at a time; the next one starts on a clean session; cancel requests are closed", () =>
    Effect.gen(function*() {
      const bridge = makeBridge(yield* pglite)
      const first = bridge.connect()
      const one = backend(first)
      first.write(startupPacket())
      yield* one.readyForQuery(1)
      first.write(Buffer.concat([query("BEGIN"), parse("s1", "SELECT 1"), sync]))
      yield* one.readyForQuery(3)
      assert.deepStrictEqual(transactionStatus(one.messages), ["I", "T", "T"])

      const second = bridge.connect()
      const two = backend(second)
      second.write(startupPacket())
      yield* two.ended
      assert.deepStrictEqual(errorCodes(two.messages), ["53300"])

      const cancel = bridge.connect()
      const cancelled = backend(cancel)
      cancel.write(cancelRequest())
      yield* cancelled.ended
      assert.deepStrictEqual(cancelled.messages, [])

      // the first connection dies inside its transaction, holding a prepared statement
      first.destroy()
      const third = bridge.connect()
      const three = backend(third)
      third.write(startupPacket())
      yield* three.readyForQuery(1)
      third.write(Buffer.concat([parse("s1", "SELECT 1"), sync, query("SELECT 7")]))
      yield* three.readyForQuery(3)
      assert.deepStrictEqual(errorCodes(three.messages), [], "s1 was discarded with the old session")
      assert.deepStrictEqual(transactionStatus(three.messages), ["I", "I", "I"])
      assert.deepStrictEqual(dataRows(three.messages), ["7"])
    }).pipe(Effect.scoped), 60_000)
})

// ---------------------------------------------------------------------------------------------
// The data directory: lock, reopening, crashes

describe("PgliteStore data directory", () => {
  it.live("creates the directory, holds the lock while open, and keeps the data across close and reopen", () =>
    Effect.gen(function*() {
      const dir = path.join(yield* tempDir, "nested", "data")
      const batches = [[newEvent("a", "x"), newEvent("b", "y")], [newEvent("a", "x")]]
      const first = yield* Effect.scoped(Effect.gen(function*() {
        const store = yield* openStore(dir)
        assert.strictEqual(lockHolder(dir), process.pid)
        const answers = []
        for (const batch of batches) answers.push(...(yield* store.append(batch, { now: T0, nextAttemptAt: T0 })))
        return answers
      }))
      assert.isFalse(fs.existsSync(lockFile(dir)), "the lock is removed on close")
      assert.isTrue(fs.existsSync(path.join(dir, PgliteStore.pgdataDirName, "PG_VERSION")))

      yield* Effect.scoped(Effect.gen(function*() {
        const store = yield* openStore(dir)
        const rows = yield* store.claim(everything)
        assert.deepStrictEqual(
          rows.map((r) => [r.rowId, r.eventId, r.seq]),
          first.map((r) => [r.rowId, r.eventId, r.seq])
        )
        const [next] = yield* store.append([newEvent("a", "x")], { now: T0, nextAttemptAt: T0 })
        assert.strictEqual(next!.seq, 3n, "the sequence carries on")
      }))

      const withSql = <A>(f: (sql: SqlClient.SqlClient) => Effect.Effect<A, unknown>) =>
        Effect.scoped(SqlClient.SqlClient.use(f).pipe(Effect.provide(Layer.fresh(PgliteStore.layerClient({ dataDir: dir })))))
      const versions = yield* withSql((sql) => sql<{ version: number }>`SELECT version FROM durable_emitter_migrations`)
      assert.deepStrictEqual(versions.map((v) => v.version), [1, 2, 3], "the migrations ran once")
      // what a commit's survival of a crash rests on, even against a config file saying otherwise
      yield* withSql((sql) => sql.unsafe("ALTER SYSTEM SET synchronous_commit = off"))
      const settings = yield* withSql((sql) =>
        sql<{ name: string; setting: string }>`
          SELECT name, setting FROM pg_settings WHERE name IN ('synchronous_commit', 'fsync') ORDER BY name`
      )
      assert.deepStrictEqual(settings.map((s) => [s.name, s.setting]), [["fsync", "off"], ["synchronous_commit", "on"]])
    }).pipe(Effect.scoped), 60_000)

  it.live("a second layer in the same process gets StoreLocked; the first keeps working", () =>
    Effect.gen(function*() {
      const dir = yield* tempDir
      const store = yield* openStore(dir)
      const error = yield* Effect.flip(Effect.scoped(openStore(dir)))
      assert.instanceOf(error, StoreLocked)
      const locked = error as StoreLocked
      assert.strictEqual(locked.holderPid, process.pid)
      assert.strictEqual(locked.dataDir, dir)
      assert.include(locked.message, dir)
      assert.include(locked.message, `this process (pid ${process.pid})`)
      assert.strictEqual(lockHolder(dir), process.pid, "the failed open left the lock alone")
      const appended = yield* store.append([newEvent("a", "x")], { now: T0, nextAttemptAt: T0 })
      assert.strictEqual(appended.length, 1)
    }).pipe(Effect.scoped), 60_000)

  it.live("a second process gets StoreLocked naming the directory and this pid; it opens once we close", () =>
    Effect.gen(function*() {
      const dir = yield* tempDir
      yield* Effect.scoped(Effect.gen(function*() {
        yield* openStore(dir)
        const worker = yield* startWorker(["open", dir])
        const exit = yield* worker.exit
        assert.strictEqual(exit.code, 2, exit.stderr)
        const { error } = JSON.parse(worker.lines.at(-1)!) as { error: { _tag: string; message: string; holderPid: number } }
        assert.strictEqual(error._tag, "StoreLocked")
        assert.strictEqual(error.holderPid, process.pid)
        assert.include(error.message, dir)
        assert.include(error.message, `process ${process.pid}`)
      }))
      const worker = yield* startWorker(["open", dir])
      const exit = yield* worker.exit
      assert.strictEqual(exit.code, 0, exit.stderr)
      assert.deepStrictEqual(JSON.parse(worker.lines.at(-1)!), { ok: true })
      assert.isFalse(fs.existsSync(lockFile(dir)), "the other process removed its lock on close")
    }).pipe(Effect.scoped), 60_000)

  it.live("a stale lock (its pid is dead, or it holds no pid) is taken over", () =>
    Effect.gen(function*() {
      const dir = yield* tempDir
      for (const content of [`${yield* deadPid}\n`, "garbage"]) {
        fs.writeFileSync(lockFile(dir), content)
        yield* Effect.scoped(Effect.gen(function*() {
          const store = yield* openStore(dir)
          assert.strictEqual(lockHolder(dir), process.pid)
          yield* store.append([newEvent("a", "x")], { now: T0, nextAttemptAt: T0 })
        }))
        assert.isFalse(fs.existsSync(lockFile(dir)))
        assert.deepStrictEqual(fs.readdirSync(dir), [PgliteStore.pgdataDirName], "no scratch files left behind")
      }
    }).pipe(Effect.scoped), 60_000)

  it.live.runIf(process.platform === "linux")("a lock whose pid now belongs to another, later process is stale; its own process's is held", () =>
    Effect.gen(function*() {
      const dir = yield* tempDir
      // The parent process runs, but did not write this lock: a pid reused after a crash and reboot.
      fs.writeFileSync(lockFile(dir), `${process.ppid}\nanother-boot/123\n`)
      yield* Effect.scoped(Effect.gen(function*() {
        yield* openStore(dir)
        assert.strictEqual(lockHolder(dir), process.pid)
        assert.match(fs.readFileSync(lockFile(dir), "utf8"), /^\d+\n\S+\/\d+\n$/, "pid, then boot and start time")
      }))
      // The same pid with its real identity: that process holds it.
      fs.writeFileSync(lockFile(dir), `${process.ppid}\n${PgliteStore.processIdentity(process.ppid)}\n`)
      const error = yield* Effect.flip(Effect.scoped(openStore(dir)))
      assert.strictEqual((error as StoreLocked).holderPid, process.ppid)
    }).pipe(Effect.scoped), 60_000)

  it.live("after a SIGKILL mid-append, every append that returned is there, and no batch is half there", () =>
    Effect.gen(function*() {
      const dir = yield* tempDir
      const worker = yield* startWorker(["append", dir])
      yield* worker.until((lines) => lines.length >= 21) // "ready" and 20 committed batches
      worker.child.kill("SIGKILL")
      const exit = yield* worker.exit
      assert.strictEqual(exit.signal, "SIGKILL")
      assert.strictEqual(lockHolder(dir), worker.child.pid, "a crash leaves its lock behind")

      const told = worker.lines.slice(1).flatMap((line) => JSON.parse(line) as Array<[string, string, string]>)
      assert.isAtLeast(told.length, 20 * 50)

      const store = yield* openStore(dir)
      assert.strictEqual(lockHolder(dir), process.pid, "the dead process's lock was taken over")
      const rows = yield* store.claim(everything)
      const byId = new Map(rows.map((row) => [row.eventId, row]))
      for (const [eventId, rowId, seq] of told) {
        const row = byId.get(eventId)
        assert.isDefined(row, `committed ${eventId} is missing`)
        assert.strictEqual(String(row!.rowId), rowId)
        assert.strictEqual(String(row!.seq), seq)
      }
      assert.strictEqual(rows.length % 50, 0, `${rows.length} rows: a batch was partly committed`)
      for (const key of ["k0", "k1"]) {
        const seqs = rows.filter((r) => r.source === key).map((r) => Number(r.seq)).sort((a, b) => a - b)
        assert.deepStrictEqual(seqs, seqs.map((_, i) => i + 1), `${key}: seqs are 1..N`)
      }
      // the payloads are intact
      for (const row of rows) {
        const i = Number(row.eventId.slice(1))
        assert.isTrue(row.payload.length === 256 && row.payload.every((b) => b === i % 256), row.eventId)
      }
    }).pipe(Effect.scoped), 120_000)
})
