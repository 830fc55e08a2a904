/**
 * What an application emits, and how it becomes a CloudEvent on the wire.
 *
 * `prepare` validates an `EmitInput`, builds the CloudEvent (fixed UUID id, specversion 1.0,
 * `recordedtime`, `idempotencykey`, `emitter`) and encodes it once. The stored payload carries no
 * `seqnum`: the store assigns it in the commit, and `withSeqnum` appends it to the encoded bytes at
 * send time (a protobuf map entry appended to a message is a valid merge), so nothing is decoded or
 * re-encoded on the delivery path.
 */
import { fromBinary } from "@bufbuild/protobuf"
import { timestampMs } from "@bufbuild/protobuf/wkt"
import { createHash, hash, randomUUID } from "node:crypto"
import { EventTooLarge, InvalidEvent } from "./Errors.ts"
import { allocBytes } from "./event/bytes.ts"
import { type AttributeValue, encodeCloudEvent } from "./event/encode.ts"
import { type CloudEvent, type CloudEventAttributeValue, CloudEventSchema } from "./gen/io/cloudevents/v1/cloudevent_pb.js"
import type { NewEvent } from "./Store.ts"

/** A JSON value, for `data` that is serialized as JSON. */
export type Json = null | boolean | number | string | ReadonlyArray<Json> | { readonly [key: string]: Json }

/** Value of an extension attribute; numbers must be 32-bit integers (CloudEvents `Integer`). */
export type ExtensionValue = string | number | boolean | Uint8Array | Date

/** The input of `Emitter.emit`. */
export interface EmitInput {
  /** CloudEvents `source` (URI-reference), non-empty. */
  readonly source: string
  /** CloudEvents `type`, non-empty. */
  readonly type: string
  /**
   * The body. Bytes travel as `binary_data`, a string as `text_data`, anything else is serialized
   * as JSON `text_data` with `datacontenttype` defaulting to `application/json`.
   */
  readonly data?: Uint8Array | string | Json | undefined
  readonly datacontenttype?: string | undefined
  readonly dataschema?: string | undefined
  readonly subject?: string | undefined
  /** When the occurrence happened (RFC 3339 string or Date). */
  readonly time?: string | Date | undefined
  /** Extension attributes: names of lower-case letters and digits, at most 20 characters. */
  readonly extensions?: Readonly<Record<string, ExtensionValue>> | undefined
  /** Caller's idempotency key; by default the SHA-256 of source, type and body (see `idempotencyKey`). */
  readonly idempotencyKey?: string | undefined
}

/** Settings `prepare` needs; the Emitter supplies them. */
export interface PrepareContext {
  /** Value of the `emitter` attribute. */
  readonly emitterName: string
  /** Limit on the encoded CloudEvent, including the `seqnum` attribute added at send time. */
  readonly maxEventBytes: number
  /** Emit time, epoch ms (from Effect's Clock). */
  readonly now: number
  /** W3C trace context of the emit span, carried as the CloudEvents distributed-tracing extension. */
  readonly traceparent?: string | undefined
  readonly tracestate?: string | undefined
}

/** Attributes this library sets itself; callers may not set them as extensions. */
export const reservedAttributes: ReadonlySet<string> = new Set([
  "id", "source", "specversion", "type", "data", "data_base64",
  "datacontenttype", "dataschema", "subject", "time",
  "seqnum", "recordedtime", "idempotencykey", "emitter", "traceparent", "tracestate"
])

const extensionName = /^[a-z0-9]{1,20}$/

/** Room reserved for the `seqnum` entry appended at send time (a 20-digit seq plus framing). */
export const seqnumReserve = 40

const encoder = new TextEncoder()

const stringAttr = (value: string): AttributeValue => ({ case: "ceString", value })

const timestampAttr = (ms: number): AttributeValue => ({ case: "ceTimestamp", value: ms })

const invalid = (field: string, rule: string) => new InvalidEvent({ field, rule })

const int32 = (n: number) => Number.isInteger(n) && n >= -2147483648 && n <= 2147483647

const extensionAttr = (name: string, value: ExtensionValue): AttributeValue | InvalidEvent => {
  const field = `extensions.${name}`
  if (!extensionName.test(name)) return invalid(field, "name must be 1 to 20 lower-case letters or digits")
  if (reservedAttributes.has(name)) return invalid(field, "name is reserved")
  if (typeof value === "string") return stringAttr(value)
  if (typeof value === "boolean") return { case: "ceBoolean", value }
  if (typeof value === "number") return int32(value) ? { case: "ceInteger", value } : invalid(field, "a number must be a 32-bit integer")
  if (value instanceof Uint8Array) return { case: "ceBytes", value }
  if (value instanceof Date) {
    const ms = value.getTime()
    return Number.isNaN(ms) ? invalid(field, "invalid date") : timestampAttr(ms)
  }
  return invalid(field, "must be a string, 32-bit integer, boolean, Uint8Array or Date")
}

