/**
 * The reference ingest server, driven by a plain connect client using the real generated schema
 * (so the server is checked against ordinary Chip Ingress clients, not only our raw batches).
 */
import { mkdtempSync, readFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { assert, describe, it } from "@effect/vitest"
import { create, type MessageInitShape } from "@bufbuild/protobuf"
import { Code, ConnectError, createClient } from "@connectrpc/connect"
import { createGrpcTransport, Http2SessionManager } from "@connectrpc/connect-node"
import { Effect } from "effect"
import { ChipIngress, PublishErrorCode } from "../src/gen/chipingress/pb/chip_ingress_pb.js"
import { CloudEventSchema } from "../src/gen/io/cloudevents/v1/cloudevent_pb.js"
import { IngestServer, type IngestServerOptions } from "../src/testing/IngestServer.ts"

const cloudEvent = (i: number, type = "t"): MessageInitShape<typeof CloudEventSchema> => ({
  id: `id-${i}`,
  source: "s",
  specVersion: "1.0",
  type,
  attributes: { seqnum: { attr: { case: "ceInteger", value: i } } },
  data: { case: "textData", value: `hello ${i}` }
})

/** A server and a connect client of the real ChipIngress service, both closed with the test. */
const setup = Effect.fnUntraced(function*(options: IngestServerOptions = {}) {
  const server = yield* IngestServer.make(options)
  const session = yield* Effect.acquireRelease(
    Effect.sync(() => new Http2SessionManager(server.url)),
    (s) => Effect.sync(() => s.abort())
  )
  const client = createClient(ChipIngress, createGrpcTransport({ baseUrl: server.url, sessionManager: session }))
  return { server, client }
})

const grpcError = (promise: () => Promise<unknown>) =>
  Effect.promise(() => promise().then(() => undefined, (e: unknown) => ConnectError.from(e)))

describe("IngestServer", () => {
  it.live("PublishBatch from a real-schema client; results carry event ids; text data and integer attributes", () =>
    Effect.gen(function*() {
      const { client, server } = yield* setup()
      const response = yield* Effect.promise(() => client.publishBatch({ events: [cloudEvent(1), cloudEvent(2)] }))
      assert.deepStrictEqual(response.results.map((r) => [r.eventId, r.error]), [["id-1", undefined], ["id-2", undefined]])
      const [first] = server.received.events
      assert.strictEqual(first?.data, "hello 1")
      assert.strictEqual(first?.seqnum, "1")
      assert.strictEqual(first?.attributes["seqnum"], 1)
      assert.strictEqual(server.received.requests[0]?.bytes, server.received.stats.bytes + 2 * 2)
    }))

  it.live("Publish records a single event", () =>
    Effect.gen(function*() {
      const { client, server } = yield* setup()
      yield* Effect.promise(() => client.publish(create(CloudEventSchema, cloudEvent(7))))
      assert.strictEqual(server.received.events[0]?.id, "id-7")
      assert.strictEqual(server.received.requests[0]?.method, "Publish")
    }))

  it.live("transaction_enabled: one rejected event fails every event, nothing is produced", () =>
    Effect.gen(function*() {
      const { client, server } = yield* setup()
      server.faults.reject({ type: "bad", code: "ENCODE_ERROR", reason: "cannot encode" })
      const response = yield* Effect.promise(() =>
        client.publishBatch({ events: [cloudEvent(1), cloudEvent(2, "bad")], options: { transactionEnabled: true } })
      )
      assert.deepStrictEqual(response.results.map((r) => r.error?.errorCode), [PublishErrorCode.UNKNOWN, PublishErrorCode.ENCODE_ERROR])
      assert.strictEqual(server.received.stats.events, 0)
      assert.strictEqual(server.received.stats.rejectedEvents, 2)
    }))

  it.live("failFraction uses the given randomness; latency delays the answer", () =>
    Effect.gen(function*() {
      const draws = [0.1, 0.9, 0.4, 0.6]
      const { client, server } = yield* setup({ random: () => draws.shift() ?? 1 })
      server.faults.failFraction(0.5, { status: "resource_exhausted" })
      const codes: Array<Code | undefined> = []
      for (let i = 0; i < 4; i++) codes.push((yield* grpcError(() => client.publishBatch({ events: [cloudEvent(i)] })))?.code)
      assert.deepStrictEqual(codes, [Code.ResourceExhausted, undefined, Code.ResourceExhausted, undefined])
      assert.strictEqual(server.received.stats.failedRequests, 2)

      server.faults.failFraction(0)
      server.faults.latency(80)
      const started = Date.now()
      yield* Effect.promise(() => client.publishBatch({ events: [cloudEvent(9)] }))
      assert.isAtLeast(Date.now() - started, 75)
    }))

  it.live("maxRequestBytes can answer INVALID_ARGUMENT; ping is refused while down or unauthenticated", () =>
    Effect.gen(function*() {
      const { client, server } = yield* setup()
      server.faults.maxRequestBytes(10, "invalid_argument")
      assert.strictEqual((yield* grpcError(() => client.publishBatch({ events: [cloudEvent(1)] })))?.code, Code.InvalidArgument)
      server.faults.maxRequestBytes(undefined)
      server.faults.requireAuthorization("Bearer x")
      assert.strictEqual((yield* grpcError(() => client.ping({})))?.code, Code.Unauthenticated)
      assert.strictEqual(
        (yield* Effect.promise(() => client.ping({}, { headers: { authorization: "Bearer x" } }))).message,
        "pong"
      )
      yield* Effect.promise(() => server.faults.clear())
      assert.strictEqual((yield* Effect.promise(() => client.ping({}))).message, "pong")
    }))

  it.live("record modes bound memory; JSON lines are appended", () =>
    Effect.gen(function*() {
      const jsonl = join(mkdtempSync(join(tmpdir(), "ingest-")), "events.jsonl")
      const counts = yield* setup({ record: "counts", jsonl })
      yield* Effect.promise(() => counts.client.publishBatch({ events: [cloudEvent(1), cloudEvent(1)] }))
      assert.deepInclude(counts.server.received.stats, { events: 2, uniqueIds: null, duplicates: null })
      assert.strictEqual(counts.server.received.events.length, 0)
      yield* Effect.promise(() => counts.server.close())
      const lines = readFileSync(jsonl, "utf8").trim().split("\n").map((l) => JSON.parse(l))
      assert.strictEqual(lines.length, 2)
      assert.deepInclude(lines[0], { id: "id-1", source: "s", type: "t", seqnum: "1", text_data: "hello 1" })

      const ids = yield* setup({ record: "ids" })
      yield* Effect.promise(() => ids.client.publishBatch({ events: [cloudEvent(1), cloudEvent(1), cloudEvent(2)] }))
      assert.deepInclude(ids.server.received.stats, { events: 3, uniqueIds: 2, duplicates: 1 })
      assert.strictEqual(ids.server.received.events.length, 0)
      ids.server.received.clear()
      assert.strictEqual(ids.server.received.stats.events, 0)
    }))

  it.live("reading only the envelope (record ids), it still validates, applies rules and refuses what is not a CloudEvent", () =>
    Effect.gen(function*() {
      const { client, server } = yield* setup({ record: "ids" })
      server.faults.reject({ type: "refused", code: "SCHEMA_MISSING" })
      // A CloudEvent whose id field is not length-delimited: not decodable as one.
      const broken = create(CloudEventSchema)
      broken.$unknown = [{ no: 1, wireType: 0, data: Uint8Array.of(1) }]
      const response = yield* Effect.promise(() =>
        client.publishBatch({ events: [cloudEvent(1), cloudEvent(2, "refused"), { ...cloudEvent(3), specVersion: "0.3" }, broken] })
      )
      assert.deepStrictEqual(response.results.map((r) => [r.eventId, r.error?.errorCode]), [
        ["id-1", undefined],
        ["id-2", PublishErrorCode.SCHEMA_MISSING],
        ["id-3", PublishErrorCode.VALIDATION_FAILED],
        ["", PublishErrorCode.VALIDATION_FAILED]
      ])
      assert.include(response.results[3]?.error?.reason, "not a CloudEvent")
      assert.deepInclude(server.received.stats, { events: 1, uniqueIds: 1, rejectedEvents: 3 })
    }))

  it.live("waitFor gives up with the stats it saw", () =>
    Effect.gen(function*() {
      const { server } = yield* setup()
      const error = yield* Effect.promise(() => server.received.waitForEvents(1, 30).then(() => undefined, (e: Error) => e))
      assert.include(error?.message, "\"events\":0")
    }))
})
