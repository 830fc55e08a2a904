/**
 * Scenario `outbox`: concurrent application transactions, each inserting one business row and
 * writing one 256-byte event with `emitInTransaction` (the emitter built on the application's own
 * PgClient), delivered to the reference ingest server in a separate process. The baseline is the
 * same transactions without the event, on the same pool, measured in the same run, the kinds
 * taking turns in 1-second slices; so is the
 * floor: the same transactions with the event written by the emitter's INSERT, called directly,
 * into a table nobody reads (the least any outbox that writes the event in the transaction costs). A last phase
 * measures plain emits of one (source, type) while a transaction holding an event of that key
 * stays open.
 */
import { PgClient } from "@effect/sql-pg"
import { Effect, Layer, Redacted } from "effect"
import { SqlClient } from "effect/sql"
import type { EmitterOptions } from "../src/Config.ts"
import { outboxServices } from "../src/DurableEmitter.ts"
import { Emitter } from "../src/Emitter.ts"
import { outboxNames, outboxStatements } from "../src/store/pgOutbox.ts"
import { tables } from "../src/store/pgSchema.ts"
import * as PgStore from "../src/store/PgStore.ts"
import {
  adminClient,
  type BenchArgs,
  benchInput,
  bounded,
  cpuLine,
  cpuWindow,
  type CpuUse,
  databaseUrl,
  freshPrefix,
  int,
  latencyLine,
  perEvent,
  prepared,
  quietLogs,
  Reservoir,
  round,
  type ScenarioResult,
  since,
  summarize,
  withTables
} from "./common.ts"
import { ingestServer } from "./delivery.ts"
import { eventIdOf, grpcLayer, type OnAnswer, recorded, resolveOptions } from "./stack.ts"

/** Concurrent application transactions (each its own fiber, one transaction after another). */
export const concurrency = 32
/** The application's pool: the emitter shares it. */
export const poolSize = 10

const orders = (prefix: string) => `${prefix}_orders`

export const createOrders = (prefix: string) =>
  SqlClient.SqlClient.use((sql) =>
    sql.unsafe(`CREATE TABLE IF NOT EXISTS ${orders(prefix)} (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, amount integer NOT NULL, note text NOT NULL)`)
  ).pipe(Effect.provide(adminClient), Effect.orDie)

/**
 * The floor phase writes to a copy of the pending table nobody reads, with the emitter's own
 * statement: the pending table of the tables named `<prefix>_floor`.
 */
const floorTables = (prefix: string) => Effect.orDie(tables(`${prefix}_floor`))

export const dropOrders = (prefix: string) =>
  Effect.flatMap(floorTables(prefix), (floor) =>
    SqlClient.SqlClient.use((sql) => sql.unsafe(`DROP TABLE IF EXISTS ${orders(prefix)}, ${outboxNames(floor).pending}, ${prefix}_pending`))
  ).pipe(
    Effect.provide(adminClient),
    Effect.ignore
  )

/**
 * `concurrency` fibers running `transaction` back to back for `seconds`; answers commits per
 * second and the CPU each process used over the phase (`ingestPid`: the ingest server), and adds
 * each transaction's time to `latency`.
 */
export const transactionsFor = <E, R>(
  seconds: number,
  ingestPid: number,
  transaction: (i: number) => Effect.Effect<void, E, R>,
  latency = new Reservoir(100_000)
) =>
  Effect.gen(function*() {
    const cpu = cpuWindow({ "ingest server": ingestPid })
    let committed = 0
    let failed = 0
    let firstError: unknown
    const start = performance.now()
    const deadline = start + seconds * 1000
    yield* Effect.forEach(Array.from({ length: concurrency }, (_, f) => f), (f) =>
      Effect.gen(function*() {
        for (let i = 0; performance.now() < deadline; i++) {
          const s = performance.now()
          const exit = yield* Effect.exit(transaction(f * 1_000_000 + i))
          if (exit._tag === "Success") {
            committed++
            latency.add(performance.now() - s)
          } else {
            failed++
            firstError ??= exit.cause
          }
        }
      }), { concurrency: "unbounded", discard: true })
    const elapsed = since(start)
    return { committed, failed, firstError, elapsedMs: elapsed, perSecond: committed / (elapsed / 1000), cpu: cpu.end() }
  })

