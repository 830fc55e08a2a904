/**
 * Scenarios `soak` and `soak-embedded`: the e2e pipeline (100 closed-loop emitters → store →
 * gRPC → the reference ingest server in its own process → ack → delete) at full speed for N
 * minutes (`--minutes`, default 10 for `soak`, 3 for `soak-embedded`), reported per minute:
 * events acknowledged per second, emit → ack p50/p99, the events table's bytes (every partition's
 * heap, TOAST and indexes) and dead rows. What it checks is flatness: the same speed and latency
 * in the last minute as in the first, and a table that does not grow, with autovacuum off (or,
 * on PGlite, absent).
 *
 * The ingest server records seqnums as intervals (bounded memory over millions of events), so
 * lost and duplicated events are exact.
 */
import { Effect, Layer, Option } from "effect"
import { SqlClient } from "effect/sql"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { Emitter } from "../src/Emitter.ts"
import { services } from "../src/DurableEmitter.ts"
import { eventsDeadTuples, eventsTableBytes } from "../src/store/pgPartitions.ts"
import * as PgliteStore from "../src/store/PgliteStore.ts"
import * as PgStore from "../src/store/PgStore.ts"
import { tables } from "../src/store/pgSchema.ts"
import { makeIngestServerProcess } from "../src/testing/IngestServerProcess.ts"
import {
  adminClient,
  type BenchArgs,
  bounded,
  freshPrefix,
  int,
  mb,
  peakRssOf,
  quietLogs,
  Reservoir,
  round,
  type ScenarioResult,
  since,
  summarize,
  withTables
} from "./common.ts"
import { makeRecorder } from "./delivery.ts"
import { closedLoop } from "./load.ts"
import { grpcLayer, recorded, resolveOptions, storeLayer } from "./stack.ts"

const concurrency = 100
const warmupEvents = 10_000
const sampleEveryMs = 5_000

export interface MinuteReport {
  readonly minute: number
  readonly seconds: number
  readonly eventsPerSecond: number
  readonly emitToAckP50Ms: number
  readonly emitToAckP99Ms: number
  readonly tableBytesMax: number
  readonly deadTuplesMax: number
}

/** Per-minute figures from the running counters: acks and table samples land in the current window. */
export const makeMinutes = () => {
  const done: Array<MinuteReport> = []
  let latencies = new Reservoir(50_000)
  let delivered = 0
  let tableBytes = 0
  let deadTuples = 0
  let started = performance.now()
  return {
    onDelivered: (n: number) => (delivered += n),
    onEmitToAck: (ms: number) => latencies.add(ms),
    onTable: (bytes: number, dead: number) => {
      tableBytes = Math.max(tableBytes, bytes)
      deadTuples = Math.max(deadTuples, dead)
    },
    /** Closes the current window. */
    close: () => {
      const seconds = since(started) / 1000
      const latency = summarize(latencies.values)
      done.push({
        minute: done.length + 1,
        seconds: round(seconds, 1),
        eventsPerSecond: round(delivered / seconds, 0),
        emitToAckP50Ms: round(latency.p50, 2),
        emitToAckP99Ms: round(latency.p99, 2),
        tableBytesMax: tableBytes,
        deadTuplesMax: deadTuples
      })
      latencies = new Reservoir(50_000)
      delivered = tableBytes = deadTuples = 0
      started = performance.now()
    },
    done
  }
}

/**
 * `windows` windows of `windowMs` from `start`: `sample` every few seconds within each, then
 * `endWindow` once it is over (the per-minute report).
 */
export const windowed = <E, R, E2, R2>(
  start: number,
  windows: number,
  windowMs: number,
  sample: Effect.Effect<void, E, R>,
  endWindow: () => Effect.Effect<void, E2, R2>
) =>
  Effect.gen(function*() {
    for (let w = 0; w < windows; w++) {
      const until = start + (w + 1) * windowMs
      while (performance.now() < until) {
        yield* sample
        yield* Effect.sleep(Math.max(0, Math.min(sampleEveryMs, until - performance.now())))
      }
      yield* endWindow()
    }
  })

