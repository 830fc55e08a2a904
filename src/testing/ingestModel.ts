/**
 * What the reference ingest server talks about: a received event, a request record, the stats,
 * and the pure readings of an encoded CloudEvent (whole, or only its envelope) with the checks a
 * real ingest applies to every event. No state and no I/O here.
 */
import { fromBinary } from "@bufbuild/protobuf"
import { BinaryReader, WireType } from "@bufbuild/protobuf/wire"
import { Schema } from "effect"
import { attributeValue } from "../Event.ts"
import { CloudEventSchema } from "../gen/io/cloudevents/v1/cloudevent_pb.js"

export type AttributeValue = boolean | number | string | Uint8Array | Date

/** One event the server produced (accepted). */
export interface ReceivedEvent {
  readonly id: string
  readonly source: string
  readonly type: string
  readonly specVersion: string
  /** The `seqnum` attribute, if present. */
  readonly seqnum: string | undefined
  readonly attributes: Readonly<Record<string, AttributeValue>>
  /** `binary_data`, `text_data`, or the packed value of `proto_data`. */
  readonly data: Uint8Array | string | undefined
  /** The encoded CloudEvent exactly as it arrived. */
  readonly payload: Uint8Array
  /** Epoch milliseconds. */
  readonly receivedAt: number
}

export interface IngestStats {
  /** Publish and PublishBatch requests that reached the handler. */
  readonly requests: number
  /** Requests answered with an error status (injected, down, auth, size). */
  readonly failedRequests: number
  /** Requests the client cancelled (or whose deadline passed) while the server held them. */
  readonly abandonedRequests: number
  /** Events produced (accepted), duplicates included. */
  readonly events: number
  /** Events answered with a per-event error. */
  readonly rejectedEvents: number
  /** Distinct event ids produced (with record "seqnums": distinct (source, type, seqnum)); null when recording only counts. */
  readonly uniqueIds: number | null
  /** Produced events whose id (seqnum) had been produced before; null when recording only counts. */
  readonly duplicates: number | null
  /** Encoded bytes of the produced events. */
  readonly bytes: number
}

/** A request as seen by the server (the last `requestLogSize` are kept). */
export interface RequestRecord {
  readonly method: "Publish" | "PublishBatch"
  readonly receivedAt: number
  readonly events: number
  /** Uncompressed request message bytes. */
  readonly bytes: number
  /** `grpc-encoding` of the request: "identity", "gzip", … */
  readonly encoding: string
  readonly headers: Readonly<Record<string, string>>
}

export const PublishErrorCodeName = Schema.Literals([
  "UNKNOWN",
  "VALIDATION_FAILED",
  "SCHEMA_MISSING",
  "ENCODE_ERROR",
  "DOMAIN_MISCONFIGURATION"
])
export type PublishErrorCodeName = typeof PublishErrorCodeName.Type

/** Why one event was not produced: its per-event error. */
export interface Rejection {
  readonly code: PublishErrorCodeName
  readonly reason: string
}

/** The whole event, every attribute decoded (timestamps as Dates). */
export const decodeReceived = (payload: Uint8Array, receivedAt: number): ReceivedEvent => {
  const event = fromBinary(CloudEventSchema, payload)
  const attributes: Record<string, AttributeValue> = {}
  for (const [name, value] of Object.entries(event.attributes)) {
    const plain = attributeValue(value, "date")
    if (plain !== undefined) attributes[name] = plain
  }
  const seq = attributes["seqnum"]
  const data = event.data.case === "protoData" ? event.data.value.value : event.data.value
  return {
    id: event.id,
    source: event.source,
    type: event.type,
    specVersion: event.specVersion,
    seqnum: seq === undefined ? undefined : String(seq),
    attributes,
    data,
    payload,
    receivedAt
  }
}

const seqnumKey = "seqnum"
const seqnumKeyBytes = new TextEncoder().encode(seqnumKey)

/**
 * Whether a map entry may be the `seqnum` attribute, from its first bytes: encoders write the key
 * (field 1) first, so other attributes are passed over without decoding. An entry that does not
 * start with a key is decoded to be sure.
 */
const maybeSeqnumEntry = (bytes: Uint8Array, at: number): boolean => {
  if (bytes[at] !== 0x0a) return true
  if (bytes[at + 1] !== seqnumKeyBytes.length) return false
  for (let i = 0; i < seqnumKeyBytes.length; i++) if (bytes[at + 2 + i] !== seqnumKeyBytes[i]) return false
  return true
}

/**
 * The seqnum of an entry laid out exactly as `Event.withSeqnum` writes it (key, then a value
 * holding only ce_string digits), read from the bytes; undefined for any other layout.
 */
