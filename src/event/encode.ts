/**
 * Writes an io.cloudevents.v1.CloudEvent straight into protobuf bytes. Sizes are computed first,
 * so every length prefix is known before its message and the bytes are written once, into one
 * reused buffer, then copied out: no per-field objects, no nested-writer forks. This runs once per
 * emit; `create` + `toBinary` reach the same bytes by reflection at several times the cost (the
 * tests decode what this writes with the generated schema and compare it byte for byte).
 */
import { allocBytes } from "./bytes.ts"

/** One attribute value: the `CloudEventAttributeValue.attr` oneof. Timestamps are epoch ms. */
export type AttributeValue =
  | { readonly case: "ceBoolean"; readonly value: boolean }
  | { readonly case: "ceInteger"; readonly value: number }
  | { readonly case: "ceString" | "ceUri" | "ceUriRef"; readonly value: string }
  | { readonly case: "ceBytes"; readonly value: Uint8Array }
  | { readonly case: "ceTimestamp"; readonly value: number }

export type Data =
  | { readonly case: "binaryData"; readonly value: Uint8Array }
  | { readonly case: "textData"; readonly value: string }
  | { readonly case: undefined }

export interface CloudEventFields {
  readonly id: string
  readonly source: string
  readonly type: string
  readonly attributes: ReadonlyArray<readonly [name: string, value: AttributeValue]>
  readonly data: Data
}

// Field tags (field number << 3 | wire type), all below 128: one byte each.
const LD = 2
const tagOf = (field: number, wireType: number) => (field << 3) | wireType

/** Bytes of an unsigned varint below 2^32. */
const varintSize = (n: number): number => (n < 0x80 ? 1 : n < 0x4000 ? 2 : n < 0x200000 ? 3 : n < 0x10000000 ? 4 : 5)

const encoder = new TextEncoder()

// Writers take the buffer and a position and answer the next position: locals, not module state,
// on this hot path. A length-delimited field is written with a one-byte length placeholder and
// widened afterwards in the rare case its content reaches 128 bytes: no size pass beforehand.

const writeVarint = (b: Uint8Array, p: number, n: number): number => {
  while (n >= 0x80) {
    b[p++] = (n & 0x7f) | 0x80
    n = Math.floor(n / 128)
  }
  b[p++] = n
  return p
}

/** A signed integer as a varint: negatives in 64-bit two's complement (10 bytes). */
const writeSigned = (b: Uint8Array, p: number, n: number): number => {
  if (n >= 0) return writeVarint(b, p, n)
  let lo = n >>> 0
  let hi = Math.floor(n / 2 ** 32) >>> 0
  for (let i = 0; i < 9; i++) {
    b[p++] = (lo & 0x7f) | 0x80
    lo = (lo >>> 7) | ((hi & 0x7f) << 25)
    hi = hi >>> 7
  }
  b[p++] = lo & 0x01
  return p
}

/**
 * Closes a length-delimited field whose content runs from `at + 1` to `end`, `at` holding the
 * one-byte placeholder; answers the field's new end.
 */
const closeDelimited = (b: Uint8Array, at: number, end: number): number => {
  const length = end - at - 1
  if (length < 0x80) {
    b[at] = length
    return end
  }
  const extra = varintSize(length) - 1
  b.copyWithin(at + 1 + extra, at + 1, end)
  writeVarint(b, at, length)
  return end + extra
}

/** A string's UTF-8 bytes after their length (as TextEncoder writes it: U+FFFD for a lone surrogate). */
const writeString = (b: Uint8Array, p: number, s: string): number => {
  const at = p++
  const n = s.length
  if (n <= 64) {
    let i = 0
    for (; i < n; i++) {
      const c = s.charCodeAt(i)
      if (c >= 0x80) break
      b[p++] = c
    }
    if (i < n) p += encoder.encodeInto(s.slice(i), b.subarray(p)).written
  } else {
    p += encoder.encodeInto(s, b.subarray(p)).written
  }
  return closeDelimited(b, at, p)
}

const writeBytes = (b: Uint8Array, p: number, bytes: Uint8Array): number => {
  p = writeVarint(b, p, bytes.length)
  b.set(bytes, p)
  return p + bytes.length
}

