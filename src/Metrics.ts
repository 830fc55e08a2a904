/**
 * Every instrument of the emitter, in one place. Names follow OpenTelemetry style
 * (`durable_emitter.<area>.<what>`); durations are timers in milliseconds. They are exported by
 * whatever metrics layer the application provides (e.g. @effect/opentelemetry's NodeSdk).
 * Per-event paths update them once per batch, grouped by source and type, never once per event.
 */
import { type Duration, Effect, Metric } from "effect"

const sizeBoundaries = Metric.exponentialBoundaries({ start: 1, factor: 2, count: 16 })
const byteBoundaries = Metric.exponentialBoundaries({ start: 256, factor: 4, count: 10 })
const msBoundaries = Metric.exponentialBoundaries({ start: 0.25, factor: 2, count: 18 })

// emits
export const emits = Metric.counter("durable_emitter.emit.events", { description: "Events committed by emit, by source and type", incremental: true })
export const emitErrors = Metric.counter("durable_emitter.emit.errors", { description: "Failed emits, by reason", incremental: true })
export const emitLatency = Metric.timer("durable_emitter.emit.duration", { description: "Time from emit to commit, by source and type", boundaries: msBoundaries })

// group commit
export const commitBatchSize = Metric.histogram("durable_emitter.commit.batch_size", { description: "Events per commit", boundaries: sizeBoundaries })
export const commitLatency = Metric.timer("durable_emitter.commit.duration", { description: "Duration of one commit", boundaries: msBoundaries })

// publish
export const publishRequests = Metric.counter("durable_emitter.publish.requests", { description: "PublishBatch requests, by status", incremental: true })
export const publishRequestEvents = Metric.histogram("durable_emitter.publish.request_events", { description: "Events per request", boundaries: sizeBoundaries })
export const publishRequestBytes = Metric.histogram("durable_emitter.publish.request_bytes", { description: "Encoded bytes per request", boundaries: byteBoundaries })
export const publishLatency = Metric.timer("durable_emitter.publish.duration", { description: "Duration of one PublishBatch request", boundaries: msBoundaries })
export const delivered = Metric.counter("durable_emitter.publish.delivered", { description: "Events acknowledged, by source and type", incremental: true })
export const failed = Metric.counter("durable_emitter.publish.failed", { description: "Events whose send failed, by source, type and code", incremental: true })
export const deadLettered = Metric.counter("durable_emitter.dead_letter.events", { description: "Events moved to the dead-letter table, by source, type and code", incremental: true })
export const retries = Metric.counter("durable_emitter.publish.retries", { description: "Retried requests", incremental: true })
export const settled = Metric.counter("durable_emitter.publish.settled", { description: "Events the publisher is done with, by outcome (Delivered, DeadLettered, GivenUp, Lapsed, Undeleted, Abandoned)", incremental: true })
export const pushBackWaits = Metric.timer("durable_emitter.publish.push_back", { description: "Waits imposed by server push-back", boundaries: msBoundaries })

// queues and table
export const writeQueue = Metric.gauge("durable_emitter.write_queue.emits", { description: "Emits waiting for a commit (an emitAll counts once)" })
export const publishQueue = Metric.gauge("durable_emitter.publish_queue.events", { description: "Committed events waiting to be sent" })
export const backlog = Metric.gauge("durable_emitter.table.backlog", { description: "Rows in the events table" })
export const oldestAge = Metric.gauge("durable_emitter.table.oldest_age_ms", { description: "Age of the oldest pending row, ms" })
export const ttlBudget = Metric.gauge("durable_emitter.table.ttl_budget_ms", { description: "TTL minus the oldest row's age, ms" })
export const payloadBytes = Metric.gauge("durable_emitter.table.payload_bytes", { description: "Payload bytes pending in the table" })
export const tableBytes = Metric.gauge("durable_emitter.table.bytes", { description: "Bytes the events table takes: heap, indexes, TOAST, partitions" })
export const deadTuples = Metric.gauge("durable_emitter.table.dead_tuples", { description: "Dead row versions in the events table not yet vacuumed" })
export const deadLetters = Metric.gauge("durable_emitter.dead_letter.rows", { description: "Rows in the dead-letter table" })
export const queueFull = Metric.counter("durable_emitter.publish_queue.left_to_retransmit", { description: "Committed events left to the retransmitter because the publish queue was full (their rows released: claimable at once)", incremental: true })
export const overflowUnreleased = Metric.counter("durable_emitter.publish_queue.unreleased", { description: "Of those, events whose rows could not be released: they wait out their first lease", incremental: true })
export const expired = Metric.counter("durable_emitter.expiry.events", { description: "Rows expired, by source and type", incremental: true })
export const retransmitted = Metric.counter("durable_emitter.retransmit.events", { description: "Rows claimed for retransmission", incremental: true })
export const configInfo = Metric.gauge("durable_emitter.config.info", { description: "Always 1; the attributes carry the effective settings" })

/** Counts `n` on a metric with attributes (one update per batch and key). */
export const count = (metric: Metric.Counter<number>, n: number, attributes: Metric.Metric.Attributes) =>
  Metric.update(Metric.withAttributes(metric, attributes), n)

/** Counts events per (source, type), one update per key. */
export const countByKey = (
  metric: Metric.Counter<number>,
  events: ReadonlyArray<{ readonly source: string; readonly type: string }>,
  extra?: Metric.Metric.Attributes
): Effect.Effect<void> =>
  Effect.suspend(() => {
    const counts = new Map<string, { source: string; type: string; n: number }>()
    // Batches are mostly runs of one key: compare with the last key before building a map key.
    let last: { source: string; type: string; n: number } | undefined
    for (const e of events) {
      if (last === undefined || last.source !== e.source || last.type !== e.type) {
        const key = `${e.source}\u0000${e.type}`
        last = counts.get(key)
        if (last === undefined) {
          last = { source: e.source, type: e.type, n: 0 }
          counts.set(key, last)
        }
      }
      last.n++
    }
    return Effect.forEach(counts.values(), ({ source, type, n }) =>
      count(metric, n, extra === undefined ? { source, type } : { ...extra, source, type }), { discard: true })
  })

/**
 * The emit-latency timer of one (source, type), built once: this is updated for every committed
 * event. Past `maxKeys` distinct pairs the cache starts over (bounded memory, not correctness).
 */
const latencyTimers = new Map<string, Metric.Metric<Duration.Duration, Metric.HistogramState>>()
const maxKeys = 1024
export const emitLatencyOf = (source: string, type: string) => {
  const key = `${source}\u0000${type}`
  let timer = latencyTimers.get(key)
  if (timer === undefined) {
    if (latencyTimers.size >= maxKeys) latencyTimers.clear()
    timer = Metric.withAttributes(emitLatency, { source, type })
    latencyTimers.set(key, timer)
  }
  return timer
}

/** Records one commit: its size and its duration. */
export const trackCommit = (events: number) => <A, E, R>(self: Effect.Effect<A, E, R>) =>
  Metric.update(commitBatchSize, events).pipe(Effect.andThen(self), Effect.trackDuration(commitLatency))
