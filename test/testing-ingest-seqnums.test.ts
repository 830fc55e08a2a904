/**
 * The ingest server's bounded record mode, "seqnums": exact duplicates and gaps per (source, type)
 * from interval sets of seqnums, in memory that does not grow with a run delivered in order.
 * The interval set is checked against a plain Set on shuffled input with repeats; the server is
 * driven by the real transport with events encoded as the emitter encodes them.
 */
import { assert, describe, it } from "@effect/vitest"
import { create, toBinary } from "@bufbuild/protobuf"
import { Effect } from "effect"
import { EventTooLarge, InvalidEvent } from "../src/Errors.ts"
import * as Event from "../src/Event.ts"
import { CloudEventSchema } from "../src/gen/io/cloudevents/v1/cloudevent_pb.js"
import { decodeEnvelope, decodeReceived } from "../src/testing/ingestModel.ts"
import { IngestServer } from "../src/testing/IngestServer.ts"
import { makeIngestServerProcess } from "../src/testing/IngestServerProcess.ts"
import { SeqnumLedger, SeqnumRanges, seqnumValue } from "../src/testing/seqnumLedger.ts"
import * as GrpcTransport from "../src/transport/GrpcTransport.ts"

/** An event as the emitter sends it: prepared, then stamped with its durable seqnum. */
const wireEvent = (source: string, type: string, seq: number): Uint8Array => {
  const prepared = Event.prepare({ source, type, data: { seq } }, { emitterName: "test", maxEventBytes: 1 << 20, now: 1_764_000_000_000 })
  if (prepared instanceof InvalidEvent || prepared instanceof EventTooLarge) throw new Error(prepared.message)
  return Event.withSeqnum(prepared.payload, BigInt(seq))
}

const range = (from: number, to: number) => Array.from({ length: to - from + 1 }, (_, i) => from + i)

/** A deterministic shuffle (xorshift), so a failure reproduces. */
const shuffled = <A>(items: ReadonlyArray<A>, seed: number): Array<A> => {
  const out = [...items]
  let x = seed
  for (let i = out.length - 1; i > 0; i--) {
    x ^= x << 13
    x ^= x >>> 17
    x ^= x << 5
    const j = (x >>> 0) % (i + 1)
    ;[out[i], out[j]] = [out[j]!, out[i]!]
  }
  return out
}

describe("SeqnumRanges", () => {
  it("merges neighbours from either side and counts duplicates, with the gaps between", () => {
    const set = new SeqnumRanges()
    const outcomes = [5, 7, 6, 5, 1, 2, 9, 3, 7].map((seq) => set.add(seq))
    assert.deepStrictEqual(outcomes, ["new", "new", "new", "duplicate", "new", "new", "new", "new", "duplicate"])
    // {1,2,3} {5,6,7} {9}
    assert.deepStrictEqual([set.ranges, set.distinct, set.lowest, set.highest], [3, 7, 1, 9])
    assert.deepStrictEqual(set.gaps(), { missing: 2, first: [[4, 4], [8, 8]] })
    assert.strictEqual(set.add(4), "new") // joins both sides
    assert.strictEqual(set.add(8), "new")
    assert.deepStrictEqual([set.ranges, set.distinct, set.gaps().missing], [1, 9, 0])
    assert.deepStrictEqual([set.has(0), set.has(1), set.has(9), set.has(10)], [false, true, true, false])
  })

  it("agrees with a Set on shuffled input with repeats; its size is the number of runs", () => {
    for (const seed of [1, 7, 42, 1234]) {
      const present = shuffled(range(1, 2_000), seed).slice(0, 1_500)
      const input = shuffled([...present, ...present.slice(0, 300)], seed + 1)
      const set = new SeqnumRanges()
      const seen = new Set<number>()
      for (const seq of input) {
        assert.strictEqual(set.add(seq), seen.has(seq) ? "duplicate" : "new")
        seen.add(seq)
      }
      const sorted = [...seen].sort((a, b) => a - b)
      const runs = sorted.filter((seq, i) => i === 0 || sorted[i - 1] !== seq - 1).length
      assert.strictEqual(set.ranges, runs)
      assert.strictEqual(set.distinct, seen.size)
      assert.strictEqual(set.gaps().missing, sorted[sorted.length - 1]! - sorted[0]! + 1 - seen.size)
      for (let seq = 0; seq <= 2_001; seq++) assert.strictEqual(set.has(seq), seen.has(seq))
    }
  })

  it("reads seqnums as plain decimals within 2^53, and nothing else", () => {
    assert.deepStrictEqual(
      ["1", "0", "900719925474099", "12a", "", " 1", "-1", "1234567890123456"].map(seqnumValue),
      [1, 0, 900719925474099, undefined, undefined, undefined, undefined, undefined]
    )
  })
})

