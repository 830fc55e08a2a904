/**
 * Every instrument of the emitter, in one place. Where OpenTelemetry's messaging conventions have
 * an instrument it is that one (`messaging.client.sent.messages`, `messaging.client.operation.duration`
 * in seconds, with their attributes); the rest are `durable_emitter.<area>.<what>`. Units are UCUM,
 * in the `unit` attribute @effect/opentelemetry exports as the instrument's unit (`s`, `ms`, `By`).
 * Every series of the emitter's own fibers also carries `emitter` (the `name` option: see
 * DurableEmitter.ts). They are exported by whatever metrics layer the application provides (e.g.
 * @effect/opentelemetry's NodeSdk). Per-event paths update them once per batch, grouped by
 * destination, never once per event.
 *
 * A series with attributes is its own instrument, built once (`series`): Effect's
 * `Metric.withAttributes` merges the attributes into a new context on every update, and the
 * instrument then serializes its series key again each time (JSON of the sorted attributes, a few
 * µs). With many (source, type) keys the per-key updates are nearly per event: measured on the
 * embedded demo (64 sources), four key builds per event and a tenth of the process's time.
 */
import { Effect, Metric } from "effect"
import * as Semconv from "./telemetry/semconv.ts"

type Attributes = Readonly<Record<string, string>>
/** How to build an instrument's series: its own constructor, its attributes plus the series'. */
const makers = new WeakMap<object, (attributes: Attributes) => Metric.Metric<any, any>>()

const counter = (name: string, options: { readonly description: string; readonly attributes?: Attributes; readonly incremental: true }) => {
  const metric = Metric.counter(name, options)
  makers.set(metric, (attributes) => Metric.counter(name, { ...options, attributes: { ...options.attributes, ...attributes } }))
  return metric
}

const histogram = (
  name: string,
  options: { readonly description: string; readonly attributes?: Attributes; readonly boundaries: ReadonlyArray<number> }
) => {
  const metric = Metric.histogram(name, options)
  makers.set(metric, (attributes) => Metric.histogram(name, { ...options, attributes: { ...options.attributes, ...attributes } }))
  return metric
}

/** Per instrument, its series by key. */
const seriesCache = new WeakMap<object, Map<string, Metric.Metric<any, any>>>()
/** Past this many series of one instrument its cache starts over (bounded memory, not correctness). */
const maxSeries = 4096

/**
 * `metric`'s series with `attributes` (the same series `Metric.withAttributes` addresses), built
 * once per `key` (by default the attributes' JSON; hot paths pass a key they have anyway).
 */
export const series = <M extends Metric.Metric<any, any>>(metric: M, attributes: Attributes, key?: string): M => {
  let byKey = seriesCache.get(metric)
  if (byKey === undefined) seriesCache.set(metric, byKey = new Map())
  const k = key ?? JSON.stringify(attributes)
  let found = byKey.get(k)
  if (found === undefined) {
    if (byKey.size >= maxSeries) byKey.clear()
    found = seriesOf(metric, attributes)
    byKey.set(k, found)
  }
  return found as M
}

/** Builds the series (uncached: for callers that keep their own). */
const seriesOf = <M extends Metric.Metric<any, any>>(metric: M, attributes: Attributes): M => {
  const make = makers.get(metric)
  return (make === undefined ? Metric.withAttributes(metric, attributes) : make(attributes)) as M
}

const sizeBoundaries = Metric.exponentialBoundaries({ start: 1, factor: 2, count: 16 })
const byteBoundaries = Metric.exponentialBoundaries({ start: 256, factor: 4, count: 10 })
const msBoundaries = Metric.exponentialBoundaries({ start: 0.25, factor: 2, count: 18 })
/** The conventions' advice for messaging.client.operation.duration, seconds. */
const secondsBoundaries = [0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10]
const ms = { unit: "ms" }
const bytes = { unit: "By" }

