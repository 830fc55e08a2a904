/**
 * The ingest service misbehaving under a running emitter: the reference ingest server in a
 * process of its own (spawnIngestServer) SIGKILLed and restarted on the same port, stopped
 * (SIGSTOP, then SIGCONT), answering slowly, and pushing back (RESOURCE_EXHAUSTED with
 * grpc-retry-pushback-ms). Every server writes what it received to a JSON-lines file, read at the
 * end: no receipt lost, seqnums gap-free, duplicates only from requests in flight at the fault,
 * and delivery resumes by itself.
 */
import { assert, describe, it } from "@effect/vitest"
import { PgClient } from "@effect/sql-pg"
import { Context, Effect, Exit, Layer, Redacted, Scope } from "effect"
import { SqlClient } from "effect/sql"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { DurableEmitter } from "../src/DurableEmitter.ts"
import { Emitter } from "../src/Emitter.ts"
import type { ReceivedEvent } from "../src/testing/IngestServer.ts"
import { type IngestServerProcess, spawnIngestServer } from "../src/testing/IngestServerProcess.ts"
import { assertDelivered, failureSummary, startEmitting, waitUntil } from "./support/faultRun.ts"
import { databaseUrl, scopedPrefix } from "./support/pg.ts"
import { fastRecovery } from "./support/recovery.ts"

const SqlLive = PgClient.layer({ url: Redacted.make(databaseUrl), maxConnections: 2 })

const rowsLeft = (prefix: string) =>
  SqlClient.SqlClient.use((sql) => sql.unsafe<{ n: bigint }>(`SELECT count(*) AS n FROM ${prefix}_events`)).pipe(
    Effect.map((rows) => Number(rows[0]!.n)),
    Effect.orDie
  )

const faultMs = 1_500

/** The events a server wrote to its JSON-lines file (read after it closed, or was killed). */
const readJsonl = (file: string): Array<ReceivedEvent> => {
  if (!fs.existsSync(file)) return []
  return fs.readFileSync(file, "utf8").split("\n").filter((l) => l !== "").map((line) => {
    const e = JSON.parse(line) as { id: string; source: string; type: string; seqnum: string; text_data?: string; data_base64?: string; receivedAt: string }
    return {
      id: e.id, source: e.source, type: e.type, specVersion: "1.0", seqnum: e.seqnum, attributes: {},
      data: e.text_data ?? (e.data_base64 === undefined ? undefined : Buffer.from(e.data_base64, "base64")),
      payload: new Uint8Array(), receivedAt: Date.parse(e.receivedAt)
    }
  })
}

interface Servers {
  current: IngestServerProcess
  readonly files: Array<string>
  readonly spawn: (port?: number) => Promise<IngestServerProcess>
}

/**
 * `backlogMs`: how long after the fault ended the server may still be reading requests sent
 * during it (a stopped process reads what the kernel queued when it continues).
 */
