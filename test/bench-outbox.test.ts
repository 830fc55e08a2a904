import { assert, describe, it } from "@effect/vitest"
import { sliced } from "../bench/outbox.ts"

describe("bench outbox slices", () => {
  it("cuts each kind's time into 1-second rounds (half a second with --quick)", () => {
    assert.deepStrictEqual(sliced(10, false), { rounds: 10, seconds: 1 })
    assert.deepStrictEqual(sliced(3, true), { rounds: 6, seconds: 0.5 })
    assert.deepStrictEqual(sliced(2.5, false), { rounds: 3, seconds: 2.5 / 3 })
  })

  it("keeps one round for a time shorter than a slice", () => {
    assert.deepStrictEqual(sliced(0.2, true), { rounds: 1, seconds: 0.2 })
  })
})