// the messaging conventions
export const sentMessages = counter(Semconv.METRIC_MESSAGING_CLIENT_SENT_MESSAGES, {
  description: "Events sent in PublishBatch requests, by destination; error.type when the ingest did not take them",
  attributes: { unit: "{message}" },
  incremental: true
})
export const operationDuration = histogram(Semconv.METRIC_MESSAGING_CLIENT_OPERATION_DURATION, {
  description: "Duration of an emit until its commit (create) and of a PublishBatch request (send), seconds",
  attributes: { unit: "s" },
  boundaries: secondsBoundaries
})

// emits
export const emits = counter("durable_emitter.emit.events", { description: "Events committed by emit, by source and type", incremental: true })
export const emitErrors = counter("durable_emitter.emit.errors", { description: "Failed emits, by reason", incremental: true })

// group commit
export const commitBatchSize = Metric.histogram("durable_emitter.commit.batch_size", { description: "Events per commit", boundaries: sizeBoundaries })
export const commitLatency = Metric.timer("durable_emitter.commit.duration", { description: "Duration of one commit", boundaries: msBoundaries, attributes: ms })

// publish
export const publishRequests = counter("durable_emitter.publish.requests", { description: "PublishBatch requests, by status", incremental: true })
export const publishRequestEvents = Metric.histogram("durable_emitter.publish.request_events", { description: "Events per request", boundaries: sizeBoundaries })
export const publishRequestBytes = Metric.histogram("durable_emitter.publish.request_bytes", { description: "Encoded bytes per request", boundaries: byteBoundaries, attributes: bytes })
export const publishLatency = Metric.timer("durable_emitter.publish.duration", { description: "Duration of one PublishBatch request (messaging.client.operation.duration has it by destination, in seconds)", boundaries: msBoundaries, attributes: ms })
export const delivered = counter("durable_emitter.publish.delivered", { description: "Events acknowledged, by source and type", incremental: true })
export const failed = counter("durable_emitter.publish.failed", { description: "Events whose send failed, by source, type and code", incremental: true })
export const deadLettered = counter("durable_emitter.dead_letter.events", { description: "Events moved to the dead-letter table, by source, type and code", incremental: true })
export const retries = counter("durable_emitter.publish.retries", { description: "Retried requests", incremental: true })
export const settled = counter("durable_emitter.publish.settled", { description: "Events the publisher is done with, by outcome (Delivered, DeadLettered, GivenUp, Lapsed, Undeleted, Abandoned)", incremental: true })
export const pushBackWaits = Metric.timer("durable_emitter.publish.push_back", { description: "Waits imposed by server push-back", boundaries: msBoundaries, attributes: ms })

// queues and table
export const writeQueue = Metric.gauge("durable_emitter.write_queue.emits", { description: "Emits waiting for a commit (an emitAll counts once)" })
export const publishQueue = Metric.gauge("durable_emitter.publish_queue.events", { description: "Committed events waiting to be sent" })
export const backlog = Metric.gauge("durable_emitter.table.backlog", { description: "Rows in the events table" })
export const oldestAge = Metric.gauge("durable_emitter.table.oldest_age_ms", { description: "Age of the oldest pending row, ms", attributes: ms })
export const ttlBudget = Metric.gauge("durable_emitter.table.ttl_budget_ms", { description: "TTL minus the oldest row's age, ms", attributes: ms })
export const payloadBytes = Metric.gauge("durable_emitter.table.payload_bytes", { description: "Payload bytes pending in the table", attributes: bytes })
export const tableBytes = Metric.gauge("durable_emitter.table.bytes", { description: "Bytes the events table takes: heap, indexes, TOAST, partitions", attributes: bytes })
export const deadTuples = Metric.gauge("durable_emitter.table.dead_tuples", { description: "Dead row versions in the events table not yet vacuumed" })
export const deadLetters = Metric.gauge("durable_emitter.dead_letter.rows", { description: "Rows in the dead-letter table" })
export const queueFull = counter("durable_emitter.publish_queue.left_to_retransmit", { description: "Committed events left to the retransmitter because the publish queue was full (their rows released: claimable at once)", incremental: true })
export const overflowUnreleased = counter("durable_emitter.publish_queue.unreleased", { description: "Of those, events whose rows could not be released: they wait out their first lease", incremental: true })
export const expired = counter("durable_emitter.expiry.events", { description: "Rows expired, by source and type", incremental: true })
export const retransmitted = counter("durable_emitter.retransmit.events", { description: "Rows claimed for retransmission", incremental: true })
export const configInfo = Metric.gauge("durable_emitter.config.info", { description: "Always 1; the attributes carry the effective settings" })

