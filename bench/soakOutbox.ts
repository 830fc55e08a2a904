/**
 * Scenario `soak-outbox`: the transactional outbox for N minutes (`--minutes`, default 5): 32
 * concurrent application transactions, each one business row and one event written with
 * `emitInTransaction`, on a pool of 10 the emitter shares, delivered to the reference ingest
 * server in its own process. Reported per minute: transactions per second, commit → ack p50/p99
 * (1 in 16 events, chosen by id), the events table's and the pending table's bytes and dead
 * rows. What it checks is flatness with autovacuum off: the same rate and latency in the last
 * minute as in the first, and neither table growing (the pending table churns as fast as the
 * transactions commit; the emitter vacuums it, see src/Outbox.ts).
 */
import { Effect } from "effect"
import { SqlClient } from "effect/sql"
import { Emitter } from "../src/Emitter.ts"
import { makeIngestServerProcess } from "../src/testing/IngestServerProcess.ts"
import {
  adminClient,
  type BenchArgs,
  benchInput,
  bounded,
  cpuWindow,
  freshPrefix,
  int,
  mb,
  perEvent,
  peakRssOf,
  quietLogs,
  round,
  type ScenarioResult,
  withTables
} from "./common.ts"
import { sampledId } from "./delivery.ts"
import { applicationStack, concurrency, createOrders, dropOrders, insertOrder, poolSize, transactionsFor } from "./outbox.ts"
import { makeMinutes, tableProbe, windowed } from "./soak.ts"
import { eventIdOf, type OnAnswer, resolveOptions } from "./stack.ts"

const pendingProbe = (prefix: string) =>
  SqlClient.SqlClient.use((sql) =>
    sql.unsafe(`SELECT pg_total_relation_size('${prefix}_pending')::int8, pg_stat_get_dead_tuples('${prefix}_pending'::regclass)::int8`).values
  ).pipe(Effect.map((rows) => ({ bytes: Number(rows[0]?.[0] ?? 0), dead: Number(rows[0]?.[1] ?? 0) })))

