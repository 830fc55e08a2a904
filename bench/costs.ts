/**
 * Scenario `costs` (not part of the default run): what one event costs in CPU on the hot paths,
 * piece by piece, measured in a tight loop in this process. The write and e2e scenarios are
 * bounded by these costs on a 2-core machine; use this to see what a change to src/ buys.
 */
import { toBinary } from "@bufbuild/protobuf"
import { Clock, Deferred, Effect, Fiber, Metric, Queue } from "effect"
import { SqlClient } from "effect/sql"
import * as Event from "../src/Event.ts"
import { CloudEventSchema } from "../src/gen/io/cloudevents/v1/cloudevent_pb.js"
import * as GrpcTransport from "../src/transport/GrpcTransport.ts"
import { Transport } from "../src/Transport.ts"
import { adminClient, type BenchArgs, benchInput, data, prepared, round, type ScenarioResult } from "./common.ts"
import { ingestServer } from "./delivery.ts"

const syncCost = (iterations: number, f: () => unknown) => {
  for (let i = 0; i < Math.min(iterations, 20_000); i++) f()
  const start = performance.now()
  for (let i = 0; i < iterations; i++) f()
  return ((performance.now() - start) * 1000) / iterations
}

const effectCost = (iterations: number, effect: Effect.Effect<unknown>) =>
  Effect.gen(function*() {
    const loop = (n: number) => Effect.forEach(Array.from({ length: n }), () => effect, { discard: true })
    yield* loop(Math.min(iterations, 20_000))
    const start = performance.now()
    yield* loop(iterations)
    return ((performance.now() - start) * 1000) / iterations
  })

/** CPU (user + system) of this process per call of `effect`, run `count` times `concurrency` at a time. */
const roundTripCost = (count: number, concurrency: number, effect: Effect.Effect<unknown, unknown>) =>
  Effect.gen(function*() {
    const loop = (n: number) => Effect.forEach(Array.from({ length: n }), () => effect, { concurrency, discard: true })
    yield* loop(count) // warm-up: the JIT compiles the request path over the first few hundred calls
    const start = process.cpuUsage()
    yield* loop(count)
    const used = process.cpuUsage(start)
    return (used.user + used.system) / count
  }).pipe(Effect.orDie)

/**
 * What one round trip costs this process in CPU, system calls included: a PublishBatch request to
 * the reference ingest server (in its own process) and a PostgreSQL statement. On a VM these are
 * mostly the kernel's (loopback sends, wake-ups), which per-event code costs above do not show.
 */
const roundTrips = (quick: boolean) =>
  Effect.scoped(Effect.gen(function*() {
    const server = yield* ingestServer(false)
    const batch = (size: number) =>
      Array.from({ length: size }, (_, i) => Event.withSeqnum(prepared(Date.now()).payload, BigInt(i + 1)))
    const requests = quick ? 100 : 1000
    const rows: Array<[string, number]> = yield* Effect.gen(function*() {
      const transport = yield* Transport
      const small = batch(57)
      const large = batch(448)
      return [
        ["PublishBatch request of 57 events (4 in flight), per request", yield* roundTripCost(requests, 4, transport.publishBatch(small))],
        ["PublishBatch request of 448 events (4 in flight), per request", yield* roundTripCost(requests, 4, transport.publishBatch(large))]
      ] as Array<[string, number]>
    }).pipe(Effect.provide(GrpcTransport.layer({ url: server.url })), Effect.orDie)
    const statement = yield* SqlClient.SqlClient.use((sql) => roundTripCost(quick ? 500 : 3000, 1, sql.unsafe("SELECT $1::int", [1]).values)).pipe(
      Effect.provide(adminClient)
    )
    return [...rows, ["PostgreSQL statement (SELECT $1, one connection), per statement", statement]] as Array<[string, number]>
  }))

