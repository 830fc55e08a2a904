/**
 * One convention for `retryable` on every error of src/Errors.ts: a field of the error's schema
 * (it travels with the encoded error), never a getter, so it means the same thing everywhere.
 */
import { assert, describe, it } from "@effect/vitest"
import * as Errors from "../src/Errors.ts"

const errorClasses = Object.entries(Errors).filter(([, value]) =>
  typeof value === "function" && value.prototype instanceof Error
) as Array<[string, { readonly fields: Record<string, unknown>; readonly prototype: object }]>

describe("errors", () => {
  it("every error declares retryable as a schema field, none as a getter", () => {
    assert.isAtLeast(errorClasses.length, 8)
    for (const [name, errorClass] of errorClasses) {
      assert.property(errorClass.fields, "retryable", name)
      let proto: object | null = errorClass.prototype
      while (proto !== null && proto !== Error.prototype) {
        assert.isUndefined(Object.getOwnPropertyDescriptor(proto, "retryable")?.get, `${name} has a retryable getter`)
        proto = Object.getPrototypeOf(proto)
      }
    }
  })

  it("errors whose answer never varies fix it; the others take it", () => {
    assert.isFalse(new Errors.InvalidEvent({ field: "source", rule: "r" }).retryable)
    assert.isFalse(new Errors.InvalidConfig({ option: "o", rule: "r" }).retryable)
    assert.isFalse(new Errors.EmitterClosed({}).retryable)
    assert.isTrue(new Errors.EmitterOverloaded({ waitedMs: 1 }).retryable)
    assert.isTrue(new Errors.StoreLocked({ dataDir: "d", lockFile: "l", holderPid: 1 }).retryable)
    const store = new Errors.StoreError({ operation: "append", reason: "r", retryable: true })
    assert.deepStrictEqual([store.retryable, store.committed], [true, "unknown"])
  })
})
