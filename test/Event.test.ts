import { assert, describe, it } from "@effect/vitest"
import { create, toBinary } from "@bufbuild/protobuf"
import { timestampFromMs } from "@bufbuild/protobuf/wkt"
import { createHash } from "node:crypto"
import { EventTooLarge, InvalidEvent } from "../src/Errors.ts"
import * as Encode from "../src/event/encode.ts"
import * as Event from "../src/Event.ts"
import { CloudEventAttributeValueSchema, CloudEventSchema } from "../src/gen/io/cloudevents/v1/cloudevent_pb.js"
import type { NewEvent } from "../src/Store.ts"

const context: Event.PrepareContext = { emitterName: "test-emitter", maxEventBytes: 1024 * 1024, now: 1_764_000_000_123 }

const ok = (result: ReturnType<typeof Event.prepare>): NewEvent => {
  if (result instanceof InvalidEvent || result instanceof EventTooLarge) throw new Error(result.message)
  return result
}

const attrs = (event: NewEvent) =>
  Object.fromEntries(Object.entries(Event.decode(event.payload).attributes).map(([k, v]) => [k, Event.attributeValue(v)]))

describe("Event.prepare", () => {
  it("builds a CloudEvent with a fixed id, specversion, recordedtime, idempotency key and emitter", () => {
    const bytes = new Uint8Array([1, 2, 3])
    const event = ok(Event.prepare({ source: "billing", type: "invoice.paid", data: bytes, subject: "inv-1" }, context))
    const decoded = Event.decode(event.payload)
    assert.strictEqual(decoded.id, event.eventId)
    assert.match(event.eventId, /^[0-9a-f-]{36}$/)
    assert.strictEqual(decoded.specVersion, "1.0")
    assert.strictEqual(decoded.source, "billing")
    assert.strictEqual(decoded.type, "invoice.paid")
    assert.deepStrictEqual(decoded.data, { case: "binaryData", value: bytes })
    const a = attrs(event)
    assert.strictEqual(a.recordedtime, "2025-11-24T16:00:00.123Z")
    assert.strictEqual(a.emitter, "test-emitter")
    assert.strictEqual(a.subject, "inv-1")
    assert.isUndefined(a.seqnum)
  })

  it("computes the reference idempotency key over length-prefixed source, type and body", () => {
    const body = new TextEncoder().encode("hello")
    const expected = createHash("sha256").update(Buffer.from([
      0, 0, 0, 1, ...Buffer.from("s"), 0, 0, 0, 1, ...Buffer.from("t"), 0, 0, 0, 5, ...body
    ])).digest("hex")
    assert.strictEqual(Event.idempotencyKey("s", "t", body), expected)
    const event = ok(Event.prepare({ source: "s", type: "t", data: "hello" }, context))
    assert.strictEqual(attrs(event).idempotencykey, expected)
    // a body too large for the shared buffer is streamed; a short one after it gets the same key again
    const large = new Uint8Array(100_000).fill(7)
    const largeExpected = createHash("sha256").update(Buffer.from([0, 0, 0, 1, 115, 0, 0, 0, 1, 116, 0, 1, 0x86, 0xa0])).update(large).digest("hex")
    assert.strictEqual(Event.idempotencyKey("s", "t", large), largeExpected)
    assert.strictEqual(Event.idempotencyKey("s", "t", body), expected)
    const keyed = ok(Event.prepare({ source: "s", type: "t", data: "hello", idempotencyKey: "k1" }, context))
    assert.strictEqual(attrs(keyed).idempotencykey, "k1")
  })

  it("serializes JSON data with application/json and keeps an explicit content type", () => {
    const event = ok(Event.prepare({ source: "s", type: "t", data: { a: [1, "x"] } }, context))
    assert.deepStrictEqual(Event.decode(event.payload).data, { case: "textData", value: "{\"a\":[1,\"x\"]}" })
    assert.strictEqual(attrs(event).datacontenttype, "application/json")
    const text = ok(Event.prepare({ source: "s", type: "t", data: "x", datacontenttype: "text/plain" }, context))
    assert.strictEqual(attrs(text).datacontenttype, "text/plain")
  })

  it("carries extensions, time, dataschema and trace context", () => {
    const event = ok(Event.prepare({
      source: "s", type: "t", time: "2026-01-02T03:04:05.678+01:00", dataschema: "https://example.com/s",
      extensions: { tenant: "acme", shard: 7, live: true, blob: new Uint8Array([9]) }
    }, { ...context, traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", tracestate: "" }))
    const a = attrs(event)
    assert.strictEqual(a.time, "2026-01-02T02:04:05.678Z")
    assert.strictEqual(a.dataschema, "https://example.com/s")
    assert.strictEqual(a.tenant, "acme")
    assert.strictEqual(a.shard, 7)
    assert.strictEqual(a.live, true)
    assert.deepStrictEqual(a.blob, new Uint8Array([9]))
    assert.strictEqual(a.traceparent, "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
    assert.isUndefined(a.tracestate)
  })

  it("gives every event its own id", () => {
    const a = ok(Event.prepare({ source: "s", type: "t" }, context))
    const b = ok(Event.prepare({ source: "s", type: "t" }, context))
    assert.notStrictEqual(a.eventId, b.eventId)
  })

  const rejects: ReadonlyArray<[string, Event.EmitInput, string]> = [
    ["empty source", { source: "", type: "t" }, "source"],
    ["empty type", { source: "s", type: "" }, "type"],
    ["upper-case extension", { source: "s", type: "t", extensions: { Tenant: "x" } }, "extensions.Tenant"],
    ["long extension", { source: "s", type: "t", extensions: { abcdefghijklmnopqrstu: "x" } }, "extensions.abcdefghijklmnopqrstu"],
    ["reserved extension", { source: "s", type: "t", extensions: { seqnum: "1" } }, "extensions.seqnum"],
    ["non-int32 extension", { source: "s", type: "t", extensions: { n: 1.5 } }, "extensions.n"],
    ["bad time", { source: "s", type: "t", time: "yesterday" }, "time"],
    ["empty subject", { source: "s", type: "t", subject: "" }, "subject"],
    ["empty idempotency key", { source: "s", type: "t", idempotencyKey: "" }, "idempotencyKey"],
    ["cyclic JSON", { source: "s", type: "t", data: (() => { const o: any = {}; o.o = o; return o })() }, "data"]
  ]
  for (const [name, input, field] of rejects) {
    it(`rejects ${name} naming the field`, () => {
      const result = Event.prepare(input, context)
      assert.instanceOf(result, InvalidEvent)
      assert.strictEqual((result as InvalidEvent).field, field)
      assert.include((result as InvalidEvent).message, field)
    })
  }

  it("rejects an event whose encoding exceeds the limit, seqnum included", () => {
    const small = ok(Event.prepare({ source: "s", type: "t", data: new Uint8Array(100) }, context))
    const limit = small.payload.length + Event.seqnumReserve
    assert.notInstanceOf(Event.prepare({ source: "s", type: "t", data: new Uint8Array(100) }, { ...context, maxEventBytes: limit }), EventTooLarge)
    const tooLarge = Event.prepare({ source: "s", type: "t", data: new Uint8Array(101) }, { ...context, maxEventBytes: limit })
    assert.instanceOf(tooLarge, EventTooLarge)
    assert.strictEqual((tooLarge as EventTooLarge).maxBytes, limit)
  })
})

describe("Event.withSeqnum", () => {
  it("appends the seqnum attribute without touching the rest", () => {
    const event = ok(Event.prepare({ source: "s", type: "t", data: "x", extensions: { a: "b" } }, context))
    for (const seq of [1n, 127n, 128n, 99999999999999999999n]) {
      const stamped = Event.withSeqnum(event.payload, seq)
      assert.isAtMost(stamped.length - event.payload.length, Event.seqnumReserve)
      const decoded = Event.decode(stamped)
      assert.strictEqual(Event.attributeValue(decoded.attributes.seqnum), seq.toString())
      assert.strictEqual(Event.attributeValue(decoded.attributes.a), "b")
      assert.strictEqual(decoded.id, event.eventId)
    }
  })
})

describe("encodeCloudEvent", () => {
  const viaReflection = (fields: Encode.CloudEventFields) =>
    toBinary(CloudEventSchema, create(CloudEventSchema, {
      id: fields.id,
      source: fields.source,
      specVersion: "1.0",
      type: fields.type,
      attributes: Object.fromEntries(fields.attributes.map(([name, v]) => [
        name,
        create(CloudEventAttributeValueSchema, {
          attr: v.case === "ceTimestamp" ? { case: "ceTimestamp", value: timestampFromMs(v.value) } : v as never
        })
      ])),
      data: fields.data.case === undefined ? { case: undefined } : fields.data as never
    }))

  const cases: ReadonlyArray<Encode.CloudEventFields> = [
    { id: "a", source: "s", type: "t", attributes: [], data: { case: undefined } },
    {
      id: "e5c1d3c4-0000-4000-8000-000000000001", source: "bïlling/ünicode ✓", type: "invoice.paid",
      attributes: [
        ["flag", { case: "ceBoolean", value: false }],
        ["on", { case: "ceBoolean", value: true }],
        ["zero", { case: "ceInteger", value: 0 }],
        ["neg", { case: "ceInteger", value: -2147483648 }],
        ["max", { case: "ceInteger", value: 2147483647 }],
        ["text", { case: "ceString", value: "" }],
        ["uri", { case: "ceUri", value: "https://example.com/x" }],
        ["ref", { case: "ceUriRef", value: "/x" }],
        ["blob", { case: "ceBytes", value: new Uint8Array([0, 255, 7]) }],
        ["epoch", { case: "ceTimestamp", value: 0 }],
        ["before", { case: "ceTimestamp", value: -1_500 }],
        ["now", { case: "ceTimestamp", value: 1_764_000_000_123 }]
      ],
      data: { case: "binaryData", value: new Uint8Array(300).fill(9) }
    },
    { id: "x", source: "s", type: "t", attributes: [["k", { case: "ceString", value: "v".repeat(200) }]], data: { case: "textData", value: "héllo" } },
    { id: "x", source: "s", type: "t", attributes: [], data: { case: "binaryData", value: new Uint8Array(0) } },
    // surrogate pairs, a lone surrogate (written as U+FFFD), 2- and 3-byte characters
    {
      id: "x", source: "s😀", type: "t\ud800x",
      attributes: [["k", { case: "ceString", value: "ß€😀\udc00" }], ["u", { case: "ceUri", value: "é".repeat(100) }]],
      data: { case: "textData", value: "😀".repeat(50) }
    },
    // scalar attributes at their largest (negative int32 and timestamps: 10-byte varints)
    {
      id: "z", source: "s", type: "t",
      attributes: Array.from({ length: 40 }, (_, i) => [`a${i}`, i % 2 === 0
        ? { case: "ceTimestamp", value: -62_135_596_800_001 }
        : { case: "ceInteger", value: -2147483648 }] as const),
      data: { case: undefined }
    },
    // larger than the reused buffer, then a small event after it
    { id: "x", source: "s", type: "t", attributes: [], data: { case: "binaryData", value: new Uint8Array(200_000).fill(3) } },
    { id: "y", source: "s", type: "t", attributes: [["far", { case: "ceTimestamp", value: 253_402_300_799_999 }]], data: { case: undefined } }
  ]

  for (const [i, fields] of cases.entries()) {
    it(`writes what the generated schema reads (case ${i})`, () => {
      const direct = Event.decode(Encode.encodeCloudEvent(fields))
      const reference = Event.decode(viaReflection(fields))
      assert.deepStrictEqual(direct, reference)
      assert.deepStrictEqual(Encode.encodeCloudEvent(fields), viaReflection(fields))
    })
  }
})
