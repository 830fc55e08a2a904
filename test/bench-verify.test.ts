import { assert, describe, it } from "@effect/vitest"
import {
  checkDelivery,
  checkSample,
  checkSequences,
  type Emitted,
  failures,
  type KeptEvent,
  repeatsOf,
  verificationJson,
  verificationLines,
  verify
} from "../bench/verify.ts"

const none = new Map<string, number>()

describe("bench delivery check (by id)", () => {
  it("nothing lost when every receipt's id was produced", () => {
    const r = checkDelivery({ expected: ["a", "b", "c"], received: ["c", "b", "a"], duplicates: 0, duplicatesById: none, unacknowledgedSends: none })
    assert.strictEqual(r.lost, 0)
    assert.strictEqual(r.unexpected, 0)
    assert.strictEqual(r.expected, 3)
  })

  it("a surplus of other ids does not hide a loss (a count comparison would say 0 lost)", () => {
    const r = checkDelivery({ expected: ["a", "b", "c"], received: ["a", "b", "x", "y"], duplicates: 0, duplicatesById: none, unacknowledgedSends: none })
    assert.strictEqual(r.lost, 1)
    assert.deepStrictEqual(r.lostIds, ["c"])
    assert.strictEqual(r.unexpected, 2)
  })

  it("duplicates do not make up for a lost id", () => {
    const r = checkDelivery({ expected: ["a", "b"], received: new Set(["a"]), duplicates: 1, duplicatesById: new Map([["a", 1]]), unacknowledgedSends: none })
    assert.strictEqual(r.lost, 1)
    assert.strictEqual(r.duplicates, 1)
  })

  it("a duplicate after a send that was never acknowledged is explained; one after a delivered send is not", () => {
    const explained = checkDelivery({
      expected: ["a", "b"],
      received: ["a", "b"],
      duplicates: 1,
      duplicatesById: new Map([["a", 1]]),
      unacknowledgedSends: new Map([["a", 1]])
    })
    assert.strictEqual(explained.unexplainedDuplicates, 0)
    const unexplained = checkDelivery({
      expected: ["a", "b"],
      received: ["a", "b"],
      duplicates: 3,
      duplicatesById: new Map([["a", 2], ["b", 1]]),
      unacknowledgedSends: new Map([["a", 1]])
    })
    assert.strictEqual(unexplained.unexplainedDuplicates, 2)
    assert.deepStrictEqual(unexplained.unexplainedIds, ["a", "b"])
  })

  it("duplicates outside the sample are judged in all: more copies than unacknowledged sends are unexplained", () => {
    const r = checkDelivery({ expected: ["a", "b", "c"], received: ["a", "b", "c"], duplicates: 5, duplicatesById: none, unacknowledgedSends: new Map([["a", 2]]) })
    assert.strictEqual(r.unexplainedDuplicates, 3)
    assert.deepStrictEqual(r.unexplainedIds, [])
  })

  it("repeated receipts count once", () => {
    const r = checkDelivery({ expected: ["a", "a", "b"], received: ["a"], duplicates: 0, duplicatesById: none, unacknowledgedSends: none })
    assert.strictEqual(r.expected, 2)
    assert.strictEqual(r.lost, 1)
  })
})

describe("bench seqnum check", () => {
  const ev = (seq: number, type = "t") => ({ source: "s", type, seq: BigInt(seq) })

  it("a run without holes passes, in any order", () => {
    const r = checkSequences([ev(12), ev(10), ev(11), ev(13)])
    assert.deepStrictEqual([r.keys, r.events, r.gaps, r.repeats], [1, 4, 0, 0])
    assert.deepStrictEqual(r.problems, [])
  })

  it("a hole is a gap, per key", () => {
    const r = checkSequences([ev(1), ev(2), ev(5), ev(1, "u"), ev(2, "u")])
    assert.strictEqual(r.keys, 2)
    assert.strictEqual(r.gaps, 2)
    assert.deepStrictEqual(r.problems, ["s/t: 2 missing between 1 and 5 (first 3)"])
  })

  it("a repeated seqnum is reported, and does not fill a hole", () => {
    const r = checkSequences([ev(1), ev(2), ev(2), ev(4)])
    assert.strictEqual(r.gaps, 1)
    assert.strictEqual(r.repeats, 1)
    assert.strictEqual(r.problems.length, 2)
  })
})