const scenario = (
  label: string,
  fault: (servers: Servers) => Effect.Effect<void>,
  restore: (servers: Servers) => Effect.Effect<void>,
  backlogMs = 0
) =>
  Effect.gen(function*() {
    const started = Date.now()
    const prefix = yield* scopedPrefix
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "faults-ingest-"))
    const files: Array<string> = []
    const spawned: Array<IngestServerProcess> = []
    const spawn = async (port?: number) => {
      const jsonl = path.join(dir, `server-${files.length}.jsonl`)
      files.push(jsonl)
      const server = await spawnIngestServer({ record: "ids", jsonl, ...(port === undefined ? {} : { port }) })
      spawned.push(server)
      return server
    }
    yield* Effect.addFinalizer(() =>
      Effect.promise(async () => {
        await Promise.all(spawned.map((s) => s.close()))
        fs.rmSync(dir, { recursive: true, force: true })
      })
    )
    const servers: Servers = { current: yield* Effect.promise(() => spawn()), files, spawn }
    const scope = yield* Scope.make()
    const context = yield* Layer.buildWithScope(
      DurableEmitter.layerWith({ ...fastRecovery(prefix, servers.current.url), databaseUrl: Redacted.make(databaseUrl), name: `${prefix}_ingest` }),
      scope
    )
    const emitting = yield* startEmitting(Context.get(context, Emitter), 4, [["ingest", "a"], ["ingest", "b"]])
    yield* Effect.sleep(300)
    const faultAt = Date.now()
    yield* fault(servers)
    yield* Effect.sleep(Math.max(0, faultAt + faultMs - Date.now()))
    const restoreAt = Date.now()
    yield* restore(servers)
    yield* Effect.sleep(300)
    yield* emitting.stop
    const { receipts, failures } = emitting
    // Delivery resumes by itself: the table empties (every row acknowledged and deleted).
    const drainedAt = yield* waitUntil(`${label}: backlog drained`, 15_000, Effect.map(rowsLeft(prefix), (n) => n === 0))
    yield* Scope.close(scope, Exit.void)
    yield* Effect.promise(() => Promise.all(spawned.map((s) => s.close())))

    const events = files.flatMap(readJsonl)
    const { duplicates } = assertDelivered(receipts, failures, events)
    // An ingest fault never fails an emit: the events are committed, delivery is the publisher's.
    assert.deepStrictEqual(failures.map((f) => f.message), [], "emits failed")
    // Duplicates only from requests in flight at the fault: first delivered before it ended.
    const byId = new Map<string, Array<number>>()
    for (const e of events) byId.set(e.id, [...(byId.get(e.id) ?? []), e.receivedAt])
    const unexplained = [...byId].filter(([, at]) => at.length > 1 && Math.min(...at) > restoreAt + backlogMs).map(([id]) => id)
    assert.deepStrictEqual(unexplained, [], "duplicates first delivered after the fault ended")
    console.log(
      `${label}: ${receipts.length} receipts, ${failureSummary(failures)} errors, ${events.length} deliveries ` +
        `(${duplicates} duplicates), drained ${drainedAt - restoreAt} ms after the fault ended; ${Date.now() - started} ms`
    )
    return { receipts: receipts.length, duplicates }
  }).pipe(Effect.scoped, Effect.provide(SqlLive))

const port = (url: string) => Number(new URL(url).port)

describe("ingest faults under a running emitter", () => {
  it.live("killed (SIGKILL) and restarted on the same port: nothing lost, delivery resumes", () =>
    Effect.gen(function*() {
      let killedPort = 0
      yield* scenario("SIGKILL", (servers) =>
        Effect.promise(async () => {
          // Hold every request first, so that what was answered is in its file before the kill.
          await servers.current.faults({ hang: true })
          await new Promise((resolve) => setTimeout(resolve, 200))
          killedPort = port(servers.current.url)
          process.kill(servers.current.pid, "SIGKILL")
        }), (servers) =>
        Effect.promise(async () => {
          servers.current = await servers.spawn(killedPort)
        }))
    }), 60_000)

  it.live("stopped (SIGSTOP, then SIGCONT): nothing lost, delivery resumes", () =>
    Effect.gen(function*() {
      yield* scenario(
        "SIGSTOP",
        (servers) => Effect.sync(() => process.kill(servers.current.pid, "SIGSTOP")),
        (servers) => Effect.sync(() => process.kill(servers.current.pid, "SIGCONT")),
        1_000
      )
    }), 60_000)

  it.live("answering slowly (100 ms per request): nothing lost, duplicates only from requests sent during it", () =>
    Effect.gen(function*() {
      // Duplicates are allowed (a request that passed requestTimeout, 300 ms here, on a loaded
      // machine was recorded, then sent again), but only for requests sent during the fault.
      yield* scenario(
        "slow",
        (servers) => Effect.promise(() => servers.current.faults({ latencyMs: 100 })),
        (servers) => Effect.promise(() => servers.current.faults({ latencyMs: null }))
      )
    }), 60_000)

  it.live("push-back (RESOURCE_EXHAUSTED, grpc-retry-pushback-ms 300): nothing lost, no duplicates", () =>
    Effect.gen(function*() {
      const run = yield* scenario(
        "push-back",
        (servers) =>
          Effect.promise(() => servers.current.faults({ failFraction: { fraction: 1, failure: { status: "RESOURCE_EXHAUSTED", pushbackMs: 300 } } })),
        (servers) => Effect.promise(() => servers.current.faults({ failFraction: null }))
      )
      assert.strictEqual(run.duplicates, 0)
    }), 60_000)
})
