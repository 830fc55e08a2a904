/**
 * The OpenTelemetry semantic conventions the emitter's spans and metrics follow (messaging,
 * CloudEvents, errors), copied from `@opentelemetry/semantic-conventions` 1.45 as its README asks
 * of libraries for incubating conventions (they may change in a minor version, so they are not
 * imported at run time); test/semconv.test.ts checks every copy against the package.
 */

export const ATTR_MESSAGING_SYSTEM = "messaging.system" as const
export const ATTR_MESSAGING_OPERATION_NAME = "messaging.operation.name" as const
export const ATTR_MESSAGING_OPERATION_TYPE = "messaging.operation.type" as const
export const ATTR_MESSAGING_DESTINATION_NAME = "messaging.destination.name" as const
export const ATTR_MESSAGING_MESSAGE_ID = "messaging.message.id" as const
export const ATTR_MESSAGING_BATCH_MESSAGE_COUNT = "messaging.batch.message_count" as const
export const MESSAGING_OPERATION_TYPE_VALUE_CREATE = "create" as const
export const MESSAGING_OPERATION_TYPE_VALUE_SEND = "send" as const
export const ATTR_CLOUDEVENTS_EVENT_ID = "cloudevents.event_id" as const
export const ATTR_CLOUDEVENTS_EVENT_SOURCE = "cloudevents.event_source" as const
export const ATTR_CLOUDEVENTS_EVENT_TYPE = "cloudevents.event_type" as const
export const ATTR_ERROR_TYPE = "error.type" as const

export const METRIC_MESSAGING_CLIENT_SENT_MESSAGES = "messaging.client.sent.messages" as const
export const METRIC_MESSAGING_CLIENT_OPERATION_DURATION = "messaging.client.operation.duration" as const

/** Our `messaging.system`: the Chip Ingress API the events are delivered to. */
export const MESSAGING_SYSTEM = "chip_ingress"

/** `messaging.operation.name` of `emit` / `emitAll` (type create) and of a PublishBatch request (type send). */
export const OPERATION_EMIT = "emit"
export const OPERATION_SEND = "send"

/** `messaging.destination.name` of an event: its source and type, as the ingest routes it. */
export const destinationOf = (source: string, type: string): string => `${source}/${type}`

/** A span name per the conventions: `{operation} {destination}`, the operation alone without one. */
export const spanName = (operation: string, destination: string | undefined): string =>
  destination === undefined ? operation : `${operation} ${destination}`

/**
 * The destination of a group of events: the one they share, or undefined when they go to several
 * (the conventions then omit it, rather than name one of them).
 */
export const sharedDestination = (events: ReadonlyArray<{ readonly source: string; readonly type: string }>): string | undefined => {
  const first = events[0]
  if (first === undefined) return undefined
  for (const e of events) if (e.source !== first.source || e.type !== first.type) return undefined
  return destinationOf(first.source, first.type)
}
