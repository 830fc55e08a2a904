/** The demo's verdict (src/cli/demo/verdict.ts): every receipt delivered or dead-lettered, or lost. */
import { assert, describe, it } from "@effect/vitest"
import { verdict } from "../src/cli/demo/verdict.ts"

describe("demo verdict", () => {
  const receipts = ["a", "b", "c", "d"]

  it("with the demo's server: delivered is what it received, lost is what is nowhere", () => {
    assert.deepStrictEqual(
      verdict({ receipts, received: new Set(["a", "b", "x"]), deadLettered: new Set(["c"]), remaining: 0 }),
      { delivered: 2, deadLettered: 1, lost: 1 }
    )
  })

  it("an event both received and dead-lettered is not lost, and counts as both", () => {
    assert.deepStrictEqual(
      verdict({ receipts, received: new Set(receipts), deadLettered: new Set(["d"]), remaining: 0 }),
      { delivered: 4, deadLettered: 1, lost: 0 }
    )
  })

  it("with the user's server: only the table can tell, so what remains in it is lost", () => {
    assert.deepStrictEqual(
      verdict({ receipts, received: undefined, deadLettered: new Set(["a"]), remaining: 2 }),
      { delivered: 1, deadLettered: 1, lost: 2 }
    )
    assert.deepStrictEqual(
      verdict({ receipts, received: undefined, deadLettered: new Set(), remaining: 0 }),
      { delivered: 4, deadLettered: 0, lost: 0 }
    )
  })

  it("nothing emitted: nothing delivered, nothing lost", () => {
    assert.deepStrictEqual(verdict({ receipts: [], received: new Set(), deadLettered: new Set(), remaining: 0 }), {
      delivered: 0,
      deadLettered: 0,
      lost: 0
    })
  })
})
