/**
 * The ingest server's by-id sample of whole events (what the benchmark verifies events against)
 * and the control routes the benchmark reads: GET /ids and GET /samples.
 */
import { assert, describe, it } from "@effect/vitest"
import { type MessageInitShape } from "@bufbuild/protobuf"
import { createClient } from "@connectrpc/connect"
import { createGrpcTransport, Http2SessionManager } from "@connectrpc/connect-node"
import { Effect } from "effect"
import * as Event from "../src/Event.ts"
import { ChipIngress } from "../src/gen/chipingress/pb/chip_ingress_pb.js"
import { CloudEventSchema } from "../src/gen/io/cloudevents/v1/cloudevent_pb.js"
import { startControlServer } from "../src/testing/ingestControl.ts"
import type { ReceivedEvent } from "../src/testing/ingestModel.ts"
import { IngestServer } from "../src/testing/IngestServer.ts"
import { idSampleRecorder, inSample } from "../src/testing/ingestSample.ts"

const cloudEvent = (id: string, seq: number): MessageInitShape<typeof CloudEventSchema> => ({
  id,
  source: "s",
  specVersion: "1.0",
  type: "t",
  attributes: { seqnum: { attr: { case: "ceString", value: String(seq) } } },
  data: { case: "binaryData", value: new Uint8Array([seq, 1, 2]) }
})

const envelope = (id: string, payload: Uint8Array): ReceivedEvent => ({
  id, source: "", type: "", specVersion: "1.0", seqnum: undefined, attributes: {}, data: undefined, payload, receivedAt: 0
})

describe("ingest sample by id", () => {
  it("one in 16 is the ids ending in 0; one in 1 is every id; a non-hex tail only with everything", () => {
    assert.isTrue(inSample("0190f3c2-aaaa-7bbb-8ccc-0123456789a0", 16))
    assert.isFalse(inSample("0190f3c2-aaaa-7bbb-8ccc-0123456789a1", 16))
    assert.isTrue(inSample("anything", 1))
    assert.isFalse(inSample("id-xyz", 16))
    const ids = Array.from({ length: 4096 }, (_, i) => `x-${i.toString(16).padStart(4, "0")}`)
    assert.strictEqual(ids.filter((id) => inSample(id, 16)).length, 256)
  })

  it("keeps sampled events whole, decoded from the payload as sent (seqnum appended at send time), every copy", () => {
    const event = Event.prepare({ source: "src", type: "ty", data: new Uint8Array([9, 8, 7]) }, { emitterName: "e", maxEventBytes: 1 << 20, now: 1 })
    if (!("payload" in event)) throw new Error(event.message)
    const payload = Event.withSeqnum(event.payload, 42n)
    const sample = idSampleRecorder(16)
    sample.record(envelope(event.eventId, payload))
    sample.record(envelope(event.eventId, payload))
    assert.strictEqual(sample.events().length, inSample(event.eventId, 16) ? 2 : 0)
    const all = idSampleRecorder(1)
    all.record(envelope(event.eventId, payload))
    const [kept] = all.events()
    assert.deepStrictEqual([kept?.id, kept?.source, kept?.type, kept?.seqnum, kept?.data], [event.eventId, "src", "ty", "42", new Uint8Array([9, 8, 7])])
    all.clear?.()
    assert.strictEqual(all.events().length, 0)
    assert.throws(() => idSampleRecorder(0), /not a positive integer/)
  })

  it.live("a server recording ids keeps the sample whole; the control endpoint answers the ids and the sample", () =>
    Effect.gen(function*() {
      const samples = idSampleRecorder(16)
      const server = yield* IngestServer.make({ record: "ids", recorders: [samples] })
      const control = yield* Effect.acquireRelease(Effect.promise(() => startControlServer(server, { samples })), (c) => Effect.promise(() => c.close()))
      const session = yield* Effect.acquireRelease(Effect.sync(() => new Http2SessionManager(server.url)), (s) => Effect.sync(() => s.abort()))
      const client = createClient(ChipIngress, createGrpcTransport({ baseUrl: server.url, sessionManager: session }))
      yield* Effect.promise(() => client.publishBatch({ events: [cloudEvent("a-0010", 1), cloudEvent("a-0011", 2), cloudEvent("a-0010", 1)] }))
      const get = (path: string) => Effect.promise(() => fetch(control.url + path).then((r) => r.json()))
      assert.deepStrictEqual((yield* get("/ids")) as Array<string>, ["a-0010", "a-0011"])
      const sample = (yield* get("/samples")) as Array<{ id: string; seqnum: string; data_base64: string }>
      assert.deepStrictEqual(sample.map((e) => [e.id, e.seqnum, e.data_base64]), [
        ["a-0010", "1", Buffer.from([1, 1, 2]).toString("base64")],
        ["a-0010", "1", Buffer.from([1, 1, 2]).toString("base64")]
      ])
      assert.strictEqual(server.received.stats.duplicates, 1)
      server.received.clear()
      assert.strictEqual(samples.events().length, 0)
    }))
})
