/**
 * The `durable-emitter` command line, run from source as real processes (`node src/cli/main.ts …`)
 * the way a user runs it: help, errors, migrate and inspect, dead letters, the ingest server, and
 * short demos on PostgreSQL and on the embedded default. Store commands work on fresh table
 * prefixes in DATABASE_URL, dropped afterwards.
 */
import { type ChildProcess, spawn } from "node:child_process"
import * as fs from "node:fs"
import * as net from "node:net"
import { createInterface } from "node:readline"
import { fileURLToPath } from "node:url"
import { create, toBinary } from "@bufbuild/protobuf"
import { PgClient } from "@effect/sql-pg"
import { assert, describe, it } from "@effect/vitest"
import { Effect, Redacted } from "effect"
import { SqlClient } from "effect/sql"
import { CloudEventSchema } from "../src/gen/io/cloudevents/v1/cloudevent_pb.js"
import { type NewEvent, Store } from "../src/Store.ts"
import * as PgStore from "../src/store/PgStore.ts"
import * as GrpcTransport from "../src/transport/GrpcTransport.ts"
import { databaseUrl, dropTables, freshPrefix } from "./support/pg.ts"

const cliMain = fileURLToPath(new URL("../src/cli/main.ts", import.meta.url))

interface CliRun {
  readonly code: number | null
  readonly stdout: string
  readonly stderr: string
}

/** The test's environment without the emitter's variables, plus `env` (undefined removes). */
const cliEnv = (env: Record<string, string | undefined>): NodeJS.ProcessEnv => {
  const out: NodeJS.ProcessEnv = {}
  for (const [key, value] of Object.entries(process.env)) {
    if (key !== "DATABASE_URL" && !key.startsWith("DURABLE_EMITTER_")) out[key] = value
  }
  for (const [key, value] of Object.entries(env)) {
    if (value === undefined) delete out[key]
    else out[key] = value
  }
  return out
}

const onPostgres = { DATABASE_URL: databaseUrl }

const spawnCli = (args: ReadonlyArray<string>, env: Record<string, string | undefined>) =>
  spawn(process.execPath, [cliMain, ...args], { env: cliEnv(env), stdio: ["ignore", "pipe", "pipe"] })

const cli = (args: ReadonlyArray<string>, env: Record<string, string | undefined> = onPostgres, timeoutMs = 30_000) =>
  new Promise<CliRun>((resolve, reject) => {
    const child = spawnCli(args, env)
    let stdout = ""
    let stderr = ""
    child.stdout.setEncoding("utf8").on("data", (chunk: string) => (stdout += chunk))
    child.stderr.setEncoding("utf8").on("data", (chunk: string) => (stderr += chunk))
    const timer = setTimeout(() => {
      child.kill("SIGKILL")
      reject(new Error(`durable-emitter ${args.join(" ")}: no exit within ${timeoutMs} ms\n${stdout}\n${stderr}`))
    }, timeoutMs)
    child.once("error", reject)
    child.once("close", (code) => {
      clearTimeout(timer)
      resolve({ code, stdout, stderr })
    })
  })

const exited = (child: ChildProcess) =>
  new Promise<number | null>((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) return resolve(child.exitCode)
    child.once("exit", (code) => resolve(code))
  })

const lastJson = (stdout: string) => {
  const lines = stdout.trimEnd().split("\n")
  return JSON.parse(lines[lines.length - 1]!) as Record<string, unknown>
}

const noStackTrace = (text: string) => assert.notMatch(text, /^\s+at /m, `a stack trace in:\n${text}`)

const tableExists = (prefix: string) =>
  Effect.runPromise(
    SqlClient.SqlClient.use((sql) =>
      sql.unsafe<{ found: boolean }>(`SELECT to_regclass($1) IS NOT NULL AS found`, [`${prefix}_events`])
    ).pipe(
      Effect.map(([row]) => row?.found === true),
      Effect.provide(PgClient.layer({ url: Redacted.make(databaseUrl), maxConnections: 1 }))
    )
  )