const stampedSeqnum = (bytes: Uint8Array, at: number, length: number): string | undefined => {
  const value = at + 2 + seqnumKeyBytes.length // after the key: 0x12, value length, 0x1a, digits length
  const digits = bytes[value + 3]!
  if (bytes[value] !== 0x12 || bytes[value + 2] !== 0x1a || bytes[value + 1] !== digits + 2 || value + 4 + digits !== at + length) {
    return undefined
  }
  let out = ""
  for (let i = value + 4; i < value + 4 + digits; i++) out += String.fromCharCode(bytes[i]!)
  return out
}

/**
 * The `seqnum` of one attributes map entry (`{ 1: key, 2: CloudEventAttributeValue }`), if the
 * entry is that attribute: its ce_string (3) or ce_integer (2) value, as a decimal string.
 */
const seqnumOfEntry = (entry: Uint8Array): string | undefined => {
  const reader = new BinaryReader(entry)
  let key: string | undefined
  let value: Uint8Array | undefined
  while (reader.pos < reader.len) {
    const [field, wireType] = reader.tag()
    if (field === 1 && wireType === WireType.LengthDelimited) key = reader.string()
    else if (field === 2 && wireType === WireType.LengthDelimited) value = reader.bytes()
    else reader.skip(wireType, field)
  }
  if (key !== seqnumKey || value === undefined) return undefined
  const attr = new BinaryReader(value)
  let seq: string | undefined
  while (attr.pos < attr.len) {
    const [field, wireType] = attr.tag()
    if (field === 3 && wireType === WireType.LengthDelimited) seq = attr.string()
    else if (field === 2 && wireType === WireType.Varint) seq = String(attr.int32())
    else attr.skip(wireType, field)
  }
  return seq
}

/**
 * The envelope of an encoded CloudEvent: id, source, spec_version and type (fields 1 to 4), and
 * with `withSeqnum` the `seqnum` attribute; the other fields skipped. What validation, rejection
 * rules and the bounded recorders look at; used when nothing keeps or inspects whole events, so a
 * server under load does not build every attribute of every event only to drop it.
 */
export const decodeEnvelope = (payload: Uint8Array, receivedAt: number, withSeqnum = false): ReceivedEvent => {
  const reader = new BinaryReader(payload)
  const head = ["", "", "", "", ""] // by field number: 1 id, 2 source, 3 spec_version, 4 type
  let seqnum: string | undefined
  while (reader.pos < reader.len) {
    const [field, wireType] = reader.tag()
    if (field >= 1 && field <= 4) {
      if (wireType !== WireType.LengthDelimited) throw new Error(`field ${field} has wire type ${wireType}`)
      head[field] = reader.string()
    } else if (withSeqnum && field === 5 && wireType === WireType.LengthDelimited) {
      // Map entries may repeat; the last one wins, as in protobuf's own merge.
      const length = reader.uint32()
      const start = reader.pos
      if (start + length > reader.len) throw new Error("attributes entry past the end of the event")
      reader.pos += length
      if (maybeSeqnumEntry(payload, start)) {
        seqnum = stampedSeqnum(payload, start, length) ?? seqnumOfEntry(payload.subarray(start, start + length)) ?? seqnum
      }
    } else reader.skip(wireType, field)
  }
  return {
    id: head[1]!,
    source: head[2]!,
    specVersion: head[3]!,
    type: head[4]!,
    seqnum,
    attributes: {},
    data: undefined,
    payload,
    receivedAt
  }
}

/** What a real ingest refuses regardless of configuration. */
export const validateEvent = (event: ReceivedEvent): Rejection | undefined => {
  if (event.id === "") return { code: "VALIDATION_FAILED", reason: "id is empty" }
  if (event.source === "") return { code: "VALIDATION_FAILED", reason: "source is empty" }
  if (event.type === "") return { code: "VALIDATION_FAILED", reason: "type is empty" }
  if (event.specVersion !== "1.0") {
    return { code: "VALIDATION_FAILED", reason: `spec_version must be "1.0", got ${JSON.stringify(event.specVersion)}` }
  }
  return undefined
}

/** The JSON form of a received event (JSON lines file, control endpoint): bytes as base64, times as ISO strings. */
export const receivedEventJson = (event: ReceivedEvent) => {
  const plain = (v: AttributeValue) =>
    v instanceof Uint8Array ? Buffer.from(v).toString("base64") : v instanceof Date ? v.toISOString() : v
  const attributes: Record<string, string | number | boolean> = {}
  for (const [k, v] of Object.entries(event.attributes)) attributes[k] = plain(v)
  return {
    id: event.id,
    source: event.source,
    type: event.type,
    specversion: event.specVersion,
    seqnum: event.seqnum,
    attributes,
    ...(typeof event.data === "string" ? { text_data: event.data } : {}),
    ...(event.data instanceof Uint8Array ? { data_base64: Buffer.from(event.data).toString("base64") } : {}),
    receivedAt: new Date(event.receivedAt).toISOString()
  }
}
