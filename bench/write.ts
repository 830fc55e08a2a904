/**
 * Scenario `write`: the write path (emit → group commit in PostgreSQL → receipt).
 *
 * Delivery is an in-process Transport that answers "delivered" at once (bench/stack.ts
 * `instantTransport`), so the only delivery cost left is the Publisher itself and the coalesced
 * DELETEs of acknowledged rows, as in production steady state (the table stays small).
 */
import { Effect, Metric, References } from "effect"
import { Emitter } from "../src/Emitter.ts"
import * as Metrics from "../src/Metrics.ts"
import * as baseline from "./baseline.ts"
import { baselineJson, baselineLines, bestWithin, insertGrid, ratiosOf, withinLine } from "./sweep.ts"
import {
  type BenchArgs,
  bounded,
  cpuLine,
  perEvent,
  perEventLine,
  freshPrefix,
  int,
  latencyLine,
  ms,
  quietLogs,
  round,
  type ScenarioResult,
  sweepSeconds,
  unrelatedPct,
  disturbed,
  withTables
} from "./common.ts"
import { closedLoop, openLoop } from "./load.ts"
import { benchName, emitterLayer, inMemoryLayer, instantTransport, metricsWindow, resolveOptions } from "./stack.ts"

/** Committed events the publisher could not take (left to the retransmitter), so far in this process. */
const spilled = Effect.map(Metric.value(Metric.withAttributes(Metrics.queueFull, { emitter: benchName })), (state) => state.count)

