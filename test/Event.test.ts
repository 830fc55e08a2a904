import { assert, describe, it } from "@effect/vitest"
import { create, toBinary } from "@bufbuild/protobuf"
import { timestampFromMs } from "@bufbuild/protobuf/wkt"
import { createHash } from "node:crypto"
import { EventTooLarge, InvalidEvent } from "../src/Errors.ts"
import * as Encode from "../src/event/encode.ts"
import * as Event from "../src/Event.ts"
import * as Validate from "../src/event/validate.ts"
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

describe("Event.prepare refuses input the CloudEvents type system does not allow", () => {
  const cyclicArray: Array<unknown> = []
  cyclicArray.push(cyclicArray)
  class Point {
    readonly x: number
    constructor(x: number) {
      this.x = x
    }
  }
  const refusals: ReadonlyArray<[name: string, input: unknown, field: string, rule: string]> = [
    ["U+0000 in source", { source: "a\u0000b", type: "t" }, "source", "control characters (U+0000 at index 1)"],
    ["a space in source", { source: "a b", type: "t" }, "source", "URI-reference"],
    ["non-ASCII in source", { source: "bïlling", type: "t" }, "source", "percent-encoded"],
    ["a bad percent escape in source", { source: "a%2", type: "t" }, "source", "two hex digits"],
    ["a scheme starting with a digit", { source: "1a:b", type: "t" }, "source", "scheme"],
    ["a second # in source", { source: "a#b#c", type: "t" }, "source", "percent-encoded"],
    ["a lone surrogate in source", { source: "a\ud800", type: "t" }, "source", "unpaired surrogates"],
    ["U+007F in type", { source: "s", type: "t\u007f" }, "type", "control characters (U+007F"],
    ["U+009F in type", { source: "s", type: "t\u009f" }, "type", "control characters (U+009F"],
    ["a lone low surrogate in type", { source: "s", type: "\udc00t" }, "type", "unpaired surrogates (U+DC00 at index 0)"],
    ["a noncharacter in subject", { source: "s", type: "t", subject: "x\ufdd0" }, "subject", "noncharacters (U+FDD0"],
    ["U+FFFE in subject", { source: "s", type: "t", subject: "\ufffe" }, "subject", "noncharacters (U+FFFE"],
    ["U+10FFFF in subject", { source: "s", type: "t", subject: "a\udbff\udfff" }, "subject", "noncharacters (U+10FFFF at index 1)"],
    ["a newline in an extension value", { source: "s", type: "t", extensions: { note: "a\nb" } }, "extensions.note", "control characters"],
    ["a lone surrogate in an extension value", { source: "s", type: "t", extensions: { note: "\ud83d" } }, "extensions.note", "unpaired surrogates"],
    ["a lone surrogate in idempotencyKey", { source: "s", type: "t", idempotencyKey: "k\ud800" }, "idempotencyKey", "unpaired surrogates"],
    ["a tab in datacontenttype", { source: "s", type: "t", data: "x", datacontenttype: "text/plain\t" }, "datacontenttype", "control characters"],
    ["a relative dataschema", { source: "s", type: "t", dataschema: "/schema" }, "dataschema", "absolute URI"],
    ["a control character in dataschema", { source: "s", type: "t", dataschema: "https://x/\u0001" }, "dataschema", "control characters"],
    ["a lone surrogate in string data", { source: "s", type: "t", data: "ok\udfffok" }, "data", "unpaired surrogates"],
    ["extensions as a string", { source: "s", type: "t", extensions: "abc" }, "extensions", "plain object"],
    ["extensions as an array", { source: "s", type: "t", extensions: ["a"] }, "extensions", "plain object"],
    ["extensions as a Map", { source: "s", type: "t", extensions: new Map([["a", "b"]]) }, "extensions", "plain object"],
    ["extensions as a class instance", { source: "s", type: "t", extensions: new Point(1) }, "extensions", "plain object"],
    ["February 30", { source: "s", type: "t", time: "2026-02-30T00:00:00Z" }, "time", "2026-02 has no day 30"],
    ["February 29 of a common year", { source: "s", type: "t", time: "2025-02-29T00:00:00Z" }, "time", "no day 29"],
    ["month 13", { source: "s", type: "t", time: "2026-13-01T00:00:00Z" }, "time", "no month 13"],
    ["hour 24", { source: "s", type: "t", time: "2026-01-01T24:00:00Z" }, "time", "no time 24:00"],
    ["a leap second", { source: "s", type: "t", time: "2016-12-31T23:59:60Z" }, "time", "second 60"],
    ["an offset of 24 hours", { source: "s", type: "t", time: "2026-01-01T00:00:00+24:00" }, "time", "offset"],
    ["a date without a time", { source: "s", type: "t", time: "2026-02-30" }, "time", "RFC 3339"],
    ["a number as time", { source: "s", type: "t", time: 1 }, "time", "RFC 3339"],
    ["an invalid Date", { source: "s", type: "t", time: new Date(Number.NaN) }, "time", "invalid date"],
    ["NaN data", { source: "s", type: "t", data: Number.NaN }, "data", "NaN is not a JSON number"],
    ["Infinity in data", { source: "s", type: "t", data: { a: [Infinity] } }, "data", "data.a[0]: Infinity"],
    ["a Map in data", { source: "s", type: "t", data: { m: new Map() } }, "data", "data.m: a Map"],
    ["a Set in data", { source: "s", type: "t", data: [new Set()] }, "data", "data[0]: a Set"],
    ["a Date in data", { source: "s", type: "t", data: { at: new Date(0) } }, "data", "data.at: a Date"],
    ["a class instance in data", { source: "s", type: "t", data: new Point(1) }, "data", "a Point"],
    ["bytes nested in data", { source: "s", type: "t", data: { b: new Uint8Array(1) } }, "data", "a Uint8Array"],
    ["a function in data", { source: "s", type: "t", data: { f: () => 1 } }, "data", "data.f: function"],
    ["undefined in an array", { source: "s", type: "t", data: [1, undefined] }, "data", "data[1]: undefined"],
    ["a hole in an array", { source: "s", type: "t", data: [1, , 2] }, "data", "data[1]: undefined"],
    ["a bigint in data", { source: "s", type: "t", data: { n: 1n } }, "data", "data.n: bigint"],
    ["a symbol in data", { source: "s", type: "t", data: [Symbol("x")] }, "data", "symbol"],
    ["a cyclic array", { source: "s", type: "t", data: cyclicArray }, "data", "cycle"]
  ]
  for (const [name, input, field, rule] of refusals) {
    it(`refuses ${name}`, () => {
      const result = Event.prepare(input as Event.EmitInput, context)
      assert.instanceOf(result, InvalidEvent)
      assert.strictEqual((result as InvalidEvent).field, field)
      assert.include((result as InvalidEvent).rule, rule)
    })
  }

  const accepted: ReadonlyArray<[name: string, input: Event.EmitInput]> = [
    ["URIs and URI-references as source", { source: "https://user@[::1]:8080/a/b?q=1&r=%C3%A9#frag", type: "t" }],
    ["a URN as source", { source: "urn:uuid:6e8bc430-9c3a-11d9-9669-0800200c9a66", type: "t" }],
    ["a relative path with a colon after a slash", { source: "./a:b/c", type: "t" }],
    ["non-ASCII and surrogate pairs in String attributes", {
      source: "s", type: "über.😀", subject: "ß€😀", extensions: { note: "\u00a0ok\ufffd" }, idempotencyKey: "ключ"
    }],
    ["newlines, tabs and U+0000 in string data", { source: "s", type: "t", data: "line 1\n\tline 2\u0000" }],
    ["JSON with nested objects, null-prototype objects and undefined properties", {
      source: "s", type: "t", data: { a: [1, -0.5, "x\n", null, true, { b: {} }], c: Object.assign(Object.create(null), { d: 1 }), e: undefined } as never
    }],
    ["the same object twice (not a cycle)", { source: "s", type: "t", data: (() => { const o = { x: 1 }; return [o, o] })() }],
    ["February 29 of a leap year", { source: "s", type: "t", time: "2024-02-29T23:59:59.999-23:59" }],
    ["a lower-case t and z", { source: "s", type: "t", time: "2026-01-02t03:04:05z" }]
  ]
  for (const [name, input] of accepted) {
    it(`accepts ${name}`, () => {
      const event = ok(Event.prepare(input, context))
      const decoded = Event.decode(event.payload)
      assert.strictEqual(decoded.source, input.source)
      assert.strictEqual(decoded.type, input.type)
    })
  }

  it("writes what it accepted unchanged: the wire holds exactly the caller's strings and JSON text", () => {
    const data = { a: [1, "é😀"], b: { c: null } }
    const event = ok(Event.prepare({ source: "s", type: "über.😀", subject: "ß€😀", extensions: { note: "\u00a0ok" }, data }, context))
    const decoded = Event.decode(event.payload)
    assert.strictEqual(decoded.type, "über.😀")
    assert.deepStrictEqual(decoded.data, { case: "textData", value: JSON.stringify(data) })
    const a = attrs(event)
    assert.strictEqual(a.subject, "ß€😀")
    assert.strictEqual(a.note, "\u00a0ok")
    const leapDay = ok(Event.prepare({ source: "s", type: "t", time: "2024-02-29T00:00:00Z" }, context))
    assert.strictEqual(attrs(leapDay).time, "2024-02-29T00:00:00.000Z")
  })
})

