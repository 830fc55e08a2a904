/**
 * GrpcTransport against the real reference ingest server over loopback HTTP/2. Real sockets mean
 * real time here (it.live); every timeout is a few hundred milliseconds.
 */
import { readFileSync } from "node:fs"
import { assert, describe, it } from "@effect/vitest"
import { create, fromBinary, toBinary } from "@bufbuild/protobuf"
import { timestampFromMs } from "@bufbuild/protobuf/wkt"
import { Effect, Fiber, Redacted, Ref } from "effect"
import { type CloudEvent, CloudEventSchema } from "../src/gen/io/cloudevents/v1/cloudevent_pb.js"
import { IngestServer, type IngestServerOptions } from "../src/testing/IngestServer.ts"
import * as GrpcTransport from "../src/transport/GrpcTransport.ts"
import { Transport, TransportError } from "../src/Transport.ts"

const cloudEvent = (i: number, init: Partial<{ type: string; source: string; id: string; data: Uint8Array }> = {}) =>
  toBinary(
    CloudEventSchema,
    create(CloudEventSchema, {
      id: init.id ?? `00000000-0000-4000-8000-${String(i).padStart(12, "0")}`,
      source: init.source ?? "billing",
      specVersion: "1.0",
      type: init.type ?? "invoice.paid",
      attributes: {
        seqnum: { attr: { case: "ceString", value: String(i + 1) } },
        recordedtime: { attr: { case: "ceTimestamp", value: timestampFromMs(1_750_000_000_000 + i) } },
        datacontenttype: { attr: { case: "ceString", value: "application/octet-stream" } },
        emitter: { attr: { case: "ceString", value: "test" } }
      },
      data: { case: "binaryData", value: init.data ?? new Uint8Array([i & 0xff, 1, 2, 3]) }
    })
  )

const events = (n: number, init?: Parameters<typeof cloudEvent>[1]) => Array.from({ length: n }, (_, i) => cloudEvent(i, init))

/** A fresh server and a transport to it, both closed with the test's scope. */
const setup = Effect.fnUntraced(function*(
  transportOptions: Partial<GrpcTransport.GrpcTransportOptions> = {},
  serverOptions: IngestServerOptions = {}
) {
  const server = yield* IngestServer.make(serverOptions)
  const transport = yield* GrpcTransport.make({ url: server.url, timeout: "300 millis", ...transportOptions })
  return { server, transport }
})

const failure = <A>(effect: Effect.Effect<A, TransportError>) => Effect.flip(effect)