export const run = (args: BenchArgs) => {
  const prefix = freshPrefix("write")
  const seconds = args.seconds ?? (args.quick ? 1 : 5)
  const maxEvents = args.events ?? 1_000_000
  const offered = 5_000
  const baselineRows = args.quick ? 10_000 : 100_000
  const concurrencies = args.concurrency ?? [1, 10, 100]
  return withTables(prefix, Effect.gen(function*() {
    const options = yield* resolveOptions({ tablePrefix: prefix }, args.options)
    const base = yield* baseline.insertOnly(`${prefix}_baseline`, baselineRows)
    const sweep = yield* baseline.insertSweep(`${prefix}_sweep`, insertGrid(options), { seconds: sweepSeconds(args) })

    const measured = yield* Effect.gen(function*() {
      const emitter = yield* Emitter
      // Warm-up: JIT, prepared statements on every pooled connection, metric instruments.
      yield* closedLoop(emitter, { concurrency: 100, seconds: args.quick ? 1 : 3, maxEvents: 100_000 })
      yield* closedLoop(emitter, { concurrency: 1, seconds: 0.5, maxEvents: 1_000 })
      yield* bounded("flush after warm-up", 60_000, emitter.flush)

      const closed = []
      for (const concurrency of concurrencies) {
        const window = yield* metricsWindow
        const result = yield* closedLoop(emitter, { concurrency, seconds, maxEvents })
        closed.push({ ...result, internal: yield* window.end })
        yield* bounded("flush between phases", 60_000, emitter.flush)
      }
      const window = yield* metricsWindow
      const open = yield* openLoop(emitter, offered, seconds)
      const openInternal = yield* window.end
      return { closed, open, openInternal }
    }).pipe(Effect.provide(emitterLayer(options, instantTransport)))

    // The ceiling set by this process alone: the same emitter over the in-memory Store. There the
    // write path can outrun the publisher; what spills is counted instead of logged.
    const spilledBefore = yield* spilled
    const ceiling = yield* Effect.gen(function*() {
      const emitter = yield* Emitter
      yield* closedLoop(emitter, { concurrency: 100, seconds: 1, maxEvents: 100_000 })
      yield* bounded("flush after warm-up", 60_000, emitter.flush)
      return yield* closedLoop(emitter, { concurrency: 100, seconds, maxEvents })
    }).pipe(Effect.provide(inMemoryLayer(options, instantTransport)), Effect.provideService(References.MinimumLogLevel, "Error"))
    const ceilingSpilled = (yield* spilled) - spilledBefore

    const { closed, open, openInternal } = measured
    const by = Object.fromEntries(closed.map((c) => [c.concurrency, round(c.eventsPerSecond, 0)])) as Record<number, number>
    const at100 = closed.find((c) => c.concurrency === 100) ?? closed[closed.length - 1]!
    const { ratio, ratioSingleClient } = ratiosOf(at100.eventsPerSecond, sweep, base)
    const report = [
      `write: emit → committed in PostgreSQL (delivery: instant in-process transport; acked rows deleted)`,
      ...baselineLines(sweep, base, "inserted"),
      ...closed.map((c) =>
        `  ${String(c.concurrency).padStart(3)} emitters: ${int(c.eventsPerSecond)} events/s (${int(c.events)} in ${round(c.seconds, 1)} s` +
        `${c.errors > 0 ? `, ${c.errors} errors: ${c.firstError}` : ""}); ` +
        `commit batch mean ${round(c.internal.commitBatchMean, 1)}, commit mean ${round(c.internal.commitMeanMs, 2)} ms\n` +
        `      ${cpuLine(c.cpu)}; ${perEventLine(c.cpu, c.eventsPerSecond)}\n` +
        `      ${latencyLine("emit latency", c.latency)}`
      ),
      `  ratio at ${at100.concurrency} emitters: ${round(ratio, 2)} of the limit (target ≥ 0.7, ≥ 30 000 events/s); ${round(ratioSingleClient, 2)} of the single-client figure`,
      withinLine(sweep, at100.concurrency, at100.eventsPerSecond),
      `  ceiling of this process (same emitter, in-memory Store, 100 emitters): ${int(ceiling.eventsPerSecond)} events/s; ${cpuLine(ceiling.cpu)}` +
      (ceilingSpilled > 0 ? `; the publisher fell behind: ${int(ceilingSpilled)} events left to the retransmitter (publish queue full)` : ""),
      `  open loop ${int(open.offeredPerSecond)}/s offered for ${seconds} s (started ${int(open.startedPerSecond)}/s, max start lag ${round(open.maxStartLagMs, 1)} ms` +
      `${open.errors > 0 ? `, ${open.errors} errors: ${open.firstError}` : ""}); commit batch mean ${round(openInternal.commitBatchMean, 1)}`,
      `      ${latencyLine("emit latency", open.latency)} (target p99 ≤ 10 ms)`,
      `      ${latencyLine("from schedule", open.latencyFromSchedule)}`,
      `      event-loop delay: p50 ${ms(open.eventLoopDelay.p50)}, p99 ${ms(open.eventLoopDelay.p99)}, max ${ms(open.eventLoopDelay.max)}`,
      `      ${cpuLine(open.cpu)}`
    ]
    return {
      report,
      json: {
        scenario: "write",
        eventsPerSecond: round(at100.eventsPerSecond, 0),
        eventsPerSecondBy: by,
        ...baselineJson(at100.eventsPerSecond, sweep, base),
        ratioWithinInFlight: round(at100.eventsPerSecond / (bestWithin(sweep.points, at100.concurrency)?.rowsPerSecond ?? NaN), 3),
        emitP50Ms: round(open.latency.p50, 3),
        emitP99Ms: round(open.latency.p99, 3),
        emitP999Ms: round(open.latency.p999, 3),
        emitMaxMs: round(open.latency.max, 3),
        emitP99FromScheduleMs: round(open.latencyFromSchedule.p99, 3),
        eventLoopDelayP99Ms: round(open.eventLoopDelay.p99, 3),
        eventLoopDelayMaxMs: round(open.eventLoopDelay.max, 3),
        offeredPerSecond: offered,
        startedPerSecond: round(open.startedPerSecond, 0),
        errors: closed.reduce((n, c) => n + c.errors, open.errors),
        closedLoopP99MsBy: Object.fromEntries(closed.map((c) => [c.concurrency, round(c.latency.p99, 3)])),
        commitBatchMeanBy: Object.fromEntries(closed.map((c) => [c.concurrency, round(c.internal.commitBatchMean, 1)])),
        commitMeanMsBy: Object.fromEntries(closed.map((c) => [c.concurrency, round(c.internal.commitMeanMs, 2)])),
        processCpuPctBy: Object.fromEntries(closed.map((c) => [c.concurrency, c.cpu.processPct])),
        machineCpuPctBy: Object.fromEntries(closed.map((c) => [c.concurrency, c.cpu.machinePct])),
        postgresCpuPctBy: Object.fromEntries(closed.map((c) => [c.concurrency, c.cpu.postgresPct])),
        unrelatedCpuPctBy: Object.fromEntries(closed.map((c) => [c.concurrency, unrelatedPct(c.cpu)])),
        disturbed: closed.some((c) => disturbed(c.cpu)) || disturbed(open.cpu),
        inMemoryStoreEventsPerSecond: round(ceiling.eventsPerSecond, 0),
        inMemoryStoreSpilled: ceilingSpilled,
        cpuPerEventAt100: perEvent(at100.cpu, at100.eventsPerSecond),
        secondsPerPhase: seconds,
        transport: "instant in-process"
      }
    } satisfies ScenarioResult
  })).pipe(Effect.provide(quietLogs))
}