describe("the envelope's seqnum", () => {
  it("is read as the whole decoding reads it, whatever the encoding of the attribute", () => {
    const encoded = (attributes: Record<string, { case: "ceInteger"; value: number } | { case: "ceString"; value: string }>) =>
      toBinary(
        CloudEventSchema,
        create(CloudEventSchema, {
          id: "i",
          source: "s",
          specVersion: "1.0",
          type: "t",
          attributes: Object.fromEntries(Object.entries(attributes).map(([k, attr]) => [k, { attr }]))
        })
      )
    const cases: Array<[string, Uint8Array, string | undefined]> = [
      ["stamped by the emitter", wireEvent("s", "t", 12345), "12345"],
      ["stamped twice (the last wins)", Event.withSeqnum(wireEvent("s", "t", 1), 2n), "2"],
      ["ce_integer", encoded({ a: { case: "ceString", value: "x" }, seqnum: { case: "ceInteger", value: 7 } }), "7"],
      ["ce_string by the generated encoder", encoded({ seqnum: { case: "ceString", value: "88" } }), "88"],
      ["a longer key", encoded({ seqnumx: { case: "ceString", value: "9" } }), undefined],
      ["absent", encoded({ other: { case: "ceString", value: "9" } }), undefined]
    ]
    for (const [name, payload, seqnum] of cases) {
      assert.strictEqual(decodeEnvelope(payload, 0, true).seqnum, seqnum, name)
      assert.strictEqual(decodeReceived(payload, 0).seqnum, seqnum, name)
      assert.isUndefined(decodeEnvelope(payload, 0).seqnum, `${name}: not read unless asked for`)
    }
  })
})

describe("SeqnumLedger", () => {
  it("keeps keys apart and stops opening intervals past its budget, counting what it could not check", () => {
    const ledger = new SeqnumLedger(3)
    assert.deepStrictEqual([ledger.add("s", "a", 1), ledger.add("s", "b", 1), ledger.add("s", "a", 1)], [true, true, false])
    assert.isTrue(ledger.add("s", "a", 3)) // the third interval: the budget is spent
    assert.isTrue(ledger.add("s", "a", 5)) // would open a fourth: unchecked
    assert.deepStrictEqual([ledger.rangeCount, ledger.distinct, ledger.overflowed], [3, 3, 1])
    assert.isFalse(ledger.has("s", "a", 5))
    assert.isTrue(ledger.add("s", "a", 2)) // joins two intervals: frees one
    assert.strictEqual(ledger.rangeCount, 2)
    assert.deepInclude(ledger.summary().find((k) => k.type === "a"), { distinct: 3, lowest: 1, highest: 3, missing: 0 })
  })
})