// RFC 3339 date-time, e.g. 2026-11-25T19:10:41.123Z or 2026-11-25T20:10:41+01:00
const rfc3339 = /^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$/

const timeMs = (time: string | Date): number | InvalidEvent => {
  if (time instanceof Date) {
    const ms = time.getTime()
    return Number.isNaN(ms) ? invalid("time", "invalid date") : ms
  }
  if (!rfc3339.test(time)) return invalid("time", "must be an RFC 3339 date-time")
  const ms = Date.parse(time)
  return Number.isNaN(ms) ? invalid("time", "must be an RFC 3339 date-time") : ms
}

type Body =
  | { readonly case: "binaryData"; readonly value: Uint8Array; readonly bytes: Uint8Array; readonly contentType: string | undefined }
  | { readonly case: "textData"; readonly value: string; readonly bytes: Uint8Array; readonly contentType: string | undefined }
  | { readonly case: undefined; readonly bytes: Uint8Array; readonly contentType: undefined }

const body = (data: EmitInput["data"]): Body | InvalidEvent => {
  if (data === undefined) return { case: undefined, bytes: new Uint8Array(0), contentType: undefined }
  if (data instanceof Uint8Array) return { case: "binaryData", value: data, bytes: data, contentType: undefined }
  if (typeof data === "string") return { case: "textData", value: data, bytes: encoder.encode(data), contentType: undefined }
  let json: string | undefined
  try {
    json = JSON.stringify(data)
  } catch (error) {
    return invalid("data", `not serializable as JSON: ${String(error)}`)
  }
  if (json === undefined) return invalid("data", "not serializable as JSON")
  return { case: "textData", value: json, bytes: encoder.encode(json), contentType: "application/json" }
}

/**
 * The default idempotency key, as the reference emitter computes it: hex SHA-256 over
 * len32be(source) ‖ source ‖ len32be(type) ‖ type ‖ len32be(body) ‖ body. The input is laid out
 * in one reused buffer and hashed in one call: a Hash object per emit costs more than the digest.
 */
export const idempotencyKey = (source: string, type: string, bodyBytes: Uint8Array): string => {
  const prefix = keyPrefix(source, type)
  const length = prefix.length + 4 + bodyBytes.length
  if (length > keyInputBytes) {
    return createHash("sha256").update(prefix).update(len32be(bodyBytes.length)).update(bodyBytes).digest("hex")
  }
  keyInput.set(prefix, 0)
  keyInputView.setUint32(prefix.length, bodyBytes.length)
  keyInput.set(bodyBytes, prefix.length + 4)
  return hash("sha256", keyInput.subarray(0, length), "hex")
}

const len32be = (n: number) => Uint8Array.of(n >>> 24, (n >>> 16) & 0xff, (n >>> 8) & 0xff, n & 0xff)
/** Inputs up to this size are hashed from the shared buffer; larger ones are streamed. */
const keyInputBytes = 16 * 1024
const keyInput = new Uint8Array(keyInputBytes)
const keyInputView = new DataView(keyInput.buffer)

/** len32be(source) ‖ source ‖ len32be(type) ‖ type, cached: applications emit few distinct pairs. */
const prefixes = new Map<string, Map<string, Uint8Array>>()
const maxPrefixes = 1024
let prefixCount = 0
const keyPrefix = (source: string, type: string): Uint8Array => {
  let byType = prefixes.get(source)
  let prefix = byType?.get(type)
  if (prefix === undefined) {
    const s = encoder.encode(source)
    const t = encoder.encode(type)
    prefix = new Uint8Array(8 + s.length + t.length)
    const view = new DataView(prefix.buffer)
    view.setUint32(0, s.length)
    prefix.set(s, 4)
    view.setUint32(4 + s.length, t.length)
    prefix.set(t, 8 + s.length)
    if (prefixCount >= maxPrefixes) {
      prefixes.clear()
      prefixCount = 0
      byType = undefined
    }
    if (byType === undefined) prefixes.set(source, byType = new Map())
    byType.set(type, prefix)
    prefixCount++
  }
  return prefix
}

/**
 * Validates the input and builds its encoded CloudEvent. Returns the error instead of throwing:
 * this runs on the emit hot path.
 */
