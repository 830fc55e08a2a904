import { assert, describe, it } from "@effect/vitest"
import { create, toBinary } from "@bufbuild/protobuf"
import { Effect } from "effect"
import { CloudEventSchema } from "../src/gen/io/cloudevents/v1/cloudevent_pb.js"
import { makeIngestServerProcess } from "../src/testing/IngestServerProcess.ts"
import * as GrpcTransport from "../src/transport/GrpcTransport.ts"

const event = (i: number) =>
  toBinary(CloudEventSchema, create(CloudEventSchema, { id: `id-${i}`, source: "s", specVersion: "1.0", type: "t" }))

describe("ingest server in its own process", () => {
  it.live("serves gRPC, reports stats and takes faults through the control endpoint", () =>
    Effect.gen(function*() {
      const server = yield* makeIngestServerProcess()
      assert.match(server.url, /^http:\/\/127\.0\.0\.1:\d+$/)
      const transport = yield* GrpcTransport.make({ url: server.url, timeout: "2 seconds" })
      assert.strictEqual(yield* transport.ping, "pong")
      yield* transport.publishBatch([event(1), event(2)])
      yield* transport.publishBatch([event(2)])
      const stats = yield* Effect.promise(() => server.stats())
      assert.deepInclude(stats, { requests: 2, events: 3, uniqueIds: 2, duplicates: 1 })

      yield* Effect.promise(() => server.faults({ failNext: { count: 1, failure: { status: "unavailable", pushbackMs: 900 } } }))
      const error = yield* Effect.flip(transport.publishBatch([event(3)]))
      assert.deepStrictEqual([error.kind, error.code, error.retryAfterMs], ["retryable", "unavailable", 900])

      yield* Effect.promise(() => server.faults({ down: "refuse" }))
      assert.strictEqual((yield* Effect.flip(transport.publishBatch([event(4)]))).code, "network")
      yield* Effect.promise(() => server.clearFaults())
      yield* transport.publishBatch([event(4)])
      assert.strictEqual((yield* Effect.promise(() => server.stats())).uniqueIds, 3)
    }), 60_000)
})