let n = 0
const newEvent = (source: string, type: string): NewEvent => ({
  eventId: crypto.randomUUID(),
  source,
  type,
  payload: new TextEncoder().encode(`${source}/${type}/${n++}`)
})

/** Runs `body` with a Store on the prefix's tables (migrating them). */
const withStore = <A>(prefix: string, body: (store: Store["Service"]) => Effect.Effect<A, unknown>) =>
  Effect.runPromise(Store.use(body).pipe(Effect.provide(PgStore.layer({ url: Redacted.make(databaseUrl), tablePrefix: prefix }))))

const drop = (prefix: string) => Effect.runPromise(dropTables(prefix))

describe.concurrent("durable-emitter CLI", () => {
  it("--help lists the commands, and every command explains its flags", async () => {
    const root = await cli(["--help"])
    assert.strictEqual(root.code, 0, root.stderr)
    for (const command of ["demo", "migrate", "inspect", "dead-letters", "ingest-server", "bench"]) {
      assert.match(root.stdout, new RegExp(`^\\s+${command}\\s+\\S`, "m"), `${command} in:\n${root.stdout}`)
    }
    const demo = await cli(["demo", "--help"])
    assert.strictEqual(demo.code, 0)
    for (const flag of ["--events", "--producers", "--outage-ms", "--ingest-url", "--keep", "--database-url", "--data-dir"]) {
      assert.include(demo.stdout, flag)
    }
    const purge = await cli(["dead-letters", "purge", "--help"])
    assert.strictEqual(purge.code, 0)
    for (const flag of ["--yes", "--source", "--type", "--since", "--until", "--limit"]) assert.include(purge.stdout, flag)
  })

  it("bad input fails with a non-zero exit code and one readable line, no stack trace", async () => {
    const badValue = await cli(["demo", "--events", "many"])
    assert.notStrictEqual(badValue.code, 0)
    assert.match(badValue.stderr, /^error: .*--events.*"many"/m)
    assert.include(badValue.stderr, "durable-emitter demo --help")
    assert.strictEqual(badValue.stdout, "")
    noStackTrace(badValue.stderr)

    const unknownFlag = await cli(["inspect", "--verbose-please"])
    assert.notStrictEqual(unknownFlag.code, 0)
    assert.match(unknownFlag.stderr, /^error: .*--verbose-please/m)

    const badConfig = await cli(["inspect", "--table-prefix", "Bad-Prefix"])
    assert.strictEqual(badConfig.code, 1)
    assert.match(badConfig.stderr, /^error: invalid configuration: --table-prefix: must be/m)
    noStackTrace(badConfig.stderr)

    const badEnv = await cli(["inspect"], { ...onPostgres, DURABLE_EMITTER_WRITE_BATCH_SIZE: "lots" })
    assert.strictEqual(badEnv.code, 1)
    assert.match(badEnv.stderr, /^error: invalid configuration: DURABLE_EMITTER_WRITE_BATCH_SIZE: must be a positive integer/m)

    const noDatabase = await cli(["inspect", "--database-url", "postgres://postgres@127.0.0.1:1/test"])
    assert.strictEqual(noDatabase.code, 1)
    assert.match(noDatabase.stderr, /^error: .*ECONNREFUSED/m)
    noStackTrace(noDatabase.stderr)

    const noTables = await cli(["inspect", "--table-prefix", "no_such_prefix_here"])
    assert.strictEqual(noTables.code, 1)
    assert.match(noTables.stderr, /no table no_such_prefix_here_events .*durable-emitter migrate/)
  })

  it("a store setting that cannot work is refused before anything is opened, naming the flag or the variable", async () => {
    const [emptyUrl, mysql, badPrefix] = await Promise.all([
      cli(["inspect"], { DATABASE_URL: "" }),
      cli(["migrate", "--database-url", "mysql://u:s3cret@h/db"]),
      cli(["demo", "--table-prefix", "Bad"])
    ])
    assert.strictEqual(emptyUrl.code, 1)
    assert.match(emptyUrl.stderr, /^error: invalid configuration: DATABASE_URL: is set but empty/m)
    assert.strictEqual(mysql.code, 1)
    assert.match(mysql.stderr, /^error: invalid configuration: --database-url: must be a postgres:\/\/ or postgresql:\/\/ URL/m)
    assert.notInclude(mysql.stderr, "s3cret")
    assert.strictEqual(badPrefix.code, 1)
    assert.match(badPrefix.stderr, /^error: invalid configuration: --table-prefix: must be/m)
    for (const run of [emptyUrl, mysql, badPrefix]) noStackTrace(run.stderr)
  })

  it("migrate creates the tables and says so, then has nothing to do; inspect shows the backlog", async () => {
    const prefix = freshPrefix()
    try {
      const first = await cli(["migrate", "--table-prefix", prefix])
      assert.strictEqual(first.code, 0, first.stderr)
      assert.include(first.stdout, "applied migration 1 (create_tables)")
      assert.include(first.stdout, `${prefix}_events, ${prefix}_sequences, ${prefix}_dead_letters`)
      const again = await cli(["migrate"], { ...onPostgres, DURABLE_EMITTER_TABLE_PREFIX: prefix })
      assert.strictEqual(again.code, 0, again.stderr)
      assert.match(again.stdout, /already up to date: migration 3 \(create_pending\)/)

      await withStore(prefix, (store) =>
        store.append([newEvent("billing", "invoice.paid"), newEvent("billing", "invoice.paid"), newEvent("shipping", "parcel.sent")], {
          now: Date.now() - 60_000,
          nextAttemptAt: Date.now() + 600_000
        }))
      const json = await cli(["inspect", "--table-prefix", prefix, "--json"])
      assert.strictEqual(json.code, 0, json.stderr)
      const report = lastJson(json.stdout)
      assert.deepInclude(report, { backlog: 3, exact: true, deadLetters: 0 })
      assert.isAtLeast(report.oldestAgeMs as number, 59_000)
      assert.isAbove(report.payloadBytes as number, 0)
      assert.deepStrictEqual(
        (report.bySourceType as Array<{ source: string; type: string; count: number }>).map((c) => [c.source, c.type, c.count]),
        [["billing", "invoice.paid", 2], ["shipping", "parcel.sent", 1]]
      )
      const text = await cli(["inspect", "--table-prefix", prefix])
      assert.strictEqual(text.code, 0, text.stderr)
      assert.match(text.stdout, /backlog\s+3 events waiting/)
      assert.match(text.stdout, /oldest\s+\S+ \(1 min/)
      assert.match(text.stdout, /billing\s+invoice\.paid\s+2/)
      assert.match(text.stdout, /dead letters\s+0/)
    } finally {
      await drop(prefix)
    }
  })

  it("dead-letters list, replay and purge, with filters", async () => {
    const prefix = freshPrefix()
    try {
      const before = Date.now()
      await withStore(prefix, (store) =>
        Effect.gen(function*() {
          const events = [
            newEvent("billing", "invoice.paid"),
            newEvent("billing", "invoice.paid"),
            newEvent("billing", "invoice.void"),
            newEvent("shipping", "parcel.sent"),
            newEvent("shipping", "parcel.sent")
          ]
          const appended = yield* store.append(events, { now: before, nextAttemptAt: before + 600_000 })
          yield* store.deadLetter(
            appended.map((a, i) => ({
              rowId: a.rowId,
              code: i < 3 ? "VALIDATION_FAILED" : "SCHEMA_MISSING",
              reason: i < 3 ? "amount must be positive" : "no schema for parcel.sent"
            })),
            before
          )
        }))
      const at = ["--table-prefix", prefix]

      const list = await cli(["dead-letters", "list", ...at])
      assert.strictEqual(list.code, 0, list.stderr)
      assert.match(list.stdout, /VALIDATION_FAILED\s+0\s+amount must be positive/)
      assert.match(list.stdout, /SCHEMA_MISSING\s+0\s+no schema for parcel\.sent/)
      assert.include(list.stdout, "5 dead letters")

      const billing = await cli(["dead-letters", "list", ...at, "--source", "billing", "--json"])
      assert.strictEqual(billing.code, 0, billing.stderr)
      const rows = billing.stdout.trim().split("\n").map((line) => JSON.parse(line) as { source: string; type: string; code: string })
      assert.deepStrictEqual(rows.map((r) => [r.source, r.type, r.code]), [
        ["billing", "invoice.paid", "VALIDATION_FAILED"],
        ["billing", "invoice.paid", "VALIDATION_FAILED"],
        ["billing", "invoice.void", "VALIDATION_FAILED"]
      ])
      const later = await cli(["dead-letters", "list", ...at, "--since", new Date(before + 60_000).toISOString()])
      assert.strictEqual(later.code, 0, later.stderr)
      assert.match(later.stdout, /^none$/m)
      const badTime = await cli(["dead-letters", "list", ...at, "--until", "yesterday-ish"])
      assert.notStrictEqual(badTime.code, 0)
      assert.match(badTime.stderr, /^error: .*--until/m)

      const replay = await cli(["dead-letters", "replay", ...at, "--type", "parcel.sent"])
      assert.strictEqual(replay.code, 0, replay.stderr)
      assert.match(replay.stdout, /replayed 2 dead letters/)
      const stats = await withStore(prefix, (store) => store.stats)
      assert.deepInclude(stats, { backlog: 2, deadLetters: 3 })

      const refused = await cli(["dead-letters", "purge", ...at])
      assert.strictEqual(refused.code, 1)
      assert.match(refused.stderr, /^error: 3 dead letters match; nothing purged: add --yes/m)
      const some = await cli(["dead-letters", "purge", ...at, "--type", "invoice.paid", "--limit", "1", "--yes"])
      assert.strictEqual(some.code, 0, some.stderr)
      assert.match(some.stdout, /purged 1 dead letter$/m)
      const rest = await cli(["dead-letters", "purge", ...at, "--yes"])
      assert.strictEqual(rest.code, 0, rest.stderr)
      assert.match(rest.stdout, /purged 2 dead letters/)
      assert.deepInclude(await withStore(prefix, (store) => store.stats), { backlog: 2, deadLetters: 0 })
    } finally {
      await drop(prefix)
    }
  })

  it("ingest-server prints its URL, answers gRPC, prints each event as a JSON line, and stops on SIGTERM", async () => {
    const child = spawnCli(["ingest-server", "--port", "0"], {})
    try {
      const lines: Array<string> = []
      const waiters: Array<() => void> = []
      createInterface({ input: child.stdout! }).on("line", (line) => {
        lines.push(line)
        for (const wake of waiters.splice(0)) wake()
      })
      const lineCount = (count: number) =>
        new Promise<void>((resolve, reject) => {
          const timer = setTimeout(() => reject(new Error(`expected ${count} lines, got ${JSON.stringify(lines)}`)), 15_000)
          const check = () => {
            if (lines.length >= count) {
              clearTimeout(timer)
              resolve()
            } else waiters.push(check)
          }
          check()
        })
      await lineCount(1)
      const url = lines[0]!
      assert.match(url, /^http:\/\/127\.0\.0\.1:\d+$/)

      const event = (id: string) => toBinary(CloudEventSchema, create(CloudEventSchema, { id, source: "cli-test", specVersion: "1.0", type: "t" }))
      const pong = await Effect.runPromise(Effect.scoped(Effect.gen(function*() {
        const transport = yield* GrpcTransport.make({ url, timeout: "5 seconds" })
        yield* transport.publishBatch([event("e-1"), event("e-2")])
        return yield* transport.ping
      })))
      assert.strictEqual(pong, "pong")
      await lineCount(3)
      const received = lines.slice(1, 3).map((line) => JSON.parse(line) as { id: string; source: string; type: string })
      assert.deepStrictEqual(received.map((e) => [e.id, e.source, e.type]), [["e-1", "cli-test", "t"], ["e-2", "cli-test", "t"]])

      child.kill("SIGTERM")
      assert.strictEqual(await exited(child), 0) // stopping a server by signal is its normal end
    } finally {
      child.kill("SIGKILL")
    }
  })
})

describe("durable-emitter demo", () => {
  const demoArgs = ["demo", "--events", "2000", "--producers", "8", "--outage-ms", "300"]

  const checkRun = (run: CliRun, store: string) => {
    assert.strictEqual(run.code, 0, `${run.stdout}\n${run.stderr}`)
    const result = lastJson(run.stdout)
    assert.strictEqual(result.store, store)
    assert.strictEqual(result.emitted, 2000)
    assert.strictEqual(result.lost, 0)
    assert.strictEqual(result.pending, 0)
    assert.strictEqual(result.deadLettered, 2) // every 1000th event is rejected for good by the demo's server
    assert.strictEqual(result.delivered, (result.emitted as number) - (result.deadLettered as number))
    assert.isAbove(result.eventsPerSecond as number, 0)
    assert.match(run.stdout, /^summary$/m)
    assert.match(run.stdout, /emit latency\s+p50 .*p95 .*p99 /)
    assert.match(run.stderr, /ingest outage/)
    return result
  }

  it("on PostgreSQL: nothing lost through an outage, its tables dropped afterwards", async () => {
    const run = await cli(demoArgs, onPostgres, 60_000)
    checkRun(run, "postgres")
    const prefix = /tables (demo_\w+?)_\*/.exec(run.stdout)?.[1]
    assert.isDefined(prefix, run.stdout)
    assert.isFalse(await tableExists(prefix!))
  }, 60_000)

  it("fails when committed events are not delivered (an ingest URL nobody listens on), and keeps their tables", async () => {
    const closedPort = await new Promise<number>((resolve) => {
      const server = net.createServer().listen(0, "127.0.0.1", () => {
        const { port } = server.address() as net.AddressInfo
        server.close(() => resolve(port))
      })
    })
    const run = await cli(
      ["demo", "--events", "200", "--ingest-url", `http://127.0.0.1:${closedPort}`, "--timeout-ms", "300"],
      { ...onPostgres, DURABLE_EMITTER_SHUTDOWN_TIMEOUT: "200 millis" },
      60_000
    )
    const prefix = /tables (demo_\w+?)_\*/.exec(run.stdout)?.[1]
    try {
      assert.strictEqual(run.code, 1, `${run.stdout}\n${run.stderr}`)
      assert.deepInclude(lastJson(run.stdout), { emitted: 200, delivered: 0, lost: 200, pending: 200, duplicates: null, verifiedBy: "emitter" })
      assert.match(run.stdout, /tables kept: demo_/)
      assert.match(run.stdout, /^ {2}why {12}the last delivery attempt failed: .*ECONNREFUSED/m) // the cause, not only a count
      assert.match(run.stderr, /^error: 200 committed events were lost: neither delivered nor dead-lettered \(200 still waiting in the table, which is kept\)$/m)
      assert.isTrue(await tableExists(prefix!))
    } finally {
      if (prefix !== undefined) await drop(prefix)
    }
  }, 60_000)

  it("on the embedded default (no DATABASE_URL): nothing lost, its data directory removed afterwards", async () => {
    const run = await cli(demoArgs, {}, 90_000)
    checkRun(run, "pglite")
    const dir = /embedded store in (\S+),/.exec(run.stdout)?.[1]
    assert.isDefined(dir, run.stdout)
    assert.isFalse(fs.existsSync(dir!))
  }, 90_000)
})