export const prepare = (input: EmitInput, context: PrepareContext): NewEvent | InvalidEvent | EventTooLarge => {
  if (typeof input !== "object" || input === null) return invalid("event", "must be an object")
  if (typeof input.source !== "string" || input.source.length === 0) return invalid("source", "must be a non-empty string")
  if (typeof input.type !== "string" || input.type.length === 0) return invalid("type", "must be a non-empty string")
  const data = body(input.data)
  if (data instanceof InvalidEvent) return data

  const attributes: Array<readonly [string, AttributeValue]> = []
  if (input.extensions !== undefined) {
    for (const name of Object.keys(input.extensions)) {
      const attr = extensionAttr(name, input.extensions[name]!)
      if (attr instanceof InvalidEvent) return attr
      attributes.push([name, attr])
    }
  }
  const contentType = input.datacontenttype ?? data.contentType
  if (contentType !== undefined) {
    if (typeof contentType !== "string" || contentType.length === 0) return invalid("datacontenttype", "must be a non-empty string")
    attributes.push(["datacontenttype", stringAttr(contentType)])
  }
  if (input.dataschema !== undefined) {
    if (typeof input.dataschema !== "string" || input.dataschema.length === 0) return invalid("dataschema", "must be a non-empty URI")
    attributes.push(["dataschema", { case: "ceUri", value: input.dataschema }])
  }
  if (input.subject !== undefined) {
    if (typeof input.subject !== "string" || input.subject.length === 0) return invalid("subject", "must be a non-empty string")
    attributes.push(["subject", stringAttr(input.subject)])
  }
  if (input.time !== undefined) {
    const ms = timeMs(input.time)
    if (ms instanceof InvalidEvent) return ms
    attributes.push(["time", timestampAttr(ms)])
  }
  if (input.idempotencyKey !== undefined && (typeof input.idempotencyKey !== "string" || input.idempotencyKey.length === 0)) {
    return invalid("idempotencyKey", "must be a non-empty string")
  }
  attributes.push(["idempotencykey", stringAttr(input.idempotencyKey ?? idempotencyKey(input.source, input.type, data.bytes))])
  attributes.push(["recordedtime", timestampAttr(context.now)])
  attributes.push(["emitter", stringAttr(context.emitterName)])
  if (context.traceparent !== undefined) attributes.push(["traceparent", stringAttr(context.traceparent)])
  if (context.tracestate !== undefined && context.tracestate.length > 0) attributes.push(["tracestate", stringAttr(context.tracestate)])

  const eventId = randomUUID()
  const payload = encodeCloudEvent({ id: eventId, source: input.source, type: input.type, attributes, data })
  if (payload.length + seqnumReserve > context.maxEventBytes) {
    return new EventTooLarge({ bytes: payload.length + seqnumReserve, maxBytes: context.maxEventBytes })
  }
  return { eventId, source: input.source, type: input.type, payload, traceparent: context.traceparent }
}

const seqnumKey = encoder.encode("seqnum")

/**
 * The stored payload with its durable `seqnum` attribute: what goes on the wire. The map entry
 * `attributes["seqnum"] = ce_string(seq)` is appended to the encoded message (protobuf merges
 * repeated map entries), written byte by byte: this runs once per event sent.
 */
export const withSeqnum = (payload: Uint8Array, seq: bigint): Uint8Array => {
  const digits = seq.toString()
  // value: CloudEventAttributeValue { ce_string (3) = digits }; entry: { key (1), value (2) }
  const valueLength = 2 + digits.length
  const entryLength = 2 + seqnumKey.length + 2 + valueLength
  const out = allocBytes(payload.length + 2 + entryLength)
  out.set(payload, 0)
  let at = payload.length
  out[at++] = 0x2a // CloudEvent.attributes = 5, length-delimited
  out[at++] = entryLength // < 128: a seq has at most 20 digits
  out[at++] = 0x0a
  out[at++] = seqnumKey.length
  out.set(seqnumKey, at)
  at += seqnumKey.length
  out[at++] = 0x12
  out[at++] = valueLength
  out[at++] = 0x1a
  out[at++] = digits.length
  for (let i = 0; i < digits.length; i++) out[at++] = digits.charCodeAt(i)
  return out
}

/** Decodes an encoded CloudEvent; throws on malformed bytes (callers wrap it). */
export const decode = (bytes: Uint8Array): CloudEvent => fromBinary(CloudEventSchema, bytes)

/** A decoded attribute as a plain value, for logs, the CLI and the test kit: timestamps as ISO strings, or Dates. */
export function attributeValue(value: CloudEventAttributeValue | undefined): string | number | boolean | Uint8Array | undefined
export function attributeValue(value: CloudEventAttributeValue | undefined, timestamps: "date"): string | number | boolean | Uint8Array | Date | undefined
export function attributeValue(value: CloudEventAttributeValue | undefined, timestamps: "iso" | "date" = "iso") {
  const attr = value?.attr
  if (attr === undefined || attr.case === undefined) return undefined
  if (attr.case !== "ceTimestamp") return attr.value
  const date = new Date(timestampMs(attr.value))
  return timestamps === "date" ? date : date.toISOString()
}
