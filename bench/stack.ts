/**
 * The emitter under test. It is `DurableEmitter.services(options)` over the PostgreSQL Store and a
 * Transport, built from the options by the same code as `DurableEmitter.layerWith`
 * (src/config/layers.ts), except that the benchmark chooses the Transport: an instant in-process one for the
 * write path, or the gRPC one wrapped by a recorder that timestamps every answered request.
 */
import { Effect, Layer, Metric } from "effect"
import type { EmitterOptions, EmitterOptionsInput } from "../src/Config.ts"
import * as Config from "../src/Config.ts"
import { storeLayer as optionsStoreLayer, transportLayer } from "../src/config/layers.ts"
import { services } from "../src/DurableEmitter.ts"
import * as Metrics from "../src/Metrics.ts"
import * as MemoryStore from "../src/store/MemoryStore.ts"
import { delivered, type EventResult, Transport } from "../src/Transport.ts"
import { databaseUrl } from "./common.ts"

/** The options of a run: the scenario's, then the command line's `--opt` on top. */
export const resolveOptions = (scenario: EmitterOptionsInput, overrides: EmitterOptionsInput) =>
  Config.resolve({ name: benchName, databaseUrl, ...scenario, ...overrides })

/** The Store `DurableEmitter.layerWith` builds from these options (PostgreSQL: the run sets databaseUrl). */
export const storeLayer = (o: EmitterOptions) => optionsStoreLayer(o)

/** The gRPC Transport `DurableEmitter.layerWith` builds from these options. */
export const grpcLayer = (o: EmitterOptions) => transportLayer(o)

/** The whole emitter (Emitter, Publisher, Sequencer, Health, Store exposed) over `transport`. */
export const emitterLayer = <E>(o: EmitterOptions, transport: Layer.Layer<Transport, E>) =>
  services(o).pipe(Layer.provideMerge(storeLayer(o)), Layer.provide(transport))

/** The same emitter over the in-memory Store: what the Node.js side alone can do. */
export const inMemoryLayer = <E>(o: EmitterOptions, transport: Layer.Layer<Transport, E>) =>
  services(o).pipe(Layer.provideMerge(MemoryStore.layer), Layer.provide(transport))

/** Answers every event "delivered" at once, in process, keeping nothing: delivery costs ~nothing. */
export const instantTransport: Layer.Layer<Transport> = Layer.succeed(
  Transport,
  Transport.of({
    publishBatch: (events) => Effect.sync((): ReadonlyArray<EventResult> => new Array<EventResult>(events.length).fill(delivered)),
    ping: Effect.succeed("pong")
  })
)

/** Called after every answered request: the wire payloads, the results, and the request's start and end (performance.now()). */
export type OnAnswer = (events: ReadonlyArray<Uint8Array>, results: ReadonlyArray<EventResult>, startedAt: number, endedAt: number) => void

/** Called after every request that failed as a whole (nothing delivered): its wire payloads. */
export type OnFailure = (events: ReadonlyArray<Uint8Array>) => void

/** Wraps a Transport to observe each answered request, and each failed one. */
export const recorded = <E>(inner: Layer.Layer<Transport, E>, onAnswer: OnAnswer, onFailure: OnFailure = () => {}): Layer.Layer<Transport, E> =>
  Layer.effect(
    Transport,
    Effect.gen(function*() {
      const transport = yield* Transport
      return Transport.of({
        publishBatch: (events) =>
          Effect.suspend(() => {
            const startedAt = performance.now()
            return transport.publishBatch(events).pipe(
              Effect.tap((results) => Effect.sync(() => onAnswer(events, results, startedAt, performance.now()))),
              Effect.tapCause(() => Effect.sync(() => onFailure(events)))
            )
          }),
        ping: transport.ping
      })
    })
  ).pipe(Layer.provide(inner))

const latin1 = new TextDecoder("latin1")
/**
 * The CloudEvent id of an encoded event without decoding it: protobuf-es writes field 1 (id)
 * first, so a UUID id is bytes 2..38. Falls back to undefined for anything else.
 */
export const eventIdOf = (payload: Uint8Array): string | undefined =>
  payload[0] === 0x0a && payload[1] === 36 ? latin1.decode(payload.subarray(2, 38)) : undefined

// ---- the emitter's own metrics, as deltas over a phase ------------------------------------------

export interface InternalStats {
  /** Mean events per commit (one Store.append). */
  readonly commitBatchMean: number
  readonly commits: number
  /** Mean duration of one commit, ms. */
  readonly commitMeanMs: number
  /** Mean events per PublishBatch request. */
  readonly requestEventsMean: number
  readonly requests: number
  /** Mean duration of one PublishBatch request, ms. */
  readonly requestMeanMs: number
}

/** The emitter's name here: every series of the emitter carries it as `emitter`. */
export const benchName = "durable-emitter-bench"

const histogram = (metric: Metric.Metric<any, Metric.HistogramState>) =>
  Effect.map(Metric.value(Metric.withAttributes(metric, { emitter: benchName })), (s) => ({ count: s.count, sum: s.sum }))

/** Starts a window over the emitter's histograms; `end` answers the means within the window. */
export const metricsWindow = Effect.gen(function*() {
  const read = Effect.all({
    commitSize: histogram(Metrics.commitBatchSize),
    commitMs: histogram(Metrics.commitLatency),
    requestEvents: histogram(Metrics.publishRequestEvents),
    requestMs: histogram(Metrics.publishLatency)
  })
  const start = yield* read
  return {
    end: Effect.map(read, (now): InternalStats => {
      const d = (k: keyof typeof now) => ({ count: now[k].count - start[k].count, sum: now[k].sum - start[k].sum })
      const mean = (k: keyof typeof now) => {
        const x = d(k)
        return x.count === 0 ? NaN : x.sum / x.count
      }
      return {
        commitBatchMean: mean("commitSize"),
        commits: d("commitSize").count,
        commitMeanMs: mean("commitMs"),
        requestEventsMean: mean("requestEvents"),
        requests: d("requestEvents").count,
        requestMeanMs: mean("requestMs")
      }
    })
  }
})