type Variant = "postgres" | "embedded"

export const tableProbe = (prefix: string) =>
  Effect.gen(function*() {
    const t = yield* tables(prefix)
    const sql = yield* SqlClient.SqlClient
    const rows = yield* sql.unsafe(`SELECT ${eventsTableBytes(t)}, ${eventsDeadTuples(t)}`).values
    return { bytes: Number(rows[0]?.[0] ?? 0), dead: Number(rows[0]?.[1] ?? 0) }
  })

const rowsLeftProbe = (prefix: string) =>
  SqlClient.SqlClient.use((sql) => sql.unsafe(`SELECT count(*) FROM ${prefix}_events`).values).pipe(
    Effect.map((rows) => Number(rows[0]?.[0] ?? 0))
  )

const run = (variant: Variant) => (args: BenchArgs) => {
  const minutes = args.minutes ?? (variant === "postgres" ? 10 : 3)
  const windows = Math.max(1, Math.ceil(minutes))
  const windowMs = (minutes * 60_000) / windows
  const prefix = freshPrefix(variant === "postgres" ? "soak" : "soakpg")
  const dataDir = variant === "embedded" ? fs.mkdtempSync(path.join(os.tmpdir(), "de-soak-")) : undefined

  const body = Effect.scoped(Effect.gen(function*() {
    const server = yield* makeIngestServerProcess({ record: "seqnums" })
    // The embedded variant builds its store below, on `dataDir`: the options' databaseUrl is unused.
    const options = yield* resolveOptions({ tablePrefix: prefix, ingestUrl: server.url }, args.options)
    const minutesLog = makeMinutes()
    const recorder = makeRecorder((emitToAckMs) => minutesLog.onEmitToAck(emitToAckMs), false)
    const transport = recorded(grpcLayer(options), (events, results, startedAt, endedAt) => {
      let delivered = 0
      for (const result of results) if (result._tag === "Delivered") delivered++
      minutesLog.onDelivered(delivered)
      recorder.onAnswer(events, results, startedAt, endedAt)
    })
    // The embedded store is one connection in this process: the probes share it, through its client.
    const store = variant === "postgres"
      ? storeLayer(options)
      : PgStore.layerFromClient({ tablePrefix: prefix }).pipe(
        Layer.provideMerge(PgliteStore.layerClient({ dataDir: dataDir! }))
      )
    const stack = services(options).pipe(Layer.provideMerge(store), Layer.provide(transport))

    const measured = yield* Effect.gen(function*() {
      const emitter = yield* Emitter
      // PostgreSQL: a connection of its own; PGlite: the store's client (it has one connection).
      const storeClient = yield* Effect.serviceOption(SqlClient.SqlClient)
      const probe = <A, E>(effect: Effect.Effect<A, E, SqlClient.SqlClient>) =>
        Option.match(storeClient, {
          onNone: () => effect.pipe(Effect.provide(adminClient)),
          onSome: (sql) => effect.pipe(Effect.provideService(SqlClient.SqlClient, sql))
        })
      yield* closedLoop(emitter, { concurrency, seconds: 60, maxEvents: warmupEvents })
      yield* bounded("flush after warm-up", 60_000, emitter.flush)
      yield* Effect.promise(() => server.clear())
      recorder.reset()
      minutesLog.close()
      minutesLog.done.length = 0

      const start = performance.now()
      const sampler = windowed(
        start,
        windows,
        windowMs,
        Effect.map(probe(tableProbe(prefix)), (table) => minutesLog.onTable(table.bytes, table.dead)),
        () =>
          Effect.sync(() => {
            minutesLog.close()
            const m = minutesLog.done[minutesLog.done.length - 1]!
            console.log(
              `  minute ${m.minute}: ${int(m.eventsPerSecond)} events/s, emit → ack p50 ${m.emitToAckP50Ms} ms p99 ${m.emitToAckP99Ms} ms,` +
                ` table ${mb(m.tableBytesMax)} MB, dead rows ${int(m.deadTuplesMax)}`
            )
          })
      )
      const [emitted] = yield* Effect.all([
        closedLoop(emitter, { concurrency, seconds: minutes * 60, maxEvents: Number.MAX_SAFE_INTEGER, onReceipt: recorder.onReceipt }),
        sampler
      ], { concurrency: "unbounded" })
      const elapsed = since(start)
      yield* bounded("flush", 120_000, emitter.flush)
      const drainStart = performance.now()
      while ((yield* probe(rowsLeftProbe(prefix))) > 0 && since(drainStart) < 120_000) yield* Effect.sleep(100)
      const rowsLeft = yield* probe(rowsLeftProbe(prefix))
      return { emitted, elapsed, rowsLeft }
    }).pipe(Effect.provide(stack))

    const stats = yield* Effect.promise(() => server.stats())
    const ingestServerPeakRssMb = peakRssOf(server.pid)
    const { elapsed, emitted, rowsLeft } = measured
    const perMinute = minutesLog.done
    const unique = stats.uniqueIds ?? stats.events
    const duplicates = stats.duplicates ?? 0
    const lost = Math.max(0, emitted.events - unique)
    const eventsPerSecond = emitted.events / (elapsed / 1000)
    const first = perMinute[0]!
    const last = perMinute[perMinute.length - 1]!
    const maxP99 = Math.max(...perMinute.map((m) => m.emitToAckP99Ms))
    const tableBytesMax = Math.max(...perMinute.map((m) => m.tableBytesMax))
    const scenario = variant === "postgres" ? "soak" : "soak-embedded"
    const report = [
      `${scenario}: ${concurrency} emitters → ${variant === "postgres" ? "PostgreSQL" : "PGlite (embedded)"} → gRPC → ingest server (pid ${server.pid}) → ack → delete, ${round(minutes, 2)} min`,
      `  ${int(emitted.events)} events: ${int(eventsPerSecond)} events/s; first minute ${int(first.eventsPerSecond)}/s, last ${int(last.eventsPerSecond)}/s` +
        ` (last/first ${round(last.eventsPerSecond / first.eventsPerSecond, 2)}, target ≥ 0.9)` +
        `${emitted.errors > 0 ? `; ${emitted.errors} emit errors: ${emitted.firstError}` : ""}`,
      `  emit → ack p99, worst minute: ${maxP99} ms (target ≤ 250); events table peak ${mb(tableBytesMax)} MB (target ≤ 512)`,
      `  ingest server: ${int(stats.events)} events, ${int(unique)} unique; duplicates ${duplicates}, lost ${lost}; rows left ${rowsLeft}; peak RSS ${ingestServerPeakRssMb} MB`
    ]
    return {
      report,
      json: {
        scenario,
        minutes: round(minutes, 3),
        eventsPerSecond: round(eventsPerSecond, 0),
        firstMinuteEventsPerSecond: first.eventsPerSecond,
        lastMinuteEventsPerSecond: last.eventsPerSecond,
        maxMinuteEmitToAckP99Ms: maxP99,
        tableBytesMax,
        lost,
        duplicates,
        rowsLeft,
        events: emitted.events,
        emitErrors: emitted.errors,
        ingestServerPeakRssMb,
        perMinute
      }
    } satisfies ScenarioResult
  }))

  const cleanup = Effect.sync(() => {
    if (dataDir !== undefined) fs.rmSync(dataDir, { recursive: true, force: true })
  })
  return (variant === "postgres" ? withTables(prefix, body) : body).pipe(Effect.ensuring(cleanup), Effect.provide(quietLogs))
}

export const runPostgres = run("postgres")
export const runEmbedded = run("embedded")
