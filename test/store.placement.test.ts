/**
 * Which returned row is whose in an appended batch (src/store/appendPlacement.ts), without a
 * database: rows may come back in any order, and a missing row is found.
 */
import { assert, describe, it } from "@effect/vitest"
import { firstUnplaced, isOneKey, numberByKey, placeByKey, placeOneKey } from "../src/store/appendPlacement.ts"

const events = (...keys: ReadonlyArray<string>) => keys.map((key) => ({ source: key[0]!, type: key[1]! }))

describe("append placement", () => {
  it("a batch is one-key only when every event has the same source and type", () => {
    assert.isTrue(isOneKey(events("ax")))
    assert.isTrue(isOneKey(events("ax", "ax", "ax")))
    assert.isFalse(isOneKey(events("ax", "ay")))
    assert.isFalse(isOneKey(events("ax", "bx")))
    assert.isFalse(isOneKey(events("ax", "ax", "bx")))
  })

  it("numbers keys by first appearance and events by rank within their key", () => {
    const numbering = numberByKey(events("ax", "by", "ax", "az", "by", "ax"))
    assert.deepStrictEqual(numbering.keys.map((k) => [k.source, k.type, k.events]), [
      ["a", "x", [0, 2, 5]],
      ["b", "y", [1, 4]],
      ["a", "z", [3]]
    ])
    assert.deepStrictEqual(numbering.keyOf, [1, 2, 1, 3, 2, 1])
    assert.deepStrictEqual(numbering.rank, [1, 1, 2, 1, 2, 3])
  })

  it("keeps keys apart that a naive join of source and type would merge", () => {
    const numbering = numberByKey([{ source: "a", type: "bc" }, { source: "ab", type: "c" }])
    assert.strictEqual(numbering.keys.length, 2)
  })

  it("one key: the i-th lowest seq is event i, whatever order the rows come in", () => {
    const rows = [{ rowId: 12n, seq: 7n }, { rowId: 10n, seq: 5n }, { rowId: 11n, seq: 6n }]
    assert.deepStrictEqual(placeOneKey(3, rows).map((r) => r?.rowId), [10n, 11n, 12n])
  })

  it("one key: a missing row leaves its event unplaced, and firstUnplaced names it", () => {
    const placed = placeOneKey(3, [{ rowId: 10n, seq: 5n }, { rowId: 11n, seq: 6n }])
    assert.strictEqual(firstUnplaced(placed), 2)
    assert.strictEqual(firstUnplaced(placeOneKey(0, [])), -1)
  })

  it("several keys: a row's key and its seq's distance from the key's lowest say whose it is", () => {
    const batch = events("ax", "by", "ax", "az", "by", "ax")
    const numbering = numberByKey(batch)
    // a:x continues at 4, b:y at 1, a:z at 2; rows shuffled
    const rows = [
      { rowId: 6n, source: "a", type: "x", seq: 6n },
      { rowId: 2n, source: "b", type: "y", seq: 1n },
      { rowId: 4n, source: "a", type: "z", seq: 2n },
      { rowId: 1n, source: "a", type: "x", seq: 4n },
      { rowId: 5n, source: "b", type: "y", seq: 2n },
      { rowId: 3n, source: "a", type: "x", seq: 5n }
    ]
    const placed = placeByKey(numbering, rows)
    assert.deepStrictEqual(placed.map((r) => r?.rowId), [1n, 2n, 3n, 4n, 5n, 6n])
    assert.deepStrictEqual(placed.map((r) => r?.seq), [4n, 1n, 5n, 2n, 2n, 6n])
    assert.strictEqual(firstUnplaced(placed), -1)
  })

  it("several keys: a row of a key the batch does not have is ignored, a missing one found", () => {
    const numbering = numberByKey(events("ax", "by"))
    const placed = placeByKey(numbering, [
      { rowId: 1n, source: "a", type: "x", seq: 1n },
      { rowId: 9n, source: "c", type: "z", seq: 1n }
    ])
    assert.strictEqual(placed[0]?.rowId, 1n)
    assert.strictEqual(firstUnplaced(placed), 1)
  })
})
