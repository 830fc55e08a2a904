/**
 * The demo: concurrent producers emit through the whole emitter (commit, publish, ack, delete) to
 * the reference ingest server, which goes down for a while in the middle of the run. At the end every
 * receipt is checked against what the server received and what was dead-lettered: an event that
 * is in neither is lost, and the demo fails.
 *
 * stdout: a header, the summary, and as the LAST line one JSON object with the results.
 * stderr: the live progress display and the library's warnings.
 */
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { performance } from "node:perf_hooks"
import { Cause, Console, Effect, Fiber, Layer, Logger, type LogLevel, Metric, Option, References } from "effect"
import { SqlClient } from "effect/sql"
import * as Config from "../../Config.ts"
import { DurableEmitter } from "../../DurableEmitter.ts"
import { Emitter } from "../../Emitter.ts"
import * as Metrics from "../../Metrics.ts"
import { Store } from "../../Store.ts"
import { type IngestServerHandle, startIngestServer } from "../../testing/IngestServer.ts"
import * as Format from "../format.ts"
import { CommandFailed } from "../errors.ts"
import { describeTarget, sqlClientLayer, storeLayer, type StoreFlags } from "../target.ts"
import { type LatencySummary, makeLatencies } from "./latency.ts"
import { makeProgress, type Progress } from "./progress.ts"

export interface DemoSettings {
  readonly events: number
  readonly producers: number
  /** Offered load in events per second; 0: as fast as the producers can go. */
  readonly rate: number
  readonly outageMs: number
  readonly payloadBytes: number
  /** Every n-th event is one the demo's server rejects for good (dead letter); 0: none. */
  readonly poisonEvery: number
  readonly ingestUrl: Option.Option<string>
  readonly timeoutMs: number
  readonly keep: boolean
  readonly store: StoreFlags
}

/** The last line of the demo's output. */
export interface DemoResult {
  readonly store: "postgres" | "pglite"
  readonly events: number
  readonly producers: number
  readonly emitted: number
  readonly failedEmits: number
  /** Unique events acknowledged (by the demo's server; with --ingest-url, as far as the emitter knows). */
  readonly delivered: number
  /** Deliveries of an event already delivered; null when not known (--ingest-url). */
  readonly duplicates: number | null
  readonly deadLettered: number
  /** Committed events neither delivered nor dead-lettered at the end. */
  readonly lost: number
  /** Rows still in the events table at the end. */
  readonly pending: number
  readonly eventsPerSecond: number
  readonly emitLatencyMs: LatencySummary
  readonly outageMs: number
  readonly peakBacklog: number
  /** Rows the retransmitter claimed and re-sent. */
  readonly retransmitted: number
  /** Committed events the publisher's queue had no room for (left to the retransmitter). */
  readonly leftToRetransmitter: number
  /** PublishBatch requests retried by the publisher. */
  readonly publishRetries: number
  readonly elapsedMs: number
  /** Who vouches for `delivered`: the demo's own ingest server, or only the emitter's table. */
  readonly verifiedBy: "ingest-server" | "emitter"
}

const types = ["demo.order.created", "demo.order.paid", "demo.order.shipped"] as const
const poisonType = "demo.poison"

/**
 * Tuning for a run of seconds, not hours; the environment (DURABLE_EMITTER_*) still wins. The
 * publisher retries a batch for up to 5 s; rows it gives up on (a longer outage) or that do not
 * fit its queue are the retransmitter's from 6 s after their commit, so the two do not send the
 * same row at once. Retries are capped at 1 s apart, so delivery resumes soon after an outage.
 */
const demoTuning: Config.EmitterOptionsInput = {
  requestTimeout: "2 seconds",
  retryMaxDelay: "1 second",
  retryBudget: "5 seconds",
  firstLease: "6 seconds",
  leaseBase: "3 seconds",
  leaseMax: "30 seconds",
  retransmitInterval: "200 millis",
  statsInterval: "500 millis",
  shutdownTimeout: "5 seconds"
}

const round = (n: number, digits = 2) => Math.round(n * 10 ** digits) / 10 ** digits

/** Log lines (warnings by default) as single lines that leave the progress display intact. */
const progressLogger = (progress: Progress) =>
  Logger.make(({ cause, logLevel, message }) => {
    const parts = (Array.isArray(message) ? message : [message]).map((part) =>
      typeof part === "string" ? part : JSON.stringify(part, (_, v) => (typeof v === "bigint" ? v.toString() : v))
    )
    if (cause.reasons.length > 0) parts.push(Cause.pretty(cause).split("\n")[0] ?? "")
    progress.note(`${logLevel.toLowerCase()}: ${parts.join(" ")}`)
  })

