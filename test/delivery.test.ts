/**
 * Delivery end to end: the whole DurableEmitter on real PostgreSQL, talking to the reference ingest
 * server over loopback HTTP/2. Real time, short timeouts.
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect, Layer, Metric, Redacted } from "effect"
import { DurableEmitter } from "../src/DurableEmitter.ts"
import { Emitter } from "../src/Emitter.ts"
import type * as Config from "../src/Config.ts"
import * as Metrics from "../src/Metrics.ts"
import { Store } from "../src/Store.ts"
import { type IngestServerHandle, startIngestServer } from "../src/testing/IngestServer.ts"
import { databaseUrl, scopedPrefix } from "./support/pg.ts"

const ingestServer = Effect.acquireRelease(
  Effect.promise(() => startIngestServer()),
  (server) => Effect.promise(() => server.close())
)

/** Runs `body` with a fresh emitter (own tables) publishing to a fresh ingest server. */
const withEmitter = <A, E>(
  options: Config.EmitterOptionsInput,
  body: (server: IngestServerHandle) => Effect.Effect<A, E, Emitter | Store>
) =>
  Effect.gen(function*() {
    const server = yield* ingestServer
    const prefix = yield* scopedPrefix
    const layer = DurableEmitter.layerWith({
      databaseUrl: Redacted.make(databaseUrl),
      ingestUrl: server.url,
      tablePrefix: prefix,
      retransmit: false,
      requestTimeout: "500 millis",
      firstLease: "10 seconds",
      leaseBase: "5 seconds",
      retryBaseDelay: "20 millis",
      retryMaxDelay: "200 millis",
      shutdownTimeout: "2 seconds",
      ...options
    })
    return yield* body(server).pipe(Effect.provide(layer))
  })

const emitMany = (n: number, type = "invoice.paid") =>
  Effect.forEach(Array.from({ length: n }, (_, i) => i), (i) =>
    Emitter.emit({ source: "billing", type, data: new Uint8Array(256).fill(i & 0xff) }), { concurrency: 50 })

const backlog = Store.use((store) => Effect.map(store.stats, (s) => s.backlog))

