/** The demo's verdict (src/cli/demo/verdict.ts): every receipt delivered or dead-lettered, or lost. */
import { assert, describe, it } from "@effect/vitest"
import { nextPeakBacklog, noBacklog, verdict } from "../src/cli/demo/verdict.ts"

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

describe("demo peak backlog", () => {
  const bound = { committed: 200_000, producers: 16 }

  it("exact counts raise the peak and keep it exact; smaller ones leave it", () => {
    const peak = nextPeakBacklog(noBacklog, { backlog: 500, exact: true }, bound)
    assert.deepStrictEqual(peak, { rows: 500, exact: true })
    assert.deepStrictEqual(nextPeakBacklog(peak, { backlog: 20, exact: true }, bound), peak)
  })

  it("an estimate past what the table can hold is capped by the events committed and committing, and marked", () => {
    // seen: the planner's estimate said 586 027 rows for a run of 200 000 events
    assert.deepStrictEqual(
      nextPeakBacklog({ rows: 90_000, exact: true }, { backlog: 586_027, exact: false }, bound),
      { rows: 200_016, exact: false }
    )
    assert.deepStrictEqual(
      nextPeakBacklog(noBacklog, { backlog: 150_000, exact: false }, bound),
      { rows: 150_000, exact: false }
    )
  })
})
