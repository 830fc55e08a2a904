/**
 * Scenario `e2e`: 100 concurrent emitters, each event committed to PostgreSQL, published over gRPC
 * to the reference ingest server in a separate process, acknowledged, and its row deleted.
 * Timed from the first emit until the events table is empty.
 */
import { Effect } from "effect"
import { Emitter } from "../src/Emitter.ts"
import * as baseline from "./baseline.ts"
import { baselineJson, baselineLines, bestWithin, insertDeleteGrid, ratiosOf, withinLine } from "./sweep.ts"
import {
  type BenchArgs,
  benchInput,
  data,
  bounded,
  cpuLine,
  perEvent,
  perEventLine,
  cpuWindow,
  eventLoopDelayWindow,
  freshPrefix,
  int,
  latencyLine,
  peakRssOf,
  quietLogs,
  round,
  sampleMemory,
  type ScenarioResult,
  sweepSeconds,
  unrelatedPct,
  disturbed,
  since,
  summarize,
  withTables
} from "./common.ts"
import { awaitEmptyTable, ingestServer, makeRecorder, tableRows, verifyDelivery } from "./delivery.ts"
import { closedLoop } from "./load.ts"
import { type Emitted, failures, verificationJson, verificationLines } from "./verify.ts"
import { emitterLayer, grpcLayer, metricsWindow, recorded, resolveOptions } from "./stack.ts"

const concurrency = 100

