/**
 * Scenario `drain`: a backlog as after an ingest outage. 100 000 rows are written through the
 * Store's `append` with a first lease already past (they are due), then the emitter starts with
 * the ingest server up and the retransmitter on; timed from the start until the table is empty.
 */
import { Effect, Layer } from "effect"
import { Emitter } from "../src/Emitter.ts"
import { Store } from "../src/Store.ts"
import * as baseline from "./baseline.ts"
import { baselineJson, baselineLines, drainGrid, ratiosOf } from "./sweep.ts"
import {
  type BenchArgs,
  benchInput,
  data,
  cpuLine,
  perEvent,
  perEventLine,
  cpuWindow,
  freshPrefix,
  int,
  latencyLine,
  peakRssOf,
  prepared,
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
import { type Emitted, failures, verificationJson, verificationLines } from "./verify.ts"
import { emitterLayer, grpcLayer, metricsWindow, recorded, resolveOptions, storeLayer } from "./stack.ts"

/** Rows per `append` while building the backlog. */
const appendBatch = 1_000

export const run = (args: BenchArgs) => {
  const prefix = freshPrefix("drain")
  const backlog = args.events ?? (args.quick ? 10_000 : 100_000)
  return withTables(prefix, Effect.scoped(Effect.gen(function*() {
    const server = yield* ingestServer(args.verifyAll)
    const options = yield* resolveOptions({
      tablePrefix: prefix,
      ingestUrl: server.url,
      retransmit: true,
      retransmitInterval: 100
    }, args.options)
    const base = yield* baseline.drain(`${prefix}_baseline`, backlog)
    const sweep = yield* baseline.drainSweep(`${prefix}_sweep`, backlog, drainGrid(options), { seconds: sweepSeconds(args) })

    // The outage's leftovers: real encoded events, due since a second ago.
    const setupStart = performance.now()
    const emittedById = new Map<string, Emitted>()
    yield* Effect.gen(function*() {
      const store = yield* Store
      for (let written = 0; written < backlog; written += appendBatch) {
        const now = Date.now()
        const events = Array.from({ length: Math.min(appendBatch, backlog - written) }, () => prepared(now))
        for (const row of yield* store.append(events, { now, nextAttemptAt: now - 1_000 })) {
          emittedById.set(row.eventId, { source: benchInput.source, type: benchInput.type, seq: row.seq, data })
        }
      }
    }).pipe(Effect.provide(storeLayer(options)))
    const setupMs = since(setupStart)
    const before = yield* tableRows(prefix)

    const recorder = makeRecorder()
    const memory = sampleMemory()
    const cpu = cpuWindow({ "ingest server": server.pid })
    const start = performance.now()
    const measured = yield* Effect.gen(function*() {
      yield* Emitter
      const readyMs = since(start)
      const window = yield* metricsWindow
      yield* awaitEmptyTable(prefix, 20, 300_000)
      // Read before the emitter's connections close: their PostgreSQL backends go with them.
      const used = cpu.end()
      return { readyMs, elapsed: since(start), internal: yield* window.end, used }
    }).pipe(Effect.provide(emitterLayer(options, recorded(grpcLayer(options), recorder.onAnswer, recorder.onFailure)).pipe(Layer.fresh)))
    const mem = memory.stop()

    const stats = yield* Effect.promise(() => server.stats())
    const serverPeakRssMb = peakRssOf(server.pid)
    const left = yield* tableRows(prefix)
    const seen = recorder.snapshot()
    const { elapsed, internal, readyMs, used } = measured
    const eventsPerSecond = before / (elapsed / 1000)
    const { ratio, ratioSingleClient } = ratiosOf(eventsPerSecond, sweep, base)
    const uniqueIds = stats.uniqueIds ?? stats.events
    const verification = yield* verifyDelivery(server, args.verifyAll, emittedById, stats.duplicates ?? 0, recorder.receipts().unacknowledged)
    const request = summarize(seen.requestMs)
    const report = [
      `drain: ${int(before)}-row backlog (written by Store.append in ${round(setupMs / 1000, 1)} s, already due) → retransmitter → gRPC → ack → delete`,
      ...baselineLines(sweep, base, "read with payloads and deleted"),
      `  drained in ${round(elapsed / 1000, 2)} s (emitter ready after ${round(readyMs, 0)} ms): ${int(eventsPerSecond)} events/s (target ≥ 10 000)`,
      `  ratio: ${round(ratio, 2)} of the limit (target ≥ 0.5); ${round(ratioSingleClient, 2)} of the single-client figure`,
      `  ingest server: ${int(stats.events)} events in ${int(stats.requests)} requests, ${int(uniqueIds)} unique; rows left ${left}`,
      ...verificationLines(verification),
      `  request mean ${round(internal.requestEventsMean, 1)} events (${int(internal.requests)} requests); ${latencyLine("PublishBatch request", request)}`,
      `  ${cpuLine(used)}`,
      `  ${perEventLine(used, eventsPerSecond)}`,
      `  memory: peak RSS ${mem.peakRssMb} MB, peak heap used ${mem.peakHeapUsedMb} MB (at the start: RSS ${mem.startRssMb} MB, heap ${mem.startHeapUsedMb} MB; heap at the end ${mem.endHeapUsedMb} MB); ingest server peak RSS ${serverPeakRssMb} MB`
    ]
    return {
      report,
      json: {
        scenario: "drain",
        eventsPerSecond: round(eventsPerSecond, 0),
        backlog: before,
        ...baselineJson(eventsPerSecond, sweep, base),
        seconds: round(elapsed / 1000, 3),
        readyMs: round(readyMs, 0),
        ...verificationJson(verification),
        rowsLeft: left,
        requestEventsMean: round(internal.requestEventsMean, 1),
        requestP50Ms: round(request.p50, 3),
        requestP99Ms: round(request.p99, 3),
        processCpuPct: used.processPct,
        machineCpuPct: used.machinePct,
        postgresCpuPct: used.postgresPct,
        ingestServerCpuPct: used.othersPct["ingest server"],
        unrelatedCpuPct: unrelatedPct(used),
        stealPct: used.stealPct,
        disturbed: disturbed(used),
        cpuPerEvent: perEvent(used, eventsPerSecond),
        peakRssMb: mem.peakRssMb,
        peakHeapUsedMb: mem.peakHeapUsedMb,
        ingestServerPeakRssMb: serverPeakRssMb
      },
      failures: failures(verification)
    } satisfies ScenarioResult
  }))).pipe(Effect.provide(quietLogs))
}