describe("IngestServer record \"seqnums\"", () => {
  it.live("counts duplicates exactly and lists what is missing, keeping no ids", () =>
    Effect.gen(function*() {
      const server = yield* IngestServer.make({ record: "seqnums" })
      const transport = yield* GrpcTransport.make({ url: server.url, timeout: "20 seconds" })
      const skipped = new Set([40, 41, 42, 77])
      const sent = range(1, 300).filter((seq) => !skipped.has(seq))
      for (let i = 0; i < sent.length; i += 100) {
        yield* transport.publishBatch(sent.slice(i, i + 100).map((seq) => wireEvent("billing", "paid", seq)))
      }
      yield* transport.publishBatch(range(1, 50).map((seq) => wireEvent("billing", "refunded", seq)))
      // An answer lost: the same events again, and a retransmit out of order.
      yield* transport.publishBatch([...range(90, 99), 5, 1].map((seq) => wireEvent("billing", "paid", seq)))

      assert.deepInclude(server.received.stats, { events: sent.length + 50 + 12, uniqueIds: sent.length + 50, duplicates: 12 })
      assert.strictEqual(server.received.ids.size, 0)
      const paid = server.received.sequences.summary().find((k) => k.type === "paid")
      assert.deepStrictEqual(paid, { source: "billing", type: "paid", distinct: sent.length, lowest: 1, highest: 300, missing: 4, gaps: [[40, 42], [77, 77]] })
      assert.deepStrictEqual(server.received.sequences.footprint(), { ranges: 3 + 1, overflowed: 0 })
      assert.isTrue(server.received.sequences.has("billing", "paid", 39n))
      assert.isFalse(server.received.sequences.has("billing", "paid", "41"))
      assert.isFalse(server.received.sequences.has("billing", "refunded", 51))

      server.received.clear()
      assert.deepStrictEqual(server.received.sequences.footprint(), { ranges: 0, overflowed: 0 })
    }), 60_000)

  it.live("memory stays flat over a long in-order run: one interval per key, whatever the count", () =>
    Effect.gen(function*() {
      const server = yield* IngestServer.make({ record: "seqnums", requestLogSize: 1 })
      const transport = yield* GrpcTransport.make({ url: server.url, timeout: "20 seconds" })
      const batch = 250
      for (let from = 1; from <= 5_000; from += batch) {
        const seqs = range(from, from + batch - 1)
        yield* transport.publishBatch(seqs.flatMap((seq) => [wireEvent("s", "a", seq), wireEvent("s", "b", seq)]))
        assert.strictEqual(server.received.sequences.footprint().ranges, 2)
      }
      assert.deepInclude(server.received.stats, { events: 10_000, uniqueIds: 10_000, duplicates: 0 })
      assert.strictEqual(server.received.ids.size, 0)
      const keys = server.received.sequences.summary()
      assert.deepStrictEqual(keys.map((k) => [k.type, k.distinct, k.lowest, k.highest, k.missing]), [
        ["a", 5_000, 1, 5_000, 0],
        ["b", 5_000, 1, 5_000, 0]
      ])
    }), 120_000)

  it.live("events without a seqnum fall back to their id", () =>
    Effect.gen(function*() {
      const server = yield* IngestServer.make({ record: "seqnums" })
      const transport = yield* GrpcTransport.make({ url: server.url, timeout: "20 seconds" })
      const bare = Event.prepare({ source: "s", type: "t", data: "x" }, { emitterName: "e", maxEventBytes: 1 << 20, now: 0 })
      if (bare instanceof InvalidEvent || bare instanceof EventTooLarge) throw new Error(bare.message)
      yield* transport.publishBatch([bare.payload, bare.payload, wireEvent("s", "t", 1)])
      assert.deepInclude(server.received.stats, { events: 3, uniqueIds: 2, duplicates: 1 })
      assert.deepStrictEqual([...server.received.ids], [bare.eventId])
    }))

  it.live("the separate process serves the seqnum summary, a bounded sample of whole events and its memory", () =>
    Effect.gen(function*() {
      const server = yield* makeIngestServerProcess({ record: "seqnums", sampleEvery: 4, startTimeoutMs: 60_000, execArgv: ["--expose-gc"] })
      const transport = yield* GrpcTransport.make({ url: server.url, timeout: "20 seconds" })
      yield* transport.publishBatch([...range(1, 10), 3].map((seq) => wireEvent("s", "t", seq)))
      const sequences = yield* Effect.promise(() => server.sequences())
      assert.deepStrictEqual(sequences, {
        ranges: 1,
        overflowed: 0,
        keys: [{ source: "s", type: "t", distinct: 10, lowest: 1, highest: 10, missing: 0, gaps: [] }]
      })
      assert.deepInclude(yield* Effect.promise(() => server.stats()), { events: 11, duplicates: 1 })
      const samples = yield* Effect.promise(() => server.samples())
      assert.deepStrictEqual(samples.map((e) => e.seqnum), ["1", "5", "9"])
      assert.strictEqual(samples[0]?.attributes["emitter"], "test")
      const memory = yield* Effect.promise(() => server.memory(true))
      assert.isTrue(memory.collected)
      assert.isAbove(memory.heapUsed, 0)
      assert.isAtLeast(memory.rss, memory.heapUsed)
    }), 90_000)
})