export const run = (args: BenchArgs) => {
  const minutes = args.minutes ?? 5
  const windows = Math.max(1, Math.ceil(minutes))
  const windowMs = (minutes * 60_000) / windows
  const prefix = freshPrefix("soakob")
  return withTables(prefix, Effect.scoped(Effect.gen(function*() {
    yield* createOrders(prefix)
    yield* Effect.addFinalizer(() => dropOrders(prefix))
    const server = yield* makeIngestServerProcess({ record: "seqnums" })
    const options = yield* resolveOptions({ tablePrefix: prefix, ingestUrl: server.url }, args.options)
    const minutesLog = makeMinutes()
    const pendingMax = { bytes: 0, dead: 0 }
    const pendingPerMinute: Array<{ bytes: number; dead: number }> = []
    /** The CPU each process spent per transaction, minute by minute: a slower minute says whose. */
    const cpuPerMinute: Array<ReturnType<typeof perEvent>> = []
    const stealPerMinute: Array<number> = []
    const committedAt = new Map<string, number>()
    const onAnswer: OnAnswer = (events, results, _startedAt, endedAt) => {
      let delivered = 0
      for (let i = 0; i < events.length; i++) {
        if (results[i]?._tag !== "Delivered") continue
        delivered++
        const id = eventIdOf(events[i]!)
        const at = id === undefined ? undefined : committedAt.get(id)
        if (at !== undefined) {
          minutesLog.onEmitToAck(endedAt - at)
          committedAt.delete(id!)
        }
      }
      minutesLog.onDelivered(delivered)
    }

    const measured = yield* Effect.gen(function*() {
      const sql = yield* SqlClient.SqlClient
      const emitter = yield* Emitter
      const transaction = (i: number) =>
        sql.withTransaction(Effect.andThen(insertOrder(sql, prefix, i), emitter.emitInTransaction(benchInput))).pipe(Effect.map((receipt) => {
          // 1 in 16 by id: their commit times are kept until their ack.
          if (sampledId(receipt.id)) committedAt.set(receipt.id, performance.now())
        }))

      yield* transactionsFor(3, server.pid, transaction)
      yield* bounded("flush after warm-up", 60_000, emitter.flush)
      yield* Effect.promise(() => server.clear())
      committedAt.clear()
      minutesLog.close()
      minutesLog.done.length = 0

      const start = performance.now()
      let cpu = cpuWindow({ "ingest server": server.pid })
      const sample = Effect.gen(function*() {
        const table = yield* tableProbe(prefix).pipe(Effect.provide(adminClient))
        minutesLog.onTable(table.bytes, table.dead)
        const pending = yield* pendingProbe(prefix).pipe(Effect.provide(adminClient))
        pendingMax.bytes = Math.max(pendingMax.bytes, pending.bytes)
        pendingMax.dead = Math.max(pendingMax.dead, pending.dead)
      })
      const endMinute = () =>
        Effect.sync(() => {
          minutesLog.close()
          const used = cpu.end()
          cpu = cpuWindow({ "ingest server": server.pid })
          pendingPerMinute.push({ ...pendingMax })
          pendingMax.bytes = pendingMax.dead = 0
          const m = minutesLog.done[minutesLog.done.length - 1]!
          const p = pendingPerMinute[pendingPerMinute.length - 1]!
          const us = perEvent(used, m.eventsPerSecond)
          cpuPerMinute.push(us)
          stealPerMinute.push(used.stealPct)
          console.log(
            `  minute ${m.minute}: ${int(m.eventsPerSecond)} transactions/s, commit → ack p50 ${m.emitToAckP50Ms} ms p99 ${m.emitToAckP99Ms} ms,` +
              ` events table ${mb(m.tableBytesMax)} MB (dead rows ${int(m.deadTuplesMax)}), pending table ${mb(p.bytes)} MB (dead rows ${int(p.dead)}),` +
              ` CPU µs per transaction: JS thread ${us.jsThreadUs}, PostgreSQL ${us.postgresUs}, ingest server ${(us as Record<string, number>).ingestServerUs ?? 0}; machine ${used.machinePct} % busy, ${used.stealPct} % stolen by the hypervisor`
          )
        })
      const sampler = windowed(start, windows, windowMs, sample, endMinute)
      const [phase] = yield* Effect.all([transactionsFor(minutes * 60, server.pid, transaction), sampler], { concurrency: "unbounded" })
      yield* bounded("flush", 120_000, emitter.flush)
      return phase
    }).pipe(Effect.provide(applicationStack(options, onAnswer, "durable-emitter-soak-app")))

    const stats = yield* Effect.promise(() => server.stats())
    const unique = stats.uniqueIds ?? stats.events
    const duplicates = stats.duplicates ?? 0
    const lost = Math.max(0, measured.committed - unique)
    const perMinute = minutesLog.done.map((m, i) => ({
      minute: m.minute,
      transactionsPerSecond: m.eventsPerSecond,
      commitToAckP50Ms: m.emitToAckP50Ms,
      commitToAckP99Ms: m.emitToAckP99Ms,
      eventsTableBytesMax: m.tableBytesMax,
      eventsDeadTuplesMax: m.deadTuplesMax,
      pendingTableBytesMax: pendingPerMinute[i]?.bytes ?? 0,
      pendingDeadTuplesMax: pendingPerMinute[i]?.dead ?? 0,
      cpuPerTransaction: cpuPerMinute[i],
      stealPct: stealPerMinute[i]
    }))
    const first = perMinute[0]!
    const last = perMinute[perMinute.length - 1]!
    const rate = measured.perSecond
    const maxP99 = Math.max(...perMinute.map((m) => m.commitToAckP99Ms))
    const pendingPeak = Math.max(...perMinute.map((m) => m.pendingTableBytesMax))
    const eventsPeak = Math.max(...perMinute.map((m) => m.eventsTableBytesMax))
    const report = [
      `soak-outbox: ${concurrency} transactions (one business row + one event, emitInTransaction) on a pool of ${poolSize} → gRPC → ingest server (pid ${server.pid}), ${round(minutes, 2)} min`,
      `  ${int(measured.committed)} transactions: ${int(rate)}/s; first minute ${int(first.transactionsPerSecond)}/s, last ${int(last.transactionsPerSecond)}/s` +
        ` (last/first ${round(last.transactionsPerSecond / first.transactionsPerSecond, 2)}, target ≥ 0.9)` +
        `${measured.failed > 0 ? `; ${measured.failed} failed transactions: ${String(measured.firstError)}` : ""}`,
      `  commit → ack p99, worst minute: ${maxP99} ms (target ≤ 100); events table peak ${mb(eventsPeak)} MB, pending table peak ${mb(pendingPeak)} MB`,
      `  ingest server: ${int(stats.events)} events, ${int(unique)} unique; duplicates ${duplicates}, lost ${lost}; peak RSS ${peakRssOf(server.pid)} MB`
    ]
    const failures = [
      ...(lost > 0 ? [`${lost} committed transactional events never delivered`] : []),
      ...(measured.failed > 0 ? [`${measured.failed} transactions failed: ${String(measured.firstError)}`] : [])
    ]
    return {
      report,
      failures,
      json: {
        scenario: "soak-outbox",
        minutes: round(minutes, 3),
        transactionsPerSecond: round(rate, 0),
        firstMinuteTransactionsPerSecond: first.transactionsPerSecond,
        lastMinuteTransactionsPerSecond: last.transactionsPerSecond,
        maxMinuteCommitToAckP99Ms: maxP99,
        eventsTableBytesMax: eventsPeak,
        pendingTableBytesMax: pendingPeak,
        committed: measured.committed,
        lost,
        duplicates,
        failedTransactions: measured.failed,
        perMinute
      }
    } satisfies ScenarioResult
  }))).pipe(Effect.provide(quietLogs))
}