/** The CloudEventAttributeValue message's content (its oneof field). */
const writeValue = (b: Uint8Array, p: number, value: AttributeValue): number => {
  switch (value.case) {
    case "ceBoolean":
      b[p++] = tagOf(1, 0)
      b[p++] = value.value ? 1 : 0
      return p
    case "ceInteger":
      b[p++] = tagOf(2, 0)
      return writeSigned(b, p, value.value)
    case "ceString":
      b[p++] = tagOf(3, LD)
      return writeString(b, p, value.value)
    case "ceBytes":
      b[p++] = tagOf(4, LD)
      return writeBytes(b, p, value.value)
    case "ceUri":
      b[p++] = tagOf(5, LD)
      return writeString(b, p, value.value)
    case "ceUriRef":
      b[p++] = tagOf(6, LD)
      return writeString(b, p, value.value)
    case "ceTimestamp": {
      // google.protobuf.Timestamp: nanos are never negative, so seconds round down.
      const seconds = Math.floor(value.value / 1000)
      const nanos = (value.value - seconds * 1000) * 1_000_000
      b[p++] = tagOf(7, LD)
      const at = p++
      if (seconds !== 0) {
        b[p++] = tagOf(1, 0)
        p = writeSigned(b, p, seconds)
      }
      if (nanos !== 0) {
        b[p++] = tagOf(2, 0)
        p = writeVarint(b, p, nanos)
      }
      return closeDelimited(b, at, p)
    }
  }
}

const write = (b: Uint8Array, event: CloudEventFields): number => {
  b[0] = tagOf(1, LD)
  let p = writeString(b, 1, event.id)
  b[p++] = tagOf(2, LD)
  p = writeString(b, p, event.source)
  b[p++] = tagOf(3, LD)
  b[p++] = 3
  b[p++] = 0x31 // "1.0"
  b[p++] = 0x2e
  b[p++] = 0x30
  b[p++] = tagOf(4, LD)
  p = writeString(b, p, event.type)
  const attributes = event.attributes
  for (let i = 0; i < attributes.length; i++) {
    // map<string, CloudEventAttributeValue> attributes = 5: one entry message per attribute
    const attribute = attributes[i]!
    b[p++] = tagOf(5, LD)
    const entry = p++
    b[p++] = tagOf(1, LD)
    p = writeString(b, p, attribute[0])
    b[p++] = tagOf(2, LD)
    const value = p++
    p = closeDelimited(b, value, writeValue(b, p, attribute[1]))
    p = closeDelimited(b, entry, p)
  }
  if (event.data.case === "binaryData") {
    b[p] = tagOf(6, LD)
    p = writeBytes(b, p + 1, event.data.value)
  } else if (event.data.case === "textData") {
    b[p] = tagOf(7, LD)
    p = writeString(b, p + 1, event.data.value)
  }
  return p
}

/** An upper bound of the encoded size: 3 bytes per UTF-16 unit covers any string. */
const sizeBound = (event: CloudEventFields) => {
  // Fixed parts: tags, 5-byte lengths, "1.0"; per attribute: the entry's, name's and value's
  // framing (24 bytes at most) and a scalar value (a timestamp is at most 17 bytes).
  let n = 64 + 3 * (event.id.length + event.source.length + event.type.length)
  for (const [name, value] of event.attributes) {
    n += 48 + 3 * name.length
    if (value.case === "ceBytes") n += value.value.length
    else if (value.case === "ceString" || value.case === "ceUri" || value.case === "ceUriRef") n += 3 * value.value.length
  }
  if (event.data.case === "binaryData") n += event.data.value.length
  else if (event.data.case === "textData") n += 3 * event.data.value.length
  return n
}

// One buffer for the process, reused (encoding is synchronous); a larger event gets a buffer of
// its own, so a single 1 MiB event does not pin 1 MiB.
const sharedBytes = 64 * 1024
const shared = new Uint8Array(sharedBytes)

export const encodeCloudEvent = (event: CloudEventFields): Uint8Array => {
  const bound = sizeBound(event)
  const b = bound <= sharedBytes ? shared : new Uint8Array(bound)
  const n = write(b, event)
  // Writes past the end of a typed array are dropped without an error: never answer such bytes.
  if (n > b.length) throw new Error(`CloudEvent encoding overran its ${b.length}-byte bound (${n} bytes)`)
  const out = allocBytes(n)
  out.set(b.subarray(0, n))
  return out
}