describe("delivery over loopback HTTP/2", () => {
  it.live("without faults every event arrives once, with its durable seqnum, and its row is deleted", () =>
    withEmitter({}, (server) =>
      Effect.gen(function*() {
        const receipts = yield* emitMany(500)
        yield* Emitter.flush
        const received = server.received
        assert.strictEqual(received.stats.events, 500)
        assert.strictEqual(received.stats.duplicates, 0)
        assert.deepStrictEqual([...received.ids].sort(), receipts.map((r) => r.id).sort())
        const seqByKey = new Map(receipts.map((r) => [r.id, r.seq.toString()]))
        for (const event of received.events) assert.strictEqual(event.seqnum, seqByKey.get(event.id))
        assert.deepStrictEqual(receipts.map((r) => Number(r.seq)).sort((a, b) => a - b), Array.from({ length: 500 }, (_, i) => i + 1))
        assert.strictEqual(yield* backlog, 0)
      })))

  it.live("dead-letters the events the server rejects, with code and reason", () =>
    withEmitter({}, (server) =>
      Effect.gen(function*() {
        server.faults.reject({ type: "bad.type", code: "SCHEMA_MISSING", reason: "no schema registered" })
        yield* emitMany(20)
        const bad = yield* emitMany(3, "bad.type")
        yield* Emitter.flush
        assert.strictEqual(server.received.stats.events, 20)
        const store = yield* Store
        const dead = yield* store.listDeadLetters({})
        assert.deepStrictEqual(dead.map((d) => d.eventId).sort(), bad.map((r) => r.id).sort())
        for (const d of dead) {
          assert.strictEqual(d.code, "SCHEMA_MISSING")
          assert.strictEqual(d.reason, "no schema registered")
        }
        assert.strictEqual(yield* backlog, 0)
      })))

  it.live("recovers from a burst of UNAVAILABLE, honouring push-back", () =>
    withEmitter({}, (server) =>
      Effect.gen(function*() {
        server.faults.failNext(3, { status: "unavailable", pushbackMs: 100 })
        const started = Date.now()
        const receipts = yield* emitMany(50)
        yield* Emitter.flush
        assert.isAtLeast(Date.now() - started, 300)
        assert.strictEqual(server.received.ids.size, 50)
        assert.deepStrictEqual([...server.received.ids].sort(), receipts.map((r) => r.id).sort())
        assert.strictEqual(yield* backlog, 0)
      })))

  it.live("times out a hung request and delivers on retry", () =>
    withEmitter({ requestTimeout: "300 millis" }, (server) =>
      Effect.gen(function*() {
        server.faults.hang(true)
        const receipts = yield* emitMany(10)
        yield* Effect.promise(() => server.received.waitFor((s) => s.abandonedRequests >= 1, 5_000))
        server.faults.hang(false)
        yield* Emitter.flush
        assert.deepStrictEqual([...server.received.ids].sort(), receipts.map((r) => r.id).sort())
        assert.strictEqual(yield* backlog, 0)
      })))

  it.live("splits a batch that would exceed the request limit", () =>
    withEmitter({ maxRequestBytes: 4_096, maxEventBytes: 1_024, publishBatchSize: 500, publishLinger: "50 millis" }, (server) =>
      Effect.gen(function*() {
        server.faults.maxRequestBytes(4_096)
        yield* emitMany(60)
        yield* Emitter.flush
        assert.strictEqual(server.received.ids.size, 60)
        assert.strictEqual(server.received.stats.failedRequests, 0)
        for (const request of server.received.requests) assert.isAtMost(request.bytes, 4_096)
        assert.isAbove(server.received.stats.requests, 5)
      })))

  it.live("a slow request does not hold up the others", () =>
    withEmitter({ publishConcurrency: 4, publishBatchSize: 10, requestTimeout: "3 seconds" }, (server) =>
      Effect.gen(function*() {
        // The first request is held 2 s by the server; the ones after it are answered at once.
        server.faults.latency(2_000)
        yield* emitMany(1)
        yield* Effect.promise(() => server.received.waitFor((s) => s.requests >= 1, 1_000))
        server.faults.latency(0)
        const started = Date.now()
        yield* emitMany(40)
        yield* Effect.promise(() => server.received.waitForEvents(40, 1_500))
        assert.isBelow(Date.now() - started, 1_500)
        yield* Emitter.flush
        assert.strictEqual(server.received.ids.size, 41)
      })))

  it.live("health turns degraded while the ingest server is down and healthy once it is back", () =>
    withEmitter({ retryBudget: "400 millis" }, (server) =>
      Effect.gen(function*() {
        yield* emitMany(5)
        yield* Emitter.flush
        assert.strictEqual((yield* Emitter.health).status, "healthy")
        yield* Effect.promise(() => server.faults.down("refuse"))
        yield* emitMany(5)
        yield* Emitter.flush
        const down = yield* Emitter.health
        assert.strictEqual(down.status, "degraded")
        assert.match(down.reasons.join("; "), /ingest failing/)
        assert.isAbove(down.transport.consecutiveFailures, 0)
        yield* Effect.promise(() => server.faults.up())
        yield* emitMany(5)
        yield* Emitter.flush
        const up = yield* Emitter.health
        assert.strictEqual(up.status, "healthy", up.reasons.join("; "))
        assert.isDefined(up.transport.lastSuccessAt)
      })))

  it.live("events a full publish queue refused are delivered as soon as there is room, not after their first lease", () =>
    withEmitter({
      retransmit: true, retransmitInterval: "200 millis", firstLease: "30 seconds",
      publishQueueCapacity: 20, claimBatchSize: 20, publishBatchSize: 10, publishConcurrency: 1
    }, (server) =>
      Effect.gen(function*() {
        const overflowedBefore = (yield* Metric.value(Metric.withAttributes(Metrics.queueFull, { emitter: "durable-emitter" }))).count
        server.faults.latency(200)
        const started = Date.now()
        const receipts = yield* emitMany(300)
        server.faults.latency(0)
        assert.isAbove((yield* Metric.value(Metric.withAttributes(Metrics.queueFull, { emitter: "durable-emitter" }))).count - overflowedBefore, 0, "the queue overflowed")
        yield* Effect.promise(() => server.received.waitFor((s) => s.uniqueIds! >= 300, 20_000))
        assert.isBelow(Date.now() - started, 30_000, "delivered before the first lease ended")
        assert.deepStrictEqual([...server.received.ids].sort(), receipts.map((r) => r.id).sort())
      })))

  it.live("shutdown delivers what was emitted before the scope closed", () =>
    Effect.gen(function*() {
      const server = yield* ingestServer
      const prefix = yield* scopedPrefix
      const layer = DurableEmitter.layerWith({
        databaseUrl: Redacted.make(databaseUrl), ingestUrl: server.url, tablePrefix: prefix, retransmit: false,
        publishLinger: "200 millis"
      })
      const receipts = yield* emitMany(100).pipe(Effect.provide(layer))
      assert.strictEqual(server.received.ids.size, 100)
      assert.deepStrictEqual([...server.received.ids].sort(), receipts.map((r) => r.id).sort())
      const left = yield* backlog.pipe(Effect.provide(Layer.fresh(DurableEmitter.layerWith({
        databaseUrl: Redacted.make(databaseUrl), ingestUrl: server.url, tablePrefix: prefix, retransmit: false
      }))))
      assert.strictEqual(left, 0)
    }))
})
