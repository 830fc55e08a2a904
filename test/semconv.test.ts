/** The conventions copied into src/telemetry/semconv.ts are the package's own. */
import { assert, describe, it } from "@effect/vitest"
import * as Incubating from "@opentelemetry/semantic-conventions/incubating"
import * as Semconv from "../src/telemetry/semconv.ts"

describe("semantic conventions", () => {
  const copied = Object.entries(Semconv).filter(([key]) => /^(ATTR|METRIC|MESSAGING_OPERATION_TYPE_VALUE)_/.test(key))
  it("copies at least the messaging attributes and metrics", () => {
    assert.isAtLeast(copied.length, 14)
  })
  for (const [key, value] of copied) {
    it(`${key} is @opentelemetry/semantic-conventions' ${key}`, () => {
      assert.strictEqual(value, (Incubating as Record<string, unknown>)[key])
    })
  }
})
