/**
 * durable-emitter: events committed to PostgreSQL before `emit` returns, then delivered in batches
 * over gRPC (CloudEvents, Chip Ingress PublishBatch), re-sent after faults, expired after a TTL,
 * dead-lettered when they can never be accepted. Nothing committed is lost.
 *
 * ```ts
 * import { DurableEmitter, Emitter } from "durable-emitter"
 * import { Effect } from "effect"
 *
 * const program = Effect.gen(function*() {
 *   const receipt = yield* Emitter.emit({ source: "billing", type: "invoice.paid", data: { id: 42 } })
 *   yield* Effect.log(`committed as #${receipt.seq}`)
 * })
 * Effect.runPromise(program.pipe(Effect.provide(DurableEmitter.layer)))
 * ```
 */
export * as Config from "./Config.ts"
export { DurableEmitter, type DurableEmitterError, type DurableEmitterServices } from "./DurableEmitter.ts"
export { EmitReceipt, Emitter, type FlushResult, type TransactionalReceipt } from "./Emitter.ts"
export * from "./Errors.ts"
export * as Event from "./Event.ts"
export type { EmitInput, ExtensionValue, Json } from "./Event.ts"
export { Health, type HealthReport, type HealthStatus } from "./Health.ts"
export * as Metrics from "./Metrics.ts"
export { Publisher, type RetryInput, RetryPolicy, retrySchedule, type RetrySchedule } from "./Publisher.ts"
export { Store } from "./Store.ts"
export type { DeadLetter, DeadLetterFilter, StoredEvent, StoreStats } from "./Store.ts"
export * as PgStore from "./store/PgStore.ts"
export { type EventResult, Transport, TransportError } from "./Transport.ts"
export * as GrpcTransport from "./transport/GrpcTransport.ts"