const note = "x".repeat(64)

/** The business row of one application transaction. */
export const insertOrder = (sql: SqlClient.SqlClient, prefix: string, i: number) =>
  sql.unsafe(`INSERT INTO ${orders(prefix)} (amount, note) VALUES ($1, $2)`, [i % 10_000, note])

/**
 * The application's pool and the emitter built on it (`layerFromClient`'s services), delivering
 * through the gRPC Transport with every answer seen by `onAnswer`.
 */
export const applicationStack = (options: EmitterOptions, onAnswer: OnAnswer, applicationName: string) =>
  outboxServices(options).pipe(
    Layer.provideMerge(PgStore.layerFromClient({ tablePrefix: options.tablePrefix, queryTimeout: options.commitTimeoutMs })),
    Layer.provide(recorded(grpcLayer(options), onAnswer)),
    Layer.provideMerge(PgClient.layer({ url: Redacted.make(databaseUrl), maxConnections: poolSize, applicationName }))
  )

type Phase = Effect.Success<ReturnType<typeof transactionsFor>>

/**
 * `seconds` of each kind, cut into rounds of one slice per kind: 1-second slices (half a second
 * with --quick, whose phases are short anyway).
 */
export const sliced = (seconds: number, quick: boolean) => {
  const rounds = Math.max(1, Math.round(seconds / (quick ? 0.5 : 1)))
  return { rounds, seconds: seconds / rounds }
}

/** CPU µs per transaction of each process (perEvent, a transaction being the event), averaged over phases. */
const cpuPerTransaction = (phases: ReadonlyArray<{ readonly cpu: CpuUse; readonly perSecond: number }>) => {
  const each = phases.map((p) => perEvent(p.cpu, p.perSecond))
  const mean = (key: string) => round(each.reduce((n, e) => n + ((e as Record<string, number>)[key] ?? 0), 0) / each.length, 0)
  const loop = round(phases.reduce((n, p) => n + p.cpu.eventLoopBusyPct, 0) / phases.length, 0)
  return { thisProcessUs: mean("thisProcessUs"), jsThreadUs: mean("jsThreadUs"), eventLoopBusyPct: loop, postgresUs: mean("postgresUs"), ingestServerUs: mean("ingestServerUs") }
}