describe("bench whole-event check", () => {
  const data = new Uint8Array([1, 2, 3])
  const emitted = new Map<string, Emitted>([
    ["a0", { source: "s", type: "t", seq: 1n, data }],
    ["b0", { source: "s", type: "t", seq: 2n, data }],
    ["c1", { source: "s", type: "t", seq: 3n, data }]
  ])
  const inSample = (id: string) => id.endsWith("0")
  const kept = (id: string, over: Partial<KeptEvent> = {}): KeptEvent => ({
    id,
    source: "s",
    type: "t",
    seqnum: String(emitted.get(id)?.seq ?? 0n),
    data: new Uint8Array(data),
    ...over
  })

  it("kept events equal to what was emitted pass", () => {
    const r = checkSample([kept("a0"), kept("b0")], emitted, inSample)
    assert.deepStrictEqual([r.sampled, r.checked, r.missing, r.corrupted], [2, 2, 0, 0])
  })

  it("a flipped data byte, a wrong seqnum, another type, or an id nobody emitted is corruption", () => {
    const r = checkSample([
      kept("a0", { data: new Uint8Array([1, 2, 4]) }),
      kept("b0", { seqnum: "7" }),
      kept("c1", { type: "other" }),
      kept("zz0")
    ], emitted, inSample)
    assert.strictEqual(r.corrupted, 4)
    assert.match(r.problems[0]!, /data of 3 bytes differs/)
    assert.match(r.problems[1]!, /seqnum 7, receipt 2/)
    assert.match(r.problems[3]!, /nobody emitted/)
  })

  it("a sampled id without a kept event is missing (the sample cannot silently shrink)", () => {
    const r = checkSample([kept("a0")], emitted, inSample)
    assert.strictEqual(r.missing, 1)
  })

  it("every copy of a kept id is counted", () => {
    assert.deepStrictEqual([...repeatsOf([kept("a0"), kept("b0"), kept("a0"), kept("a0")])], [["a0", 2]])
  })
})

describe("bench verdict", () => {
  const data = new Uint8Array([7, 7])
  const emitted = new Map<string, Emitted>([
    ["e0", { source: "s", type: "t", seq: 1n, data }],
    ["e1", { source: "s", type: "t", seq: 2n, data }],
    ["f0", { source: "s", type: "t", seq: 3n, data }]
  ])
  const kept = (id: string, seq: bigint, bytes = data): KeptEvent => ({ id, source: "s", type: "t", seqnum: String(seq), data: bytes })
  const base = {
    emitted,
    received: ["e0", "e1", "f0"],
    duplicates: 0,
    unacknowledgedSends: new Map<string, number>(),
    kept: [kept("e0", 1n), kept("f0", 3n)],
    sampleOneIn: 16,
    inSample: (id: string) => id.endsWith("0")
  }

  it("a clean run has no failures", () => {
    const v = verify(base)
    assert.deepStrictEqual(failures(v), [])
    assert.strictEqual(verificationJson(v).verifiedEvents, 2)
    assert.strictEqual(verificationLines(v).length, 3)
  })

  it("a lost id fails the run even when the server holds as many other ids", () => {
    const v = verify({ ...base, received: ["e0", "f0", "zz"] })
    assert.strictEqual(v.delivery.lost, 1)
    assert.match(failures(v)[0]!, /1 events lost \(e\.g\. e1\)/)
  })

  it("a corrupted sampled event fails the run; so does a sampled event the server did not keep", () => {
    assert.match(failures(verify({ ...base, kept: [kept("e0", 1n, new Uint8Array([7, 8])), kept("f0", 3n)] })).join(), /unlike what was emitted/)
    assert.match(failures(verify({ ...base, kept: [kept("e0", 1n)] })).join(), /1 sampled events not kept/)
  })

  it("with every event kept, the received seqnums are checked too: a wrong one is a gap, a duplicate copy is not a repeat", () => {
    const all = { ...base, sampleOneIn: 1, inSample: () => true }
    const clean = verify({ ...all, kept: [kept("e0", 1n), kept("e1", 2n), kept("f0", 3n), kept("f0", 3n)], duplicates: 1, unacknowledgedSends: new Map([["f0", 1]]) })
    assert.deepStrictEqual(failures(clean), [])
    assert.strictEqual(clean.receivedSequences?.repeats, 0)
    const shifted = verify({ ...all, kept: [kept("e0", 1n), kept("e1", 2n), kept("f0", 5n)] })
    assert.strictEqual(shifted.receivedSequences?.gaps, 2)
    assert.isTrue(failures(shifted).length >= 2)
  })

  it("a hole in the receipts' seqnums fails the run", () => {
    const holed = new Map(emitted)
    holed.set("f0", { source: "s", type: "t", seq: 9n, data })
    assert.match(failures(verify({ ...base, emitted: holed, kept: [kept("e0", 1n), kept("f0", 9n)] })).join(), /receipts: s\/t: 6 missing/)
  })
})