describe("GrpcTransport", () => {
  it.live("delivers a batch: the server decodes the exact CloudEvents, attributes intact", () =>
    Effect.gen(function*() {
      const { server, transport } = yield* setup()
      const batch = events(3)
      const results = yield* transport.publishBatch(batch)
      assert.deepStrictEqual(results.map((r) => r._tag), ["Delivered", "Delivered", "Delivered"])
      const received = server.received.events
      assert.strictEqual(received.length, 3)
      for (let i = 0; i < 3; i++) {
        const got = received[i]!
        assert.deepStrictEqual(got.payload, batch[i])
        const sent: CloudEvent = fromBinary(CloudEventSchema, batch[i]!)
        assert.strictEqual(got.id, sent.id)
        assert.strictEqual(got.source, "billing")
        assert.strictEqual(got.type, "invoice.paid")
        assert.strictEqual(got.seqnum, String(i + 1))
        assert.strictEqual(got.attributes["emitter"], "test")
        assert.strictEqual((got.attributes["recordedtime"] as Date).getTime(), 1_750_000_000_000 + i)
        assert.deepStrictEqual(got.data, new Uint8Array([i, 1, 2, 3]))
      }
      assert.strictEqual(server.received.stats.uniqueIds, 3)
      assert.strictEqual(server.received.requests[0]?.method, "PublishBatch")
    }))

  it.live("an empty batch sends nothing", () =>
    Effect.gen(function*() {
      const { server, transport } = yield* setup()
      assert.deepStrictEqual(yield* transport.publishBatch([]), [])
      assert.strictEqual(server.received.stats.requests, 0)
    }))

  it.live("ping answers the server's message", () =>
    Effect.gen(function*() {
      const { transport } = yield* setup({}, { pingMessage: "hello" })
      assert.strictEqual(yield* transport.ping, "hello")
    }))

  it.live("per-event rejections are mapped by position, with the PublishErrorCode name and reason", () =>
    Effect.gen(function*() {
      const { server, transport } = yield* setup()
      server.faults.reject({ type: "bad.type", code: "SCHEMA_MISSING", reason: "no schema for bad.type" })
      server.faults.reject((e) => (e.source === "evil" ? { code: "DOMAIN_MISCONFIGURATION", reason: "unknown domain" } : undefined))
      const batch = [
        cloudEvent(0),
        cloudEvent(1, { type: "bad.type" }),
        cloudEvent(2),
        cloudEvent(3, { source: "evil" }),
        new Uint8Array([0xff, 0xff, 0xff]), // not a CloudEvent
        cloudEvent(5, { id: "" })
      ]
      const results = yield* transport.publishBatch(batch)
      assert.deepStrictEqual(results.slice(0, 4), [
        { _tag: "Delivered" },
        { _tag: "Rejected", code: "SCHEMA_MISSING", reason: "no schema for bad.type" },
        { _tag: "Delivered" },
        { _tag: "Rejected", code: "DOMAIN_MISCONFIGURATION", reason: "unknown domain" }
      ])
      assert.strictEqual(results[4]?._tag === "Rejected" && results[4].code, "VALIDATION_FAILED")
      assert.deepStrictEqual(results[5], { _tag: "Rejected", code: "VALIDATION_FAILED", reason: "id is empty" })
      assert.strictEqual(server.received.stats.events, 2)
      assert.strictEqual(server.received.stats.rejectedEvents, 4)
    }))

  it.live("an empty results list means all delivered (older servers)", () =>
    Effect.gen(function*() {
      const { server, transport } = yield* setup()
      server.faults.results("empty")
      const results = yield* transport.publishBatch(events(4))
      assert.deepStrictEqual(results.map((r) => r._tag), ["Delivered", "Delivered", "Delivered", "Delivered"])
    }))

  it.live("fewer results than events is a retryable mismatch", () =>
    Effect.gen(function*() {
      const { server, transport } = yield* setup()
      server.faults.results({ count: 2 })
      const error = yield* failure(transport.publishBatch(events(5)))
      assert.strictEqual(error.kind, "retryable")
      assert.strictEqual(error.code, "mismatch")
      assert.include(error.reason, "2 results for 5 events")
    }))

  it.live("UNAVAILABLE with push-back is retryable; the largest push-back wins", () =>
    Effect.gen(function*() {
      const { server, transport } = yield* setup()
      server.faults.failNext(1, { status: "unavailable", pushbackMs: 1500, retryInfoMs: 2500, retryAfter: 2 })
      const error = yield* failure(transport.publishBatch(events(2)))
      assert.strictEqual(error.kind, "retryable")
      assert.strictEqual(error.code, "unavailable")
      assert.strictEqual(error.retryAfterMs, 2500)
      // the next request goes through
      assert.strictEqual((yield* transport.publishBatch(events(2))).length, 2)
    }))

  it.live("each push-back form arrives on its own", () =>
    Effect.gen(function*() {
      const { server, transport } = yield* setup()
      server.faults.failNext(1, { status: "resource_exhausted", pushbackMs: 700 })
      assert.strictEqual((yield* failure(transport.publishBatch(events(1)))).retryAfterMs, 700)
      server.faults.failNext(1, { status: "unavailable", retryAfter: 3 })
      assert.strictEqual((yield* failure(transport.publishBatch(events(1)))).retryAfterMs, 3000)
      server.faults.failNext(1, { status: "unavailable", retryInfoMs: 1234 })
      assert.strictEqual((yield* failure(transport.publishBatch(events(1)))).retryAfterMs, 1234)
      server.faults.failNext(1, { status: "unavailable" })
      assert.isUndefined((yield* failure(transport.publishBatch(events(1)))).retryAfterMs)
    }))

  it.live("UNAUTHENTICATED is a configuration fault; INVALID_ARGUMENT is permanent", () =>
    Effect.gen(function*() {
      const { server, transport } = yield* setup()
      server.faults.requireAuthorization("Bearer secret")
      const auth = yield* failure(transport.publishBatch(events(1)))
      assert.strictEqual(auth.kind, "config")
      assert.strictEqual(auth.code, "unauthenticated")
      server.faults.requireAuthorization(undefined)
      server.faults.failNext(1, { status: "invalid_argument", message: "bad request" })
      const bad = yield* failure(transport.publishBatch(events(1)))
      assert.strictEqual(bad.kind, "permanent")
      assert.strictEqual(bad.code, "invalid_argument")
      assert.strictEqual(bad.reason, "bad request")
    }))

  it.live("static headers arrive, Redacted values unwrapped", () =>
    Effect.gen(function*() {
      const { server, transport } = yield* setup({
        headers: { authorization: Redacted.make("Bearer secret"), "x-tenant": "acme" }
      })
      server.faults.requireAuthorization("Bearer secret")
      yield* transport.publishBatch(events(1))
      assert.strictEqual(yield* transport.ping, "pong")
      assert.strictEqual(server.received.requests[0]?.headers["x-tenant"], "acme")
    }))

  it.live("a retry says how many attempts came before it (grpc-previous-rpc-attempts); a first attempt does not", () =>
    Effect.gen(function*() {
      const { server, transport } = yield* setup({ headers: { "x-tenant": "acme" } })
      yield* transport.publishBatch(events(1))
      yield* transport.publishBatch(events(1), { previousAttempts: 0 })
      yield* transport.publishBatch(events(1), { previousAttempts: 3 })
      const received = server.received.requests.map((r) => r.headers)
      assert.deepStrictEqual(received.map((h) => h[GrpcTransport.previousAttemptsHeader]), [undefined, undefined, "3"])
      assert.deepStrictEqual(received.map((h) => h["x-tenant"]), ["acme", "acme", "acme"])
    }))

  it.live("rotating headers are evaluated per request", () =>
    Effect.gen(function*() {
      const counter = yield* Ref.make(0)
      const headers = Ref.updateAndGet(counter, (n) => n + 1).pipe(
        Effect.map((n) => ({ authorization: Redacted.make(`Bearer token-${n}`) }))
      )
      const { server, transport } = yield* setup({ headers })
      yield* transport.publishBatch(events(1))
      yield* transport.publishBatch(events(1))
      assert.deepStrictEqual(server.received.requests.map((r) => r.headers["authorization"]), [
        "Bearer token-1",
        "Bearer token-2"
      ])
    }))

  it.live("a failing header effect fails the request with its TransportError", () =>
    Effect.gen(function*() {
      const headers = Effect.fail(new TransportError({ kind: "config", code: "credentials", reason: "token refresh failed" }))
      const { server, transport } = yield* setup({ headers })
      const error = yield* failure(transport.publishBatch(events(1)))
      assert.strictEqual(error.code, "credentials")
      assert.strictEqual(server.received.stats.requests, 0)
    }))

  it.live("gzip compresses requests and the events arrive intact", () =>
    Effect.gen(function*() {
      const { server, transport } = yield* setup({ gzip: true })
      const batch = events(50)
      yield* transport.publishBatch(batch)
      assert.strictEqual(server.received.requests[0]?.encoding, "gzip")
      assert.deepStrictEqual(server.received.events.map((e) => e.payload), batch)
    }))

  it.live("a hanging server times out as retryable within the timeout", () =>
    Effect.gen(function*() {
      const { server, transport } = yield* setup({ timeout: "200 millis" })
      server.faults.hang()
      const started = Date.now()
      const error = yield* failure(transport.publishBatch(events(1)))
      const elapsed = Date.now() - started
      assert.strictEqual(error.kind, "retryable")
      assert.strictEqual(error.code, "timeout")
      assert.isAtLeast(elapsed, 190)
      assert.isBelow(elapsed, 600)
      yield* Effect.promise(() => server.received.waitFor((s) => s.abandonedRequests === 1, 1000))
      server.faults.hang(false)
      assert.strictEqual((yield* transport.publishBatch(events(1))).length, 1)
    }))

  it.live("the local backstop fires even if the connection never gets going", () =>
    Effect.gen(function*() {
      // A header effect that never completes: connect's deadline has not even started.
      const { transport } = yield* setup({ timeout: "150 millis", headers: Effect.never })
      const started = Date.now()
      const error = yield* failure(transport.publishBatch(events(1)))
      assert.strictEqual(error.code, "timeout")
      assert.isBelow(Date.now() - started, 500)
    }))

  it.live("a connection reset is retryable, and the next request reconnects", () =>
    Effect.gen(function*() {
      const { server, transport } = yield* setup()
      yield* transport.publishBatch(events(1))
      server.faults.resetConnections(1)
      const error = yield* failure(transport.publishBatch(events(1)))
      assert.strictEqual(error.kind, "retryable")
      server.faults.resetConnections(1, { how: "stream" })
      const streamError = yield* failure(transport.publishBatch(events(1)))
      assert.strictEqual(streamError.kind, "retryable")
      assert.strictEqual((yield* transport.publishBatch(events(1))).length, 1)
      assert.strictEqual(server.received.stats.events, 2)
    }))

  it.live("a reset after the server recorded the batch loses only the answer", () =>
    Effect.gen(function*() {
      const { server, transport } = yield* setup()
      server.faults.resetConnections(1, { when: "after" })
      const batch = events(3)
      assert.strictEqual((yield* failure(transport.publishBatch(batch))).kind, "retryable")
      yield* transport.publishBatch(batch)
      assert.strictEqual(server.received.stats.events, 6)
      assert.strictEqual(server.received.stats.duplicates, 3)
    }))

  it.live("a refused connection is a retryable network error; delivery resumes when the server is back", () =>
    Effect.gen(function*() {
      const { server, transport } = yield* setup()
      yield* Effect.promise(() => server.faults.down("refuse"))
      const error = yield* failure(transport.publishBatch(events(1)))
      assert.strictEqual(error.kind, "retryable")
      assert.strictEqual(error.code, "network")
      assert.include(error.reason, "ECONNREFUSED")
      yield* Effect.promise(() => server.faults.up())
      assert.strictEqual((yield* transport.publishBatch(events(1))).length, 1)
    }))

  it.live("a GOAWAY on an idle connection does not crash the process (connect-es#1768)", () =>
    Effect.gen(function*() {
      const uncaught: Array<unknown> = []
      const onUncaught = (error: unknown) => void uncaught.push(error)
      yield* Effect.acquireRelease(
        Effect.sync(() => process.on("uncaughtException", onUncaught)),
        () => Effect.sync(() => process.off("uncaughtException", onUncaught))
      )
      const { server, transport } = yield* setup()
      for (let round = 0; round < 3; round++) {
        yield* Effect.promise(() => server.faults.up())
        server.faults.failNext(1, { status: "internal" })
        yield* Effect.exit(transport.publishBatch(events(1)))
        yield* Effect.sleep("30 millis")
        // The server drops the idle connection (GOAWAY) while a new request is being started.
        yield* Effect.promise(() => server.faults.down())
        assert.strictEqual((yield* failure(transport.publishBatch(events(1)))).kind, "retryable")
        yield* Effect.sleep("50 millis")
      }
      assert.deepStrictEqual(uncaught, [])
    }))

  it.live("down = unavailable answers UNAVAILABLE", () =>
    Effect.gen(function*() {
      const { server, transport } = yield* setup()
      yield* Effect.promise(() => server.faults.down("unavailable"))
      const error = yield* failure(transport.ping)
      assert.strictEqual(error.code, "unavailable")
      assert.strictEqual(error.kind, "retryable")
    }))

  it.live("the server's request limit answers RESOURCE_EXHAUSTED (retryable)", () =>
    Effect.gen(function*() {
      const { server, transport } = yield* setup()
      server.faults.maxRequestBytes(500)
      const error = yield* failure(transport.publishBatch(events(20)))
      assert.strictEqual(error.code, "resource_exhausted")
      assert.strictEqual(error.kind, "retryable")
    }))

  it.live("maxRequestBytes splits an oversize batch into requests under the limit, in order", () =>
    Effect.gen(function*() {
      const { server, transport } = yield* setup({ maxRequestBytes: 500 })
      server.faults.maxRequestBytes(500)
      const batch = [...events(10), cloudEvent(99, { data: new Uint8Array(600) }), ...events(3, { type: "late" })]
      const results = yield* transport.publishBatch(batch)
      assert.strictEqual(results.length, 14)
      assert.strictEqual(results[10]?._tag === "Rejected" && results[10].code, "REQUEST_TOO_LARGE")
      assert.isTrue(results.every((r, i) => i === 10 || r._tag === "Delivered"))
      assert.isAbove(server.received.requests.length, 1)
      assert.isTrue(server.received.requests.every((r) => r.bytes <= 500))
      assert.deepStrictEqual(server.received.events.map((e) => e.payload), [...batch.slice(0, 10), ...batch.slice(11)])
    }))

  it.live("interrupting a call cancels the request", () =>
    Effect.gen(function*() {
      const { server, transport } = yield* setup({ timeout: "5 seconds" })
      server.faults.hang()
      const fiber = yield* Effect.forkChild(transport.publishBatch(events(1)))
      yield* Effect.promise(() => server.received.waitFor((s) => s.requests === 1, 1000))
      yield* Fiber.interrupt(fiber)
      yield* Effect.promise(() => server.received.waitFor((s) => s.abandonedRequests === 1, 1000))
      server.faults.hang(false)
      assert.strictEqual(server.received.stats.events, 0)
    }))

  it.live("concurrent requests share one HTTP/2 connection, closed with the layer's scope", () =>
    Effect.gen(function*() {
      const server = yield* IngestServer.make()
      yield* Effect.scoped(Effect.gen(function*() {
        const transport = yield* GrpcTransport.make({ url: server.url, timeout: "1 second" })
        yield* Effect.forEach(Array.from({ length: 8 }, (_, i) => i), () => transport.publishBatch(events(10)), {
          concurrency: "unbounded"
        })
        assert.strictEqual(server.connections(), 1)
      }))
      yield* Effect.promise(() => server.received.waitFor(() => server.connections() === 0, 1000))
      assert.strictEqual(server.received.stats.events, 80)
    }))

  it.live("https:// uses TLS; the CA is passed through nodeOptions; an untrusted certificate is a config fault", () =>
    Effect.gen(function*() {
      const tls = {
        key: readFileSync(new URL("./fixtures/tls/server.key", import.meta.url)),
        cert: readFileSync(new URL("./fixtures/tls/server.crt", import.meta.url))
      }
      const server = yield* IngestServer.make({ tls })
      assert.match(server.url, /^https:/)
      const trusted = yield* GrpcTransport.make({ url: server.url, timeout: "1 second", nodeOptions: { ca: tls.cert } })
      assert.strictEqual((yield* trusted.publishBatch(events(2))).length, 2)
      assert.strictEqual(server.received.stats.events, 2)
      const untrusted = yield* GrpcTransport.make({ url: server.url, timeout: "1 second" })
      const error = yield* failure(untrusted.publishBatch(events(1)))
      assert.strictEqual(error.kind, "config")
      assert.strictEqual(error.code, "tls")
      assert.include(error.reason, "SELF_SIGNED_CERT")
    }))

  it.live("the layer provides Transport", () =>
    Effect.gen(function*() {
      const server = yield* IngestServer.make()
      const message = yield* Effect.flatMap(Transport, (t) => t.ping).pipe(
        Effect.provide(GrpcTransport.layer({ url: server.url }))
      )
      assert.strictEqual(message, "pong")
    }))

  it.effect("invalid options fail the layer with InvalidConfig", () =>
    Effect.gen(function*() {
      const errors = yield* Effect.forEach(
        [{ url: "not a url" }, { url: "ftp://x" }, { url: "http://x", timeout: 0 }, { url: "http://x", maxRequestBytes: -1 }],
        (options) => Effect.flip(Effect.scoped(GrpcTransport.make(options)))
      )
      assert.deepStrictEqual(errors.map((e) => e.option), ["url", "url", "timeout", "maxRequestBytes"])
    }))
})
