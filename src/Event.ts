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
import { isPlainObject, jsonRule, stringRule, textRule, timeRule, uriReferenceRule, uriRule } from "./event/validate.ts"
import { type CloudEvent, type CloudEventAttributeValue, CloudEventSchema } from "./gen/io/cloudevents/v1/cloudevent_pb.js"
import type { NewEvent } from "./Store.ts"

/** A JSON value, for `data` that is serialized as JSON. */
export type Json = null | boolean | number | string | ReadonlyArray<Json> | { readonly [key: string]: Json }

/** Value of an extension attribute; numbers must be 32-bit integers (CloudEvents `Integer`). */
export type ExtensionValue = string | number | boolean | Uint8Array | Date

/**
 * The input of `Emitter.emit`. Every string attribute is a CloudEvents String (no control
 * characters, noncharacters or unpaired surrogates); input that breaks a rule is refused with
 * InvalidEvent, never rewritten.
 */
export interface EmitInput {
  /** CloudEvents `source`: a non-empty URI-reference (RFC 3986; non-ASCII characters percent-encoded). */
  readonly source: string
  /** CloudEvents `type`, non-empty. */
  readonly type: string
  /**
   * The body. Bytes travel as `binary_data`, a string as `text_data`, anything else is serialized
   * as JSON `text_data` with `datacontenttype` defaulting to `application/json`. A string must be
   * well-formed Unicode (no unpaired surrogates); JSON must be a JSON value: finite numbers, arrays
   * without holes, plain objects, no cycles (a Map, Set, Date, class instance, function or bigint is
   * refused, not turned into `{}`, a string or null).
   */
  readonly data?: Uint8Array | string | Json | undefined
  /** A non-empty String. */
  readonly datacontenttype?: string | undefined
  /** An absolute URI (RFC 3986). */
  readonly dataschema?: string | undefined
  readonly subject?: string | undefined
  /** When the occurrence happened: a valid Date or an RFC 3339 date-time naming a real instant. */
  readonly time?: string | Date | undefined
  /** Extension attributes, a plain object: names of lower-case letters and digits, at most 20 characters. */
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

/** A non-empty CloudEvents String, or the refusal naming `field`. */
const stringField = (field: string, value: unknown): InvalidEvent | undefined => {
  if (typeof value !== "string" || value.length === 0) return invalid(field, "must be a non-empty string")
  const rule = stringRule(value)
  return rule === undefined ? undefined : invalid(field, rule)
}

const int32 = (n: number) => Number.isInteger(n) && n >= -2147483648 && n <= 2147483647

const extensionAttr = (name: string, value: ExtensionValue): AttributeValue | InvalidEvent => {
  const field = `extensions.${name}`
  if (!extensionName.test(name)) return invalid(field, "name must be 1 to 20 lower-case letters or digits")
  if (reservedAttributes.has(name)) return invalid(field, "name is reserved")
  if (typeof value === "string") {
    const rule = stringRule(value)
    return rule === undefined ? stringAttr(value) : invalid(field, rule)
  }
  if (typeof value === "boolean") return { case: "ceBoolean", value }
  if (typeof value === "number") return int32(value) ? { case: "ceInteger", value } : invalid(field, "a number must be a 32-bit integer")
  if (value instanceof Uint8Array) return { case: "ceBytes", value }
  if (value instanceof Date) {
    const ms = value.getTime()
    return Number.isNaN(ms) ? invalid(field, "invalid date") : timestampAttr(ms)
  }
  return invalid(field, "must be a string, 32-bit integer, boolean, Uint8Array or Date")
}

const timeMs = (time: string | Date): number | InvalidEvent => {
  if (time instanceof Date) {
    const ms = time.getTime()
    return Number.isNaN(ms) ? invalid("time", "invalid date") : ms
  }
  if (typeof time !== "string") return invalid("time", "must be an RFC 3339 date-time string or a Date")
  const rule = timeRule(time)
  if (rule !== undefined) return invalid("time", rule)
  const ms = Date.parse(time)
  return Number.isNaN(ms) ? invalid("time", "must be a real instant") : ms
}

type Body =
  | { readonly case: "binaryData"; readonly value: Uint8Array; readonly bytes: Uint8Array; readonly contentType: string | undefined }
  | { readonly case: "textData"; readonly value: string; readonly bytes: Uint8Array; readonly contentType: string | undefined }
  | { readonly case: undefined; readonly bytes: Uint8Array; readonly contentType: undefined }

const body = (data: EmitInput["data"]): Body | InvalidEvent => {
  if (data === undefined) return { case: undefined, bytes: new Uint8Array(0), contentType: undefined }
  if (data instanceof Uint8Array) return { case: "binaryData", value: data, bytes: data, contentType: undefined }
  if (typeof data === "string") {
    const rule = textRule(data)
    return rule === undefined ? { case: "textData", value: data, bytes: encoder.encode(data), contentType: undefined } : invalid("data", rule)
  }
  const rule = jsonRule(data)
  if (rule !== undefined) return invalid("data", `must be a JSON value: ${rule}`)
  // Checked above: a plain JSON value serializes to its text without throwing or leaving anything out.
  const json = JSON.stringify(data)
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
  const source = input.source
  if (typeof source !== "string" || source.length === 0) return invalid("source", "must be a non-empty string")
  const sourceRule = uriReferenceRule(source)
  if (sourceRule !== undefined) return invalid("source", sourceRule)
  const typeRefused = stringField("type", input.type)
  if (typeRefused !== undefined) return typeRefused
  const data = body(input.data)
  if (data instanceof InvalidEvent) return data

  const attributes: Array<readonly [string, AttributeValue]> = []
  const extensions = input.extensions
  if (extensions !== undefined) {
    if (!isPlainObject(extensions)) return invalid("extensions", "must be a plain object of name: value")
    for (const name of Object.keys(extensions)) {
      const attr = extensionAttr(name, extensions[name] as ExtensionValue)
      if (attr instanceof InvalidEvent) return attr
      attributes.push([name, attr])
    }
  }
  const contentType = input.datacontenttype ?? data.contentType
  if (contentType !== undefined) {
    const refused = stringField("datacontenttype", contentType)
    if (refused !== undefined) return refused
    attributes.push(["datacontenttype", stringAttr(contentType)])
  }
  if (input.dataschema !== undefined) {
    if (typeof input.dataschema !== "string" || input.dataschema.length === 0) return invalid("dataschema", "must be a non-empty URI")
    const rule = uriRule(input.dataschema)
    if (rule !== undefined) return invalid("dataschema", rule)
    attributes.push(["dataschema", { case: "ceUri", value: input.dataschema }])
  }
  if (input.subject !== undefined) {
    const refused = stringField("subject", input.subject)
    if (refused !== undefined) return refused
    attributes.push(["subject", stringAttr(input.subject)])
  }
  if (input.time !== undefined) {
    const ms = timeMs(input.time)
    if (ms instanceof InvalidEvent) return ms
    attributes.push(["time", timestampAttr(ms)])
  }
  if (input.idempotencyKey !== undefined) {
    const refused = stringField("idempotencyKey", input.idempotencyKey)
    if (refused !== undefined) return refused
  }
  attributes.push(["idempotencykey", stringAttr(input.idempotencyKey ?? idempotencyKey(input.source, input.type, data.bytes))])
  attributes.push(["recordedtime", timestampAttr(context.now)])
  attributes.push(["emitter", stringAttr(context.emitterName)])
  if (context.traceparent !== undefined) attributes.push(["traceparent", stringAttr(context.traceparent)])
  if (context.tracestate !== undefined && context.tracestate.length > 0) attributes.push(["tracestate", stringAttr(context.tracestate)])

  const eventId = randomUUID()
  const payload = encodeCloudEvent({ id: eventId, source, type: input.type, attributes, data })
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
