/**
 * The demo's run inside a built emitter: producers emit at the offered rate, the ingest server
 * goes down for a while once 30 % are emitted, a monitor shows progress, and at the end the
 * table is drained and every receipt is checked (./verdict.ts).
 *
 * The fibers share one small `Tally` object: the producers write `next`, `receipts`, `failed` and
 * `failures`; the monitor writes the table figures; the outage writes its own fields. Each field
 * has one writer, and fibers run on one thread, so no step sees a half-written value.
 */
import { performance } from "node:perf_hooks"
import { Effect, Fiber, Metric } from "effect"
import { Emitter } from "../../Emitter.ts"
import * as Metrics from "../../Metrics.ts"
import { Store } from "../../Store.ts"
import * as Format from "../format.ts"
import { type LatencySummary, makeLatencies } from "./latency.ts"
import type { Progress } from "./progress.ts"
import { nextPeakBacklog, noBacklog, type PeakBacklog, verdict } from "./verdict.ts"
import { type DemoServer, poisonType } from "./workspace.ts"

export interface ScenarioSettings {
  readonly events: number
  readonly producers: number
  /** Offered load in events per second; 0: as fast as the producers can go. */
  readonly rate: number
  readonly outageMs: number
  readonly payloadBytes: number
  /** Every n-th event is one the demo's server rejects for good (dead letter); 0: none. */
  readonly poisonEvery: number
  readonly timeoutMs: number
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
  /** False when `peakBacklog` comes from the planner's estimate (a table too large to count), not a count. */
  readonly peakBacklogExact: boolean
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

/** What the fibers of a run know, each field written by one of them (see the header). */
interface Tally {
  next: number
  readonly receipts: Array<string>
  failed: number
  readonly failures: Map<string, number>
  backlog: number
  backlogExact: boolean
  deadLetters: number
  peakBacklog: PeakBacklog
  ingestDown: boolean
  /** Distinct events the demo's server has received, as last read. */
  receivedByServer: number
  outageEndedAt: number | undefined
  emittedAtOutageEnd: number
  caughtUpMs: number | undefined
}

const newTally = (): Tally => ({
  next: 0,
  receipts: [],
  failed: 0,
  failures: new Map(),
  backlog: 0,
  backlogExact: true,
  deadLetters: 0,
  peakBacklog: noBacklog,
  ingestDown: false,
  receivedByServer: 0,
  outageEndedAt: undefined,
  emittedAtOutageEnd: 0,
  caughtUpMs: undefined
})

const round = (n: number, digits = 2) => Math.round(n * 10 ** digits) / 10 ** digits

const mapLatency = (s: LatencySummary): LatencySummary => ({
  count: s.count,
  p50: round(s.p50),
  p95: round(s.p95),
  p99: round(s.p99),
  max: round(s.max)
})

export const runScenario = (
  settings: ScenarioSettings,
  server: DemoServer | undefined,
  onPostgres: boolean,
  progress: Progress
) =>
  Effect.gen(function*() {
    const emitter = yield* Emitter
    const store = yield* Store
    const latencies = makeLatencies(settings.events)
    const t = newTally()
    const startedAt = Date.now()

    const delivered = () => server !== undefined ? t.receivedByServer : Math.max(0, t.receipts.length - t.backlog - t.deadLetters)
    const readServer = server === undefined
      ? Effect.void
      : Effect.map(server.uniqueIds, (n) => {
        t.receivedByServer = n
      })

    const produce = (producer: number) =>
      Effect.gen(function*() {
        const data = new Uint8Array(settings.payloadBytes)
        for (let i = 0; i < data.length; i++) data[i] = (producer * 31 + i * 7) & 0xff
        // Four sources, as a service has a few: each (source, type) in a commit updates its own
        // counter row, and with a source per producer (192 keys) that took a third of the
        // embedded store's time (9 600–10 300 events/s, against 11 800–12 500 with these 12).
        const source = `demo/shop-${producer % 4}`
        while (t.next < settings.events) {
          const i = t.next++
          if (settings.rate > 0) {
            const wait = startedAt + (i * 1000) / settings.rate - Date.now()
            if (wait >= 1) yield* Effect.sleep(wait)
          }
          const poison = settings.poisonEvery > 0 && (i + 1) % settings.poisonEvery === 0
          const t0 = performance.now()
          yield* emitter.emit({ source, type: poison ? poisonType : types[i % types.length]!, data }).pipe(
            Effect.matchEffect({
              onSuccess: (receipt) =>
                Effect.sync(() => {
                  latencies.record(performance.now() - t0)
                  t.receipts.push(receipt.id)
                }),
              onFailure: (error) =>
                Effect.sync(() => {
                  t.failed++
                  t.failures.set(error._tag, (t.failures.get(error._tag) ?? 0) + 1)
                })
            })
          )
        }
      })

    const statusLine = () =>
      [
        `${((Date.now() - startedAt) / 1000).toFixed(1).padStart(5)}s`,
        `emitted ${Format.integer(t.receipts.length)}/${Format.integer(settings.events)}`,
        `delivered ${Format.integer(delivered())}`,
        `backlog ${t.backlogExact ? "" : "~"}${Format.integer(t.backlog)}`,
        `dead letters ${Format.integer(t.deadLetters)}`,
        ...(server === undefined ? [] : [`ingest ${t.ingestDown ? "DOWN" : "up"}`])
      ].join("  ")

    const readTable = Effect.gen(function*() {
      const stats = yield* store.stats
      t.backlog = stats.backlog
      t.backlogExact = stats.exact
      t.deadLetters = stats.deadLetters
      t.peakBacklog = nextPeakBacklog(t.peakBacklog, stats, { committed: t.receipts.length, producers: settings.producers })
    })

    const noteCaughtUp = Effect.sync(() => {
      if (t.outageEndedAt !== undefined && t.caughtUpMs === undefined && delivered() + t.deadLetters >= t.emittedAtOutageEnd) {
        t.caughtUpMs = Date.now() - t.outageEndedAt
      }
    })

    // The status line every 250 ms, the table's stats every 4th line: on the embedded store the
    // stats statement shares the one connection with the commits (at 4 a second it took a fifth
    // of PGlite's time in a burst, slowing the very thing the demo measures).
    const readTableEvery = 4
    let tick = 0
    const monitor = Effect.suspend(() => tick++ % readTableEvery === 0 ? Effect.ignore(readTable) : Effect.void).pipe(
      Effect.andThen(Effect.ignore(readServer)),
      Effect.andThen(noteCaughtUp),
      Effect.andThen(Effect.sync(() => progress.update(statusLine()))),
      Effect.andThen(Effect.sleep(250)),
      Effect.forever
    )

    const outage = Effect.gen(function*() {
      if (server === undefined || settings.outageMs <= 0) return
      while (t.receipts.length + t.failed < settings.events * 0.3) yield* Effect.sleep(10)
      yield* server.down
      t.ingestDown = true
      progress.note(
        `ingest outage: the server refuses connections for ${Format.millis(settings.outageMs)}; emits still commit, delivery waits and retries`
      )
      yield* Effect.sleep(settings.outageMs)
      yield* server.up
      t.ingestDown = false
      t.outageEndedAt = Date.now()
      t.emittedAtOutageEnd = t.receipts.length
      progress.note(`ingest back up after ${Format.millis(settings.outageMs)}: the backlog drains`)
    })

    const monitorFiber = yield* Effect.forkChild(monitor)
    const outageFiber = yield* Effect.forkChild(outage)
    yield* Effect.forEach(Array.from({ length: settings.producers }, (_, p) => p), produce, { concurrency: "unbounded", discard: true })
    const emittedAt = Date.now()
    yield* Fiber.join(outageFiber)
    progress.note(
      `${Format.integer(t.receipts.length)} events committed in ${Format.millis(emittedAt - startedAt)}` +
        `${t.failed > 0 ? ` (${Format.integer(t.failed)} emits failed)` : ""}; waiting for delivery`
    )

    // ---- wait until everything is delivered or dead-lettered: flush, then the table empty
    const deadline = Date.now() + settings.timeoutMs
    yield* emitter.flush.pipe(Effect.timeoutOption(settings.timeoutMs))
    let remaining = -1
    while (true) {
      yield* readTable.pipe(Effect.ignore)
      remaining = t.backlogExact ? t.backlog : (yield* store.countBySourceType).reduce((sum, c) => sum + c.count, 0)
      if (remaining === 0 || Date.now() >= deadline) break
      yield* Effect.sleep(100)
    }
    const drainedAt = Date.now()
    // Why delivery failed, when it did (e.g. connect ECONNREFUSED): the summary names the cause.
    const lastDeliveryError = remaining > 0 ? (yield* emitter.health).transport.lastError : undefined
    yield* Fiber.interrupt(monitorFiber)

    const deadLettered = new Set((yield* store.listDeadLetters({ since: startedAt - 1_000 })).map((d) => d.eventId))
    const received = server === undefined ? undefined : yield* server.received
    if (received !== undefined) t.receivedByServer = received.ids.size
    progress.update(statusLine())
    progress.done()
    const v = verdict({ receipts: t.receipts, received: received?.ids, deadLettered, remaining })
    const elapsedMs = drainedAt - startedAt
    const counters = yield* Metric.snapshot
    const total = (metric: Metric.Counter<number>) =>
      counters.reduce((sum, m) => (m.id === metric.id && m.type === "Counter" ? sum + Number(m.state.count) : sum), 0)
    const result: DemoResult = {
      store: onPostgres ? "postgres" : "pglite",
      events: settings.events,
      producers: settings.producers,
      emitted: t.receipts.length,
      failedEmits: t.failed,
      delivered: v.delivered,
      duplicates: received === undefined ? null : received.duplicates,
      deadLettered: v.deadLettered,
      lost: v.lost,
      pending: remaining,
      eventsPerSecond: Math.round(v.delivered / Math.max(0.001, elapsedMs / 1000)),
      emitLatencyMs: mapLatency(latencies.summary()),
      outageMs: server === undefined ? 0 : settings.outageMs,
      peakBacklog: t.peakBacklog.rows,
      peakBacklogExact: t.peakBacklog.exact,
      retransmitted: total(Metrics.retransmitted),
      leftToRetransmitter: total(Metrics.queueFull),
      publishRetries: total(Metrics.retries),
      elapsedMs,
      verifiedBy: server === undefined ? "emitter" : "ingest-server"
    }
    return { result, emitMs: emittedAt - startedAt, caughtUpMs: t.caughtUpMs, failures: t.failures, lastDeliveryError }
  })