describe("CloudEvents String rules", () => {
  // The reference: Unicode's own categories, by regular expression.
  const control = /\p{Cc}/u
  const noncharacter = /\p{Noncharacter_Code_Point}/u
  const reference = (s: string) =>
    !(s as string & { isWellFormed(): boolean }).isWellFormed() || control.test(s) || noncharacter.test(s)

  it("agree with Unicode's categories on random strings of every kind of code unit", () => {
    // A tiny deterministic generator (xorshift), so a failure reproduces.
    let state = 0x9e3779b9
    const next = () => {
      state ^= state << 13
      state ^= state >>> 17
      state ^= state << 5
      return state >>> 0
    }
    const units = [0x00, 0x1f, 0x20, 0x41, 0x7e, 0x7f, 0x9f, 0xa0, 0xe9, 0xfdcf, 0xfdd0, 0xfdef, 0xfdf0, 0xfffd, 0xfffe, 0xffff, 0xd800, 0xdbff, 0xdc00, 0xdfff]
    let refused = 0
    for (let n = 0; n < 20_000; n++) {
      const length = next() % 6
      let s = ""
      for (let i = 0; i < length; i++) {
        const pick = next() % 4
        s += String.fromCharCode(pick === 0 ? next() % 0x10000 : pick === 1 ? 0x61 : units[next() % units.length]!)
      }
      const rule = Validate.stringRule(s)
      if (rule !== undefined) refused++
      assert.strictEqual(rule !== undefined, reference(s), JSON.stringify(s))
    }
    assert.isAbove(refused, 1000)
    // Supplementary noncharacters (U+1FFFE, U+10FFFF) and a pair next to a lone surrogate.
    for (const s of ["\ud83f\udffe", "\udbff\udfff", "\ud83d\ude00\ud800", "\ud800\ud83d\ude00", "\ud83d\ude00"]) {
      assert.strictEqual(Validate.stringRule(s) !== undefined, reference(s), JSON.stringify(s))
    }
  })

  it("a text body needs only to be well-formed", () => {
    assert.isUndefined(Validate.textRule("a\u0000\n\t\ufffe\ud83d\ude00"))
    assert.include(Validate.textRule("ab\ud800")!, "U+D800 at index 2")
    assert.include(Validate.textRule("\ude00")!, "unpaired surrogates")
  })
})