export const run = (args: BenchArgs) => {
  const prefix = freshPrefix("outbox")
  const slices = sliced(args.seconds ?? (args.quick ? 3 : 10), args.quick)
  return withTables(prefix, Effect.scoped(Effect.gen(function*() {
    yield* createOrders(prefix)
    yield* Effect.addFinalizer(() => dropOrders(prefix))
    const server = yield* ingestServer(false)
    const options: EmitterOptions = yield* resolveOptions({ tablePrefix: prefix, ingestUrl: server.url }, args.options)

    // Commit → acknowledged, per event: the commit time is taken when withTransaction returns.
    const committedAt = new Map<string, number>()
    const commitToAck = new Reservoir(200_000)
    const acked = new Set<string>()
    let duplicates = 0
    const onAnswer = (events: ReadonlyArray<Uint8Array>, results: ReadonlyArray<{ _tag: string }>, _s: number, endedAt: number) => {
      for (let i = 0; i < events.length; i++) {
        if (results[i]?._tag !== "Delivered") continue
        const id = eventIdOf(events[i]!)
        if (id === undefined) continue
        if (acked.has(id)) duplicates++
        acked.add(id)
        const at = committedAt.get(id)
        if (at !== undefined) commitToAck.add(endedAt - at)
      }
    }

    const measured = yield* Effect.gen(function*() {
      const sql = yield* SqlClient.SqlClient
      const emitter = yield* Emitter
      const plain = (i: number) => sql.withTransaction(insertOrder(sql, prefix, i))
      // The floor: the same event prepared and written in the transaction with the emitter's own
      // INSERT, called directly, into a table nobody reads: nothing numbered, nothing sent. No
      // outbox that writes the event in the transaction can do better than this phase.
      const floor = yield* floorTables(prefix)
      yield* sql.unsafe(`CREATE TABLE ${outboxNames(floor).pending} (LIKE ${prefix}_pending INCLUDING ALL)`)
      const { insertPendingOne } = outboxStatements(floor)
      const insertEvent = (now: number) =>
        sql.unsafe(insertPendingOne.text, insertPendingOne.bind({ event: prepared(now), now }))
      const insertOnly = (i: number) => sql.withTransaction(Effect.andThen(insertOrder(sql, prefix, i), Effect.suspend(() => insertEvent(Date.now()))))
      const withEvent = (i: number) =>
        sql.withTransaction(Effect.gen(function*() {
          yield* insertOrder(sql, prefix, i)
          return yield* emitter.emitInTransaction(benchInput)
        })).pipe(Effect.map((receipt) => void committedAt.set(receipt.id, performance.now())))

      // Warm-up of both kinds, then the measured phases, alternating baseline and outbox twice.
      yield* transactionsFor(1, server.pid, plain)
      yield* transactionsFor(1, server.pid, withEvent)
      yield* bounded("flush after warm-up", 60_000, emitter.flush)
      committedAt.clear()
      commitToAck.clear()
      acked.clear()
      duplicates = 0

      const cpu = cpuWindow({ "ingest server": server.pid })
      // The three kinds take turns in short slices, so a machine whose speed drifts (these do:
      // consecutive 3-second phases of the same transactions differed by up to 1.6×) slows
      // them alike. Each outbox slice's deliveries are flushed before the next baseline slice:
      // the baseline must not share the machine with the previous slice's backlog.
      /** Transaction times of every outbox slice. */
      const outboxLatency = new Reservoir(100_000)
      const base: Array<Phase> = []
      const floorPhases: Array<Phase> = []
      const outbox: Array<Phase> = []
      for (let round = 0; round < slices.rounds; round++) {
        base.push(yield* transactionsFor(slices.seconds, server.pid, plain))
        floorPhases.push(yield* transactionsFor(slices.seconds, server.pid, insertOnly))
        outbox.push(yield* transactionsFor(slices.seconds, server.pid, withEvent, outboxLatency))
        yield* bounded("flush", 120_000, emitter.flush)
      }
      const cpuUse = cpu.end()

      // Plain emits of one key while a transaction holding an event of that key stays open.
      const blocked = new Reservoir(50_000)
      const held = sql.withTransaction(Effect.gen(function*() {
        yield* emitter.emitInTransaction(benchInput)
        yield* Effect.sleep(args.quick ? 1_000 : 3_000)
      }))
      const beside = Effect.gen(function*() {
        yield* Effect.sleep(50)
        const deadline = performance.now() + (args.quick ? 800 : 2_800)
        yield* Effect.forEach(Array.from({ length: 8 }), () =>
          Effect.gen(function*() {
            while (performance.now() < deadline) {
              const s = performance.now()
              yield* emitter.emit(benchInput)
              blocked.add(performance.now() - s)
            }
          }), { concurrency: "unbounded", discard: true })
      })
      yield* Effect.all([held, beside], { concurrency: 2, discard: true })
      yield* bounded("flush after the open transaction", 60_000, emitter.flush)
      return { base, floor: floorPhases, outbox, cpu: cpuUse, outboxLatency: summarize(outboxLatency.values), blocked: summarize(blocked.values), blockedCount: blocked.values.length }
    }).pipe(Effect.provide(applicationStack(options, onAnswer, "durable-emitter-bench-app")))

    /** Every slice of a kind together: its commits over its time. */
    const sum = (phases: ReadonlyArray<Phase>) =>
      phases.reduce((n, p) => n + p.committed, 0) / (phases.reduce((n, p) => n + p.elapsedMs, 0) / 1000)
    const spread = (phases: ReadonlyArray<Phase>) => {
      const rates = phases.map((p) => p.perSecond)
      return `${phases.length} slices of ${round(slices.seconds, 2)} s, ${int(Math.min(...rates))}–${int(Math.max(...rates))}`
    }
    const baselineTps = sum(measured.base)
    const outboxTps = sum(measured.outbox)
    const ratio = outboxTps / baselineTps
    const floorTps = sum(measured.floor)
    const floorRatio = floorTps / baselineTps
    const committedIds = [...committedAt.keys()]
    const lost = committedIds.filter((id) => !acked.has(id)).length
    const deliveredOfCommitted = committedIds.length - lost
    const latency = summarize(commitToAck.values)
    const baseCpu = cpuPerTransaction(measured.base)
    const outboxCpu = cpuPerTransaction(measured.outbox)
    const floorCpu = cpuPerTransaction(measured.floor)
    const cpuText = (c: ReturnType<typeof cpuPerTransaction>) =>
      `this process ${c.thisProcessUs} (JS thread ${c.jsThreadUs}, its event loop busy ${c.eventLoopBusyPct} %), PostgreSQL ${c.postgresUs}, ingest server ${c.ingestServerUs}`
    const phases = [...measured.base, ...measured.floor, ...measured.outbox]
    const failed = phases.reduce((n, p) => n + p.failed, 0)
    const firstError = phases.find((p) => p.firstError !== undefined)?.firstError
    const report = [
      `outbox: ${concurrency} concurrent transactions on a pool of ${poolSize}, each one business row + one ${benchInput.data instanceof Uint8Array ? benchInput.data.length : 0}-byte event (emitInTransaction) → ingest server (separate process)`,
      `  baseline (the same transactions without the event): ${int(baselineTps)} transactions/s (${spread(measured.base)})`,
      `  with the event: ${int(outboxTps)} transactions/s (${spread(measured.outbox)})`,
      `  the floor (the event written in the transaction by the emitter's INSERT called directly, nothing numbered or sent): ${int(floorTps)} transactions/s (${spread(measured.floor)}), ${round(floorRatio, 2)} of the baseline`,
      `  ratio: ${round(ratio, 2)} (target ≥ 0.6); ${round(outboxTps / floorTps, 2)} of the floor${failed > 0 ? `; ${failed} failed transactions: ${String(firstError)}` : ""}`,
      `  ${latencyLine("commit → ack", latency)} (target p99 ≤ 100 ms)`,
      `  ${latencyLine("transaction (with the event)", measured.outboxLatency)}`,
      `  ${latencyLine(`emit beside a transaction open on the same key (${measured.blockedCount} emits)`, measured.blocked)} (target p99 ≤ 10 ms)`,
      `  transactional events committed ${int(committedIds.length)}, delivered ${int(deliveredOfCommitted)} (by id); lost ${lost}, duplicates ${duplicates}`,
      `  ${cpuLine(measured.cpu)} (over the baseline, floor and outbox phases)`,
      `  CPU µs per transaction: baseline ${cpuText(baseCpu)}; the floor ${cpuText(floorCpu)}; with the event ${cpuText(outboxCpu)}`
    ]
    // Every committed event must arrive, and no transaction may fail (a failed phase would make its
    // rate, and so the ratios, meaningless). Duplicates are reported, not failed: delivery is at
    // least once, and a lease that lapses on a loaded machine re-sends.
    const failures = [
      ...(lost > 0 ? [`${lost} committed transactional events never delivered`] : []),
      ...(failed > 0 ? [`${failed} transactions failed: ${String(firstError)}`] : [])
    ]
    return {
      report,
      failures,
      json: {
        scenario: "outbox",
        transactionsPerSecond: round(outboxTps, 0),
        baselineTransactionsPerSecond: round(baselineTps, 0),
        ratio: round(ratio, 3),
        floorTransactionsPerSecond: round(floorTps, 0),
        floorRatio: round(floorRatio, 3),
        commitToAckP50Ms: round(latency.p50, 3),
        commitToAckP99Ms: round(latency.p99, 3),
        blockedEmitP50Ms: round(measured.blocked.p50, 3),
        blockedEmitP99Ms: round(measured.blocked.p99, 3),
        committed: committedIds.length,
        lost,
        duplicates,
        failedTransactions: failed,
        concurrency,
        poolSize,
        cpuPerTransaction: { baseline: baseCpu, floor: floorCpu, outbox: outboxCpu }
      }
    } satisfies ScenarioResult
  }))).pipe(Effect.provide(quietLogs))
}