/** Counts `n` on a metric with attributes (one update per batch and key). */
export const count = (metric: Metric.Counter<number>, n: number, attributes: Attributes, key?: string) =>
  Metric.update(series(metric, attributes, key), n)

/** Counts events per (source, type), one update per key. */
export const countByKey = (
  metric: Metric.Counter<number>,
  events: ReadonlyArray<{ readonly source: string; readonly type: string }>,
  extra?: Attributes
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
    const extraKey = extra === undefined ? undefined : JSON.stringify(extra)
    return Effect.forEach(counts.entries(), ([key, { source, type, n }]) =>
      extraKey === undefined
        ? count(metric, n, { source, type }, key)
        : count(metric, n, { ...extra, source, type }, `${key}\u0000${extraKey}`), { discard: true })
  })

/**
 * The emit duration (messaging.client.operation.duration, operation create) of one destination,
 * in seconds, built once and kept by source, then type: this is updated for every committed event.
 */
const emitDurations = new Map<string, Map<string, Metric.Metric<number, Metric.HistogramState>>>()
export const emitDurationOf = (source: string, type: string) => {
  // By source, then type: no string is built on the way to a series made before.
  let byType = emitDurations.get(source)
  if (byType === undefined) {
    if (emitDurations.size >= maxSeries) emitDurations.clear()
    emitDurations.set(source, byType = new Map())
  }
  let histogram = byType.get(type)
  if (histogram === undefined) {
    const destination = Semconv.destinationOf(source, type)
    histogram = seriesOf(operationDuration, {
      [Semconv.ATTR_MESSAGING_SYSTEM]: Semconv.MESSAGING_SYSTEM,
      [Semconv.ATTR_MESSAGING_OPERATION_NAME]: Semconv.OPERATION_EMIT,
      [Semconv.ATTR_MESSAGING_OPERATION_TYPE]: Semconv.MESSAGING_OPERATION_TYPE_VALUE_CREATE,
      [Semconv.ATTR_MESSAGING_DESTINATION_NAME]: destination
    })
    byType.set(type, histogram)
  }
  return histogram
}

/** The attributes of a PublishBatch request's series: its destination when its events share one, error.type when it failed. */
export const sendAttributes = (destination: string | undefined, errorType: string | undefined): Attributes => {
  const attributes: Record<string, string> = {
    [Semconv.ATTR_MESSAGING_SYSTEM]: Semconv.MESSAGING_SYSTEM,
    [Semconv.ATTR_MESSAGING_OPERATION_NAME]: Semconv.OPERATION_SEND,
    [Semconv.ATTR_MESSAGING_OPERATION_TYPE]: Semconv.MESSAGING_OPERATION_TYPE_VALUE_SEND
  }
  if (destination !== undefined) attributes[Semconv.ATTR_MESSAGING_DESTINATION_NAME] = destination
  if (errorType !== undefined) attributes[Semconv.ATTR_ERROR_TYPE] = errorType
  return attributes
}

/** Counts sent events per destination (messaging.client.sent.messages), error.type for those the ingest did not take. */
export const countSent = (
  events: ReadonlyArray<{ readonly source: string; readonly type: string }>,
  errorType: string | undefined
): Effect.Effect<void> =>
  Effect.suspend(() => {
    const counts = new Map<string, number>()
    for (const e of events) {
      const destination = Semconv.destinationOf(e.source, e.type)
      counts.set(destination, (counts.get(destination) ?? 0) + 1)
    }
    return Effect.forEach(counts, ([destination, n]) =>
      count(sentMessages, n, sendAttributes(destination, errorType), `${destination}\u0000${errorType ?? ""}`), { discard: true })
  })

/** Records one commit: its size and its duration. */
export const trackCommit = (events: number) => <A, E, R>(self: Effect.Effect<A, E, R>) =>
  Metric.update(commitBatchSize, events).pipe(Effect.andThen(self), Effect.trackDuration(commitLatency))