export const run = (args: BenchArgs) =>
  Effect.gen(function*() {
    const n = args.events ?? (args.quick ? 20_000 : 200_000)
    const context: Event.PrepareContext = { emitterName: "durable-emitter-bench", maxEventBytes: 1024 * 1024, now: Date.now() }
    const event = prepared(Date.now())
    const decoded = Event.decode(event.payload)
    const traced = Effect.fn("Bench.traced")(function*(x: number) {
      return x + 1
    })
    const untraced = Effect.fnUntraced(function*(x: number) {
      return x + 1
    })
    /** A caller suspended on a Deferred that another fiber completes: the shape of `emit` waiting for its commit. */
    const awaitCommit = (wrap: (wait: Effect.Effect<number>) => Effect.Effect<number>) =>
      Effect.gen(function*() {
        const done = yield* Deferred.make<number>()
        const waiter = yield* Effect.forkChild(wrap(Deferred.await(done)))
        yield* Effect.yieldNow
        yield* Deferred.succeed(done, 1)
        yield* Fiber.join(waiter)
      })
    const timer = Metric.timer("durable_emitter_bench.timer", { boundaries: Metric.exponentialBoundaries({ start: 0.25, factor: 2, count: 18 }) })
    const queue = yield* Queue.bounded<number>(1024)

    const costs: Array<[string, number]> = [
      ["Event.prepare (256-byte data), whole", syncCost(n, () => Event.prepare(benchInput, context))],
      ["  Event.idempotencyKey (SHA-256 over source, type, body)", syncCost(n, () => Event.idempotencyKey(benchInput.source, benchInput.type, data))],
      ["  toBinary(CloudEvent) of a built message", syncCost(n, () => toBinary(CloudEventSchema, decoded))],
      ["  crypto.randomUUID", syncCost(n, () => crypto.randomUUID())],
      ["Event.withSeqnum (per event at send time)", syncCost(n, () => Event.withSeqnum(event.payload, 1234567n))],
      ["Effect.succeed (reference)", yield* effectCost(n, Effect.succeed(1))],
      ["Effect.fn call (span + stack trace capture)", yield* effectCost(n, Effect.suspend(() => traced(1)))],
      ["Effect.fnUntraced call", yield* effectCost(n, Effect.suspend(() => untraced(1)))],
      ["fork + suspend on a Deferred + complete + join", yield* effectCost(n, awaitCommit((wait) => wait))],
      ["  the same with timeoutOrElse on the wait (Sequencer.submit)", yield* effectCost(n, awaitCommit((wait) => Effect.timeoutOrElse(wait, { duration: 10_000, orElse: () => Effect.succeed(2) })))],
      ["Effect.trackDuration(timer)", yield* effectCost(n, Effect.succeed(1).pipe(Effect.trackDuration(timer)))],
      ["Deferred make + succeed + await", yield* effectCost(n, Effect.flatMap(Deferred.make<number>(), (d) => Effect.andThen(Deferred.succeed(d, 1), Deferred.await(d))))],
      ["Effect.timeoutOrElse around an immediate effect", yield* effectCost(n, Effect.succeed(1).pipe(Effect.timeoutOrElse({ duration: 10_000, orElse: () => Effect.succeed(2) })))],
      ["Queue.offer + take", yield* effectCost(n, Effect.andThen(Queue.offer(queue, 1), Queue.take(queue)))],
      ["Clock.currentTimeMillis", yield* effectCost(n, Clock.currentTimeMillis)],
      ["Effect.option(Effect.currentSpan) without a span (fails with an Error)", yield* effectCost(n, Effect.option(Effect.currentSpan))]
    ]
    const trips = yield* roundTrips(args.quick)
    const width = Math.max(...[...costs, ...trips].map(([label]) => label.length))
    const line = ([label, us]: [string, number]) => `  ${label.padEnd(width)}  ${round(us, 2).toFixed(2).padStart(7)} µs`
    return {
      report: [
        `costs: CPU per call in this process (${n.toLocaleString("en-US")} iterations each, payload ${event.payload.length} bytes)`,
        ...costs.map(line),
        `round trips: CPU of this process per call, system calls included`,
        ...trips.map(line)
      ],
      json: {
        scenario: "costs",
        payloadBytes: event.payload.length,
        microseconds: Object.fromEntries(costs.map(([k, v]) => [k.trim(), round(v, 3)])),
        roundTripMicroseconds: Object.fromEntries(trips.map(([k, v]) => [k.trim(), round(v, 1)]))
      }
    } satisfies ScenarioResult
  })