export const runDemo = (settings: DemoSettings, logLevel: LogLevel.LogLevel) =>
  Effect.gen(function*() {
    const env = yield* Config.fromEnv
    const stamp = new Date().toISOString().replace(/[-:T]/g, "").slice(0, 14)
    const databaseUrl = Option.orElse(settings.store.databaseUrl, () => Option.fromNullishOr(env.databaseUrl))
    const onPostgres = Option.isSome(databaseUrl)
    const ownTables = onPostgres && Option.isNone(settings.store.tablePrefix)
    const ownDir = !onPostgres && Option.isNone(settings.store.dataDir)
    const tablePrefix = Option.getOrElse(settings.store.tablePrefix, () => (onPostgres ? `demo_${stamp}` : "durable_emitter"))
    const dataDir = Option.getOrElse(settings.store.dataDir, () => path.join(os.tmpdir(), `durable-emitter-demo-${stamp}-${process.pid}`))
    const ownServer = Option.isNone(settings.ingestUrl)
    const poisonEvery = ownServer ? settings.poisonEvery : 0

    // Validated before anything starts, so a bad setting is one line and nothing to clean up.
    const baseInput: Config.EmitterOptionsInput = {
      ...demoTuning,
      ...env,
      name: "durable-emitter-demo",
      ...(Option.isSome(databaseUrl) ? { databaseUrl: databaseUrl.value } : {}),
      dataDir,
      tablePrefix
    }
    // (The reference server's URL is known only once it listens; any valid URL stands in for it here.)
    const resolved = yield* Config.resolve({ ...baseInput, ingestUrl: Option.getOrElse(settings.ingestUrl, () => "http://127.0.0.1:1") })

    const target = describeTarget(resolved)
    let keepData = settings.keep
    let cleanupNote = ""
    const progress = makeProgress()
    const logging = Layer.mergeAll(
      Logger.layer([progressLogger(progress)]),
      Layer.succeed(References.MinimumLogLevel, logLevel)
    )

    const result = yield* Effect.scoped(Effect.gen(function*() {
      // ---- what the demo owns, released in reverse order: the emitter, then the server, then the data
      if (ownDir) {
        yield* Effect.acquireRelease(
          Effect.sync(() => fs.mkdirSync(dataDir, { recursive: true })),
          () =>
            Effect.sync(() => {
              if (keepData) cleanupNote = `data kept in ${dataDir}`
              else fs.rmSync(dataDir, { recursive: true, force: true })
            })
        )
      }
      if (ownTables) {
        const tables = ["events", "sequences", "dead_letters", "migrations"].map((t) => `${tablePrefix}_${t}`)
        yield* Effect.addFinalizer(() =>
          keepData
            ? Effect.sync(() => {
              cleanupNote = `tables kept: ${tables.join(", ")}`
            })
            : SqlClient.SqlClient.use((sql) => sql.unsafe(`DROP TABLE IF EXISTS ${tables.join(", ")}`)).pipe(
              Effect.provide(sqlClientLayer(resolved)),
              Effect.catchCause((cause) =>
                Effect.sync(() => {
                  cleanupNote = `could not drop the demo's tables ${tables.join(", ")}: ${String(cause)}`
                })
              )
            )
        )
      }
      const server: IngestServerHandle | undefined = ownServer
        ? yield* Effect.acquireRelease(
          Effect.promise(() =>
            startIngestServer({
              record: "ids",
              faults: {
                rejectRules: [{ type: poisonType, code: "VALIDATION_FAILED", reason: `the demo's ingest server rejects ${poisonType} events` }]
              }
            })
          ),
          (s) => Effect.promise(() => s.close())
        )
        : undefined
      const ingestUrl = server?.url ?? Option.getOrThrow(settings.ingestUrl)

      yield* Console.log([
        `durable-emitter demo: ${Format.integer(settings.events)} events from ${settings.producers} producers` +
        (settings.rate > 0 ? ` at ${Format.integer(settings.rate)} events/s` : ", as fast as they go") +
        `, ${settings.payloadBytes}-byte payloads`,
        `  store   ${target}${ownTables || ownDir ? ` (${settings.keep ? "kept" : "removed"} at the end)` : ""}`,
        `  ingest  ${server === undefined ? `${ingestUrl} (yours: delivery is known only from the emitter's table)` : `reference server at ${ingestUrl}`}` +
        (server !== undefined && settings.outageMs > 0 ? `, down for ${Format.millis(settings.outageMs)} mid-run` : ""),
        ...(poisonEvery > 0 ? [`  every ${Format.integer(poisonEvery)}th event is a ${poisonType} the server rejects for good: a dead letter`] : [])
      ].join("\n"))

      if (!ownTables && !ownDir) {
        // The emitter would deliver rows already waiting there to the demo's server: refuse.
        const waiting = yield* Store.use((store) => store.stats).pipe(Effect.provide(storeLayer(resolved)))
        if (waiting.backlog > 0) {
          return yield* new CommandFailed({
            reason: `${target} already hold ${Format.integer(waiting.backlog)} events waiting for delivery: the demo needs tables of ` +
              `its own (leave out ${onPostgres ? "--table-prefix" : "--data-dir"})`
          })
        }
      }
      if (!onPostgres) {
        progress.note(`opening the embedded store in ${dataDir} (a new data directory takes a few seconds to initialize)`)
      }
      const context = yield* Layer.build(DurableEmitter.layerWith({ ...baseInput, ingestUrl }))
      const outcome = yield* runScenario(settings, server, poisonEvery, onPostgres, progress).pipe(Effect.provideContext(context))
      // Rows still waiting are not dropped with the tables: that would lose them.
      if (outcome.result.pending > 0 || outcome.result.lost > 0) keepData = true
      return outcome
    }).pipe(Effect.ensuring(Effect.sync(() => progress.done())), Effect.provide(logging)))

    return { ...result, target, ingest: ownServer ? "reference server (in process)" : Option.getOrThrow(settings.ingestUrl), cleanupNote }
  })

const runScenario = (
  settings: DemoSettings,
  server: IngestServerHandle | undefined,
  poisonEvery: number,
  onPostgres: boolean,
  progress: Progress
) =>
  Effect.gen(function*() {
    const emitter = yield* Emitter
    const store = yield* Store
    const latencies = makeLatencies(settings.events)
    const receipts: Array<string> = []
    const failures = new Map<string, number>()
    let next = 0
    let failed = 0
    let backlog = 0
    let backlogExact = true
    let deadLetters = 0
    let peakBacklog = 0
    let ingestDown = false
    let outageEndedAt: number | undefined
    let emittedAtOutageEnd = 0
    let caughtUpMs: number | undefined
    const startedAt = Date.now()

    const delivered = () => server?.received.stats.uniqueIds ?? Math.max(0, receipts.length - backlog - deadLetters)

    const produce = (producer: number) =>
      Effect.gen(function*() {
        const data = new Uint8Array(settings.payloadBytes)
        for (let i = 0; i < data.length; i++) data[i] = (producer * 31 + i * 7) & 0xff
        const source = `demo/producer-${producer}`
        while (next < settings.events) {
          const i = next++
          if (settings.rate > 0) {
            const wait = startedAt + (i * 1000) / settings.rate - Date.now()
            if (wait >= 1) yield* Effect.sleep(wait)
          }
          const poison = poisonEvery > 0 && (i + 1) % poisonEvery === 0
          const t0 = performance.now()
          yield* emitter.emit({ source, type: poison ? poisonType : types[i % types.length]!, data }).pipe(
            Effect.matchEffect({
              onSuccess: (receipt) =>
                Effect.sync(() => {
                  latencies.record(performance.now() - t0)
                  receipts.push(receipt.id)
                }),
              onFailure: (error) =>
                Effect.sync(() => {
                  failed++
                  failures.set(error._tag, (failures.get(error._tag) ?? 0) + 1)
                })
            })
          )
        }
      })

    const statusLine = () => {
      const elapsed = (Date.now() - startedAt) / 1000
      return [
        `${elapsed.toFixed(1).padStart(5)}s`,
        `emitted ${Format.integer(receipts.length)}/${Format.integer(settings.events)}`,
        `delivered ${Format.integer(delivered())}`,
        `backlog ${backlogExact ? "" : "~"}${Format.integer(backlog)}`,
        `dead letters ${Format.integer(deadLetters)}`,
        ...(server === undefined ? [] : [`ingest ${ingestDown ? "DOWN" : "up"}`])
      ].join("  ")
    }

    const readTable = Effect.gen(function*() {
      const stats = yield* store.stats
      backlog = stats.backlog
      backlogExact = stats.exact
      deadLetters = stats.deadLetters
      peakBacklog = Math.max(peakBacklog, backlog)
      if (outageEndedAt !== undefined && caughtUpMs === undefined && delivered() + deadLetters >= emittedAtOutageEnd) {
        caughtUpMs = Date.now() - outageEndedAt
      }
    })

    const monitor = Effect.gen(function*() {
      while (true) {
        yield* readTable.pipe(Effect.ignore)
        progress.update(statusLine())
        yield* Effect.sleep(250)
      }
    })

    const outage = Effect.gen(function*() {
      if (server === undefined || settings.outageMs <= 0) return
      while (receipts.length + failed < settings.events * 0.3) yield* Effect.sleep(10)
      yield* Effect.promise(() => server.faults.down("refuse"))
      ingestDown = true
      progress.note(
        `ingest outage: the server refuses connections for ${Format.millis(settings.outageMs)}; emits still commit, delivery waits and retries`
      )
      yield* Effect.sleep(settings.outageMs)
      yield* Effect.promise(() => server.faults.up())
      ingestDown = false
      outageEndedAt = Date.now()
      emittedAtOutageEnd = receipts.length
      progress.note(`ingest back up after ${Format.millis(settings.outageMs)}: the backlog drains`)
    })

    const monitorFiber = yield* Effect.forkChild(monitor)
    const outageFiber = yield* Effect.forkChild(outage)
    yield* Effect.forEach(Array.from({ length: settings.producers }, (_, p) => p), produce, {
      concurrency: "unbounded",
      discard: true
    })
    const emittedAt = Date.now()
    yield* Fiber.join(outageFiber)
    progress.note(
      `${Format.integer(receipts.length)} events committed in ${Format.millis(emittedAt - startedAt)}` +
        `${failed > 0 ? ` (${Format.integer(failed)} emits failed)` : ""}; waiting for delivery`
    )

    // ---- wait until everything is delivered or dead-lettered: flush, then the table empty
    const deadline = Date.now() + settings.timeoutMs
    yield* emitter.flush.pipe(Effect.timeoutOption(settings.timeoutMs))
    let remaining = -1
    while (true) {
      yield* readTable.pipe(Effect.ignore)
      remaining = backlogExact
        ? backlog
        : (yield* store.countBySourceType).reduce((sum, c) => sum + c.count, 0)
      if (remaining === 0 || Date.now() >= deadline) break
      yield* Effect.sleep(100)
    }
    const drainedAt = Date.now()
    yield* Fiber.interrupt(monitorFiber)
    progress.update(statusLine())
    progress.done()

    // ---- the verdict: every receipt is delivered or dead-lettered, or it is lost
    const deadLettered = new Set((yield* store.listDeadLetters({ since: startedAt - 1_000 })).map((d) => d.eventId))
    let deliveredCount = 0
    let deadLetteredCount = 0
    let lost = 0
    if (server !== undefined) {
      const ids = server.received.ids
      for (const id of receipts) {
        const wasDelivered = ids.has(id)
        const wasDeadLettered = deadLettered.has(id)
        if (wasDelivered) deliveredCount++
        if (wasDeadLettered) deadLetteredCount++
        if (!wasDelivered && !wasDeadLettered) lost++
      }
    } else {
      for (const id of receipts) if (deadLettered.has(id)) deadLetteredCount++
      lost = remaining
      deliveredCount = Math.max(0, receipts.length - deadLetteredCount - remaining)
    }
    const elapsedMs = drainedAt - startedAt
    const counters = yield* Metric.snapshot
    const total = (metric: Metric.Counter<number>) =>
      counters.reduce((sum, m) => (m.id === metric.id && m.type === "Counter" ? sum + Number(m.state.count) : sum), 0)
    const result: DemoResult = {
      store: onPostgres ? "postgres" : "pglite",
      events: settings.events,
      producers: settings.producers,
      emitted: receipts.length,
      failedEmits: failed,
      delivered: deliveredCount,
      duplicates: server === undefined ? null : server.received.stats.duplicates,
      deadLettered: deadLetteredCount,
      lost,
      pending: remaining,
      eventsPerSecond: Math.round(deliveredCount / Math.max(0.001, elapsedMs / 1000)),
      emitLatencyMs: mapLatency(latencies.summary()),
      outageMs: server === undefined ? 0 : settings.outageMs,
      peakBacklog,
      retransmitted: total(Metrics.retransmitted),
      leftToRetransmitter: total(Metrics.queueFull),
      publishRetries: total(Metrics.retries),
      elapsedMs,
      verifiedBy: server === undefined ? "emitter" : "ingest-server"
    }
    return { result, emitMs: emittedAt - startedAt, caughtUpMs, failures, poisonEvery }
  })

const mapLatency = (s: LatencySummary): LatencySummary => ({
  count: s.count,
  p50: round(s.p50),
  p95: round(s.p95),
  p99: round(s.p99),
  max: round(s.max)
})
