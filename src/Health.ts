/**
 * Health and table statistics. A stats loop reads `Store.stats` every `statsInterval` and feeds the
 * gauges (backlog, payload bytes, the events table's size and dead tuples, …); `report` judges the loops, the transport, and the backlog against the TTL:
 * - unhealthy: a loop stuck or failing repeatedly, the ingest service refusing our configuration,
 *   or the oldest row within 10 % of its TTL (events about to expire);
 * - degraded: the ingest service failing, the oldest row past half its TTL, a queue nearly full,
 *   the events table larger than `maxTableBytes` (unhealthy past twice it: the store is not
 *   keeping up with its own churn, or rows pile up that nobody delivers);
 * - healthy otherwise.
 */
import { Clock, Context, Effect, Layer, Metric, Option } from "effect"
import type { EmitterOptions } from "./Config.ts"
import { Liveness, type LoopState, runLoop } from "./Liveness.ts"
import * as Metrics from "./Metrics.ts"
import { Publisher } from "./Publisher.ts"
import type { TransportState } from "./publisher/TransportHealth.ts"
import { Sequencer } from "./Sequencer.ts"
import { Store, type StoreStats } from "./Store.ts"

export type HealthStatus = "healthy" | "degraded" | "unhealthy"

export interface HealthReport {
  readonly status: HealthStatus
  /** Why the status is not healthy (empty when healthy). */
  readonly reasons: ReadonlyArray<string>
  readonly checkedAt: number
  readonly loops: Readonly<Record<string, LoopState>>
  readonly transport: TransportState
  readonly writeQueue: number
  readonly publishQueue: number
  /** Accepted by the publisher and not yet resolved. */
  readonly inFlight: number
  /** From the last stats read (undefined before the first one). */
  readonly table: StoreStats | undefined
  readonly oldestAgeMs: number | undefined
  readonly ttlMs: number
}

export type HealthOptions = Pick<
  EmitterOptions,
  "ttlMs" | "statsIntervalMs" | "writeQueueCapacity" | "publishQueueCapacity" | "maxTableBytes"
>

/** What the events table's size says: degraded past the bound, unhealthy past twice it. */
export const storageVerdict = (
  tableBytes: number,
  maxTableBytes: number
): { readonly status: HealthStatus; readonly reason?: string } => {
  if (tableBytes <= maxTableBytes) return { status: "healthy" }
  const mib = (bytes: number) => `${(bytes / 1024 / 1024).toFixed(1)} MiB`
  const reason = `events table is ${mib(tableBytes)}, over maxTableBytes (${mib(maxTableBytes)})`
  return { status: tableBytes > 2 * maxTableBytes ? "unhealthy" : "degraded", reason }
}

export class Health extends Context.Service<Health, {
  readonly report: Effect.Effect<HealthReport>
}>()("durable-emitter/Health") {
  static readonly layer = (options: HealthOptions): Layer.Layer<Health, never, Store | Publisher | Sequencer | Liveness> =>
    Layer.effect(Health, make(options))
}

const make = Effect.fnUntraced(function*(options: HealthOptions) {
  const store = yield* Store
  const publisher = yield* Publisher
  const sequencer = yield* Sequencer
  const liveness = yield* Liveness
  let table: StoreStats | undefined

  const readStats = Effect.gen(function*() {
    const stats = yield* store.stats
    const now = yield* Clock.currentTimeMillis
    table = stats
    const age = Option.match(stats.oldestCreatedAt, { onNone: () => 0, onSome: (at) => Math.max(0, now - at) })
    const state = yield* publisher.state
    yield* Metric.update(Metrics.backlog, stats.backlog)
    yield* Metric.update(Metrics.oldestAge, age)
    yield* Metric.update(Metrics.ttlBudget, options.ttlMs - age)
    yield* Metric.update(Metrics.payloadBytes, stats.payloadBytes)
    yield* Metric.update(Metrics.tableBytes, stats.tableBytes)
    yield* Metric.update(Metrics.deadTuples, stats.deadTuples)
    yield* Metric.update(Metrics.deadLetters, stats.deadLetters)
    yield* Metric.update(Metrics.publishQueue, state.queued)
    yield* Metric.update(Metrics.writeQueue, yield* sequencer.queued)
    return false
  })
  // A poll: no span (the gauges are its output).
  yield* Effect.forkScoped(runLoop("stats", options.statsIntervalMs, Effect.withTracerEnabled(readStats, false)))

  const report = Effect.gen(function*() {
    const now = yield* Clock.currentTimeMillis
    const loops = yield* liveness.loops
    const state = yield* publisher.state
    const writeQueue = yield* sequencer.queued
    const unhealthy: Array<string> = []
    const degraded: Array<string> = []

    for (const [name, loop] of loops) {
      const last = loop.lastSuccessAt ?? loop.startedAt
      if (now - last > 3 * loop.intervalMs + 1_000) unhealthy.push(`${name} loop has not succeeded for ${now - last} ms`)
      else if (loop.consecutiveFailures >= 3) unhealthy.push(`${name} loop failed ${loop.consecutiveFailures} times in a row: ${loop.lastError}`)
      else if (loop.consecutiveFailures > 0) degraded.push(`${name} loop failed: ${loop.lastError}`)
    }
    if (state.transport.misconfigured) unhealthy.push(`ingest refuses our configuration: ${state.transport.lastError}`)
    else if (state.transport.consecutiveFailures > 0) degraded.push(`ingest failing (${state.transport.consecutiveFailures} in a row): ${state.transport.lastError}`)

    const oldestAgeMs = table === undefined ? undefined : Option.match(table.oldestCreatedAt, { onNone: () => undefined, onSome: (at) => Math.max(0, now - at) })
    if (oldestAgeMs !== undefined && oldestAgeMs > 0.9 * options.ttlMs) unhealthy.push(`oldest pending event is ${oldestAgeMs} ms old, close to the ${options.ttlMs} ms TTL`)
    else if (oldestAgeMs !== undefined && oldestAgeMs > 0.5 * options.ttlMs) degraded.push(`oldest pending event is past half its TTL (${oldestAgeMs} ms)`)
    if (state.queued >= 0.9 * options.publishQueueCapacity) degraded.push(`publish queue nearly full (${state.queued}/${options.publishQueueCapacity})`)
    if (writeQueue >= 0.9 * options.writeQueueCapacity) degraded.push(`write queue nearly full (${writeQueue}/${options.writeQueueCapacity})`)
    const storage = table === undefined ? undefined : storageVerdict(table.tableBytes, options.maxTableBytes)
    if (storage?.reason !== undefined) (storage.status === "unhealthy" ? unhealthy : degraded).push(storage.reason)

    const status: HealthStatus = unhealthy.length > 0 ? "unhealthy" : degraded.length > 0 ? "degraded" : "healthy"
    return {
      status,
      reasons: [...unhealthy, ...degraded],
      checkedAt: now,
      loops: Object.fromEntries(loops),
      transport: state.transport,
      writeQueue,
      publishQueue: state.queued,
      inFlight: state.pending,
      table,
      oldestAgeMs,
      ttlMs: options.ttlMs
    } satisfies HealthReport
  }).pipe(Effect.withSpan("Emitter.health"))

  return Health.of({ report })
})
