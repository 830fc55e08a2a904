/**
 * The telemetry of one PublishBatch request, per OpenTelemetry's messaging conventions: a client
 * span `send {destination}` (operation type send) linked to the emit (create) spans of its events,
 * and the messaging.client.* metrics. Kept here so that the sender only calls it.
 */
import { Cause, Effect, Exit, Metric, Tracer } from "effect"
import * as Metrics from "../Metrics.ts"
import type { StoredEvent } from "../Store.ts"
import type { EventResult, TransportError } from "../Transport.ts"
import * as Semconv from "./semconv.ts"

/** The span of a request over `events`: its name and options. */
export const sendSpan = (events: ReadonlyArray<StoredEvent>): { readonly name: string; readonly options: Tracer.SpanOptions } => {
  const destination = Semconv.sharedDestination(events)
  const attributes: Record<string, unknown> = {
    [Semconv.ATTR_MESSAGING_SYSTEM]: Semconv.MESSAGING_SYSTEM,
    [Semconv.ATTR_MESSAGING_OPERATION_NAME]: Semconv.OPERATION_SEND,
    [Semconv.ATTR_MESSAGING_OPERATION_TYPE]: Semconv.MESSAGING_OPERATION_TYPE_VALUE_SEND
  }
  if (destination !== undefined) attributes[Semconv.ATTR_MESSAGING_DESTINATION_NAME] = destination
  if (events.length === 1) attributes[Semconv.ATTR_MESSAGING_MESSAGE_ID] = events[0]!.eventId
  else attributes[Semconv.ATTR_MESSAGING_BATCH_MESSAGE_COUNT] = events.length
  return {
    name: Semconv.spanName(Semconv.OPERATION_SEND, destination),
    options: { kind: "client", links: emitLinks(events), attributes }
  }
}

/** `error.type` of a request that failed as a whole: the transport's code, or `_OTHER` for a defect. */
export const errorTypeOf = (exit: Exit.Exit<unknown, TransportError>): string | undefined => {
  if (Exit.isSuccess(exit)) return undefined
  const error = Cause.findErrorOption(exit.cause)
  return error._tag === "Some" ? error.value.code : "_OTHER"
}

/**
 * Records a finished request: error.type on its span when it failed, its duration (seconds) and
 * its events in messaging.client.sent.messages, those the ingest refused one by one with their code.
 */
export const recordSend = (
  events: ReadonlyArray<StoredEvent>,
  exit: Exit.Exit<ReadonlyArray<EventResult>, TransportError>,
  seconds: number
): Effect.Effect<void> =>
  Effect.gen(function*() {
    const errorType = errorTypeOf(exit)
    if (errorType !== undefined) yield* Effect.annotateCurrentSpan(Semconv.ATTR_ERROR_TYPE, errorType)
    const attributes = Metrics.sendAttributes(Semconv.sharedDestination(events), errorType)
    yield* Metric.update(Metrics.series(Metrics.operationDuration, attributes), seconds)
    if (errorType !== undefined || !Exit.isSuccess(exit)) return yield* Metrics.countSent(events, errorType)
    const results = exit.value
    // An empty answer means all delivered; one of another length fails the request (see decide.ts).
    if (results.length === 0) return yield* Metrics.countSent(events, undefined)
    if (results.length !== events.length) return yield* Metrics.countSent(events, "_OTHER")
    const byCode = new Map<string | undefined, Array<StoredEvent>>()
    events.forEach((event, i) => {
      const result = results[i]!
      const code = result._tag === "Rejected" ? result.code : undefined
      const group = byCode.get(code)
      if (group === undefined) byCode.set(code, [event])
      else group.push(event)
    })
    for (const [code, group] of byCode) yield* Metrics.countSent(group, code)
  })

/** Links from a send span to the emit spans of its events (a bounded number of them). */
const maxLinks = 32
const emitLinks = (events: ReadonlyArray<StoredEvent>): Array<Tracer.SpanLink> => {
  const links: Array<Tracer.SpanLink> = []
  for (const event of events) {
    if (links.length >= maxLinks) break
    const parts = event.traceparent?.split("-")
    if (parts === undefined || parts.length !== 4) continue
    links.push({
      span: Tracer.externalSpan({ traceId: parts[1]!, spanId: parts[2]!, sampled: parts[3] === "01" }),
      attributes: { [Semconv.ATTR_MESSAGING_MESSAGE_ID]: event.eventId }
    })
  }
  return links
}
