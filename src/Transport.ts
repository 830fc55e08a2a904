/**
 * The delivery port: one `PublishBatch` call. Implementations: the Connect/gRPC client
 * (src/transport/GrpcTransport.ts) and the scripted test transport (src/testing/ScriptedTransport.ts).
 */
import { Context, type Effect, Schema } from "effect"

/** The answer for one event of a batch, in request order. */
export type EventResult =
  | { readonly _tag: "Delivered" }
  /** The server refused this event; retrying the same bytes cannot succeed. */
  | { readonly _tag: "Rejected"; readonly code: string; readonly reason: string }

export const delivered: EventResult = { _tag: "Delivered" }

/**
 * The whole request failed.
 * - `retryable`: UNAVAILABLE, RESOURCE_EXHAUSTED, DEADLINE_EXCEEDED, ABORTED, INTERNAL, transport
 *   faults, timeouts, a result count mismatch. `retryAfterMs` is the server's push-back, if any.
 * - `permanent`: the request itself is bad (INVALID_ARGUMENT, …): the events are dead-lettered.
 * - `config`: UNAUTHENTICATED, PERMISSION_DENIED, UNIMPLEMENTED: the rows are kept and an alarm raised.
 */
export class TransportError extends Schema.TaggedError<TransportError>()("TransportError", {
  kind: Schema.Literals(["retryable", "permanent", "config"]),
  /** gRPC status code name (e.g. "unavailable"), "timeout", "mismatch" or "network". */
  code: Schema.String,
  reason: Schema.String,
  retryAfterMs: Schema.optional(Schema.Number),
  /** The server asked not to retry (a negative `grpc-retry-pushback-ms`): the rows wait for the retransmitter. */
  doNotRetry: Schema.optional(Schema.Boolean)
}) {
  override get message() {
    const pushBack = this.doNotRetry === true
      ? ", the server asks not to retry"
      : this.retryAfterMs === undefined
      ? ""
      : `, retry after ${this.retryAfterMs} ms`
    return `publish failed (${this.kind}, ${this.code}${pushBack}): ${this.reason}`
  }
}

/** What the caller tells the transport about one request. */
export interface PublishOptions {
  /**
   * How many earlier attempts this request had (0 or absent for the first). The gRPC transport
   * sends it as `grpc-previous-rpc-attempts` on retries, as gRPC's own retry support does.
   */
  readonly previousAttempts?: number | undefined
}

export class Transport extends Context.Service<Transport, {
  /**
   * Sends the encoded CloudEvents (each already carrying its `seqnum`) as one PublishBatch request.
   * Succeeds with one result per event, in order; fails with a TransportError for the whole batch.
   * Never hangs longer than the transport's request timeout.
   */
  readonly publishBatch: (
    events: ReadonlyArray<Uint8Array>,
    options?: PublishOptions
  ) => Effect.Effect<ReadonlyArray<EventResult>, TransportError>
  /** Calls Ping: answers the server's message. */
  readonly ping: Effect.Effect<string, TransportError>
}>()("durable-emitter/Transport") {}