export const run = (args: BenchArgs) => {
  const prefix = freshPrefix("e2e")
  const events = args.events ?? (args.quick ? 10_000 : 100_000)
  const warmup = args.quick ? 3_000 : 10_000
  return withTables(prefix, Effect.scoped(Effect.gen(function*() {
    const server = yield* ingestServer(args.verifyAll)
    const options = yield* resolveOptions({ tablePrefix: prefix, ingestUrl: server.url }, args.options)
    const base = yield* baseline.insertDelete(`${prefix}_baseline`, events)
    const sweep = yield* baseline.insertDeleteSweep(`${prefix}_sweep`, insertDeleteGrid(options), { seconds: sweepSeconds(args) })
    const recorder = makeRecorder()

    const measured = yield* Effect.gen(function*() {
      const emitter = yield* Emitter
      yield* closedLoop(emitter, { concurrency, seconds: 60, maxEvents: warmup })
      yield* bounded("flush after warm-up", 60_000, emitter.flush)
      yield* awaitEmptyTable(prefix, 20, 30_000)
      yield* Effect.promise(() => server.clear())
      recorder.reset()

      const memory = sampleMemory()
      const cpu = cpuWindow({ "ingest server": server.pid })
      const window = yield* metricsWindow
      const loopDelay = eventLoopDelayWindow()
      const start = performance.now()
      const emitted = yield* closedLoop(emitter, { concurrency, seconds: 300, maxEvents: events, onReceipt: recorder.onReceipt })
      const emittedMs = since(start)
      yield* bounded("flush", 120_000, emitter.flush)
      yield* awaitEmptyTable(prefix, 10, 120_000)
      const elapsed = since(start)
      return { eventLoopDelay: loopDelay.end(), emitted, emittedMs, elapsed, internal: yield* window.end, memory: memory.stop(), cpu: cpu.end() }
    }).pipe(Effect.provide(emitterLayer(options, recorded(grpcLayer(options), recorder.onAnswer, recorder.onFailure))))

    const stats = yield* Effect.promise(() => server.stats())
    const serverPeakRssMb = peakRssOf(server.pid)
    const left = yield* tableRows(prefix)
    const seen = recorder.snapshot()
    const { cpu, elapsed, eventLoopDelay, emitted, emittedMs, internal, memory } = measured
    const eventsPerSecond = emitted.events / (elapsed / 1000)
    const { ratio, ratioSingleClient } = ratiosOf(eventsPerSecond, sweep, base)
    const uniqueIds = stats.uniqueIds ?? stats.events
    const receipts = recorder.receipts()
    const emittedById = new Map<string, Emitted>()
    for (let i = 0; i < receipts.ids.length; i++) {
      emittedById.set(receipts.ids[i]!, { source: benchInput.source, type: benchInput.type, seq: receipts.seqs[i], data })
    }
    const verification = yield* verifyDelivery(server, args.verifyAll, emittedById, stats.duplicates ?? 0, receipts.unacknowledged)
    const receiptToAck = summarize(seen.receiptToAckMs)
    const emitToAck = summarize(seen.emitToAckMs)
    const request = summarize(seen.requestMs)
    const report = [
      `e2e: ${concurrency} emitters → PostgreSQL → gRPC → ingest server (separate process, pid ${server.pid}) → ack → delete`,
      ...baselineLines(sweep, base, "inserted and deleted by id"),
      `  ${int(emitted.events)} events in ${round(elapsed / 1000, 2)} s: ${int(eventsPerSecond)} events/s end to end` +
      ` (emits done after ${round(emittedMs / 1000, 2)} s: ${int(emitted.eventsPerSecond)} emits/s` +
      `${emitted.errors > 0 ? `; ${emitted.errors} emit errors: ${emitted.firstError}` : ""})`,
      `  ratio: ${round(ratio, 2)} of the limit (targets ≥ 0.5, ≥ 20 000 events/s); ${round(ratioSingleClient, 2)} of the single-client figure`,
      withinLine(sweep, concurrency, eventsPerSecond),
      `  ingest server: ${int(stats.events)} events in ${int(stats.requests)} requests, ${int(uniqueIds)} unique; rows left ${left}`,
      ...verificationLines(verification),
      `  commit batch mean ${round(internal.commitBatchMean, 1)} (${int(internal.commits)} commits, mean ${round(internal.commitMeanMs, 2)} ms);` +
      ` request mean ${round(internal.requestEventsMean, 1)} events (${int(internal.requests)} requests)`,
      `  ${latencyLine("publish (receipt → ack, 1/16 of events)", receiptToAck)}`,
      `  ${latencyLine("emit start → ack", emitToAck)}`,
      `  ${latencyLine("PublishBatch request", request)}`,
      `  ${latencyLine("emit (call → receipt)", emitted.latency)}`,
      `  event-loop delay: p50 ${round(eventLoopDelay.p50, 2)} ms, p99 ${round(eventLoopDelay.p99, 2)} ms, max ${round(eventLoopDelay.max, 2)} ms`,
      `  ${cpuLine(cpu)}`,
      `  ${perEventLine(cpu, eventsPerSecond)}`,
      `  memory: peak RSS ${memory.peakRssMb} MB, peak heap used ${memory.peakHeapUsedMb} MB (at the start: RSS ${memory.startRssMb} MB, heap ${memory.startHeapUsedMb} MB; heap at the end ${memory.endHeapUsedMb} MB); ingest server peak RSS ${serverPeakRssMb} MB`
    ]
    return {
      report,
      json: {
        scenario: "e2e",
        eventsPerSecond: round(eventsPerSecond, 0),
        ...baselineJson(eventsPerSecond, sweep, base),
        ratioWithinInFlight: round(eventsPerSecond / (bestWithin(sweep.points, concurrency)?.rowsPerSecond ?? NaN), 3),
        publishP50Ms: round(receiptToAck.p50, 3),
        publishP99Ms: round(receiptToAck.p99, 3),
        publishLatency: "receipt to delivery acknowledged, per event (1 in 16 sampled)",
        emitToAckP50Ms: round(emitToAck.p50, 3),
        emitToAckP99Ms: round(emitToAck.p99, 3),
        requestP50Ms: round(request.p50, 3),
        requestP99Ms: round(request.p99, 3),
        emitP50Ms: round(emitted.latency.p50, 3),
        emitP99Ms: round(emitted.latency.p99, 3),
        ...verificationJson(verification),
        rowsLeft: left,
        events: emitted.events,
        emitErrors: emitted.errors,
        seconds: round(elapsed / 1000, 3),
        commitBatchMean: round(internal.commitBatchMean, 1),
        commitMeanMs: round(internal.commitMeanMs, 2),
        requestEventsMean: round(internal.requestEventsMean, 1),
        eventLoopDelayP50Ms: round(eventLoopDelay.p50, 3),
        eventLoopDelayP99Ms: round(eventLoopDelay.p99, 3),
        processCpuPct: cpu.processPct,
        machineCpuPct: cpu.machinePct,
        postgresCpuPct: cpu.postgresPct,
        ingestServerCpuPct: cpu.othersPct["ingest server"],
        unrelatedCpuPct: unrelatedPct(cpu),
        stealPct: cpu.stealPct,
        disturbed: disturbed(cpu),
        cpuPerEvent: perEvent(cpu, eventsPerSecond),
        peakRssMb: memory.peakRssMb,
        peakHeapUsedMb: memory.peakHeapUsedMb,
        ingestServerPeakRssMb: serverPeakRssMb
      },
      failures: failures(verification)
    } satisfies ScenarioResult
  }))).pipe(Effect.provide(quietLogs))
}
