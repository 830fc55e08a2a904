/**
 * A sample of produced events kept whole, chosen by id, so a server that otherwise reads only
 * envelopes (record "ids" or "counts") can still have a fraction of what it received checked
 * field by field (the benchmark compares it with what was emitted). Only sampled events are
 * decoded, from the payload as it arrived; every copy of a sampled id is kept.
 */
import { fromBinary } from "@bufbuild/protobuf"
import { CloudEventSchema } from "../gen/io/cloudevents/v1/cloudevent_pb.js"

/**
 * Whether `id` is in a one-in-`oneIn` sample: the last four characters read as hex, modulo
 * `oneIn` (random for UUIDs; one in 16 is "ends in 0"). `oneIn` 1 takes every id; an id not
 * ending in hex is never sampled unless everything is.
 */
export const inSample = (id: string, oneIn: number): boolean => {
  if (oneIn <= 1) return true
  const tail = id.slice(-4)
  if (!/^[0-9a-fA-F]{1,4}$/.test(tail)) return false
  return Number.parseInt(tail, 16) % oneIn === 0
}

/** A sampled event: its envelope, its seqnum attribute and its data, as decoded from the payload. */
export interface SampledEvent {
  readonly id: string
  readonly source: string
  readonly type: string
  readonly seqnum: string | undefined
  readonly data: Uint8Array | string | undefined
}

/** The JSON form (control endpoint): data as base64 when binary. */
export const sampledEventJson = (event: SampledEvent) => ({
  id: event.id,
  source: event.source,
  type: event.type,
  seqnum: event.seqnum,
  ...(typeof event.data === "string" ? { text_data: event.data } : {}),
  ...(event.data instanceof Uint8Array ? { data_base64: Buffer.from(event.data).toString("base64") } : {})
})

const decode = (payload: Uint8Array): SampledEvent => {
  const event = fromBinary(CloudEventSchema, payload)
  const seq = event.attributes["seqnum"]?.attr
  const data = event.data.case === "protoData" ? event.data.value.value : event.data.value
  return {
    id: event.id,
    source: event.source,
    type: event.type,
    seqnum: seq === undefined || seq.case === undefined ? undefined : String(seq.value),
    data
  }
}

export interface EventSample {
  readonly oneIn: number
  /** Sampled events in arrival order, duplicates included. */
  readonly events: ReadonlyArray<SampledEvent>
  /** Called for every produced event (id and payload are all it reads). */
  readonly record: (event: { readonly id: string; readonly payload: Uint8Array }) => void
  readonly clear: () => void
}

export const makeEventSample = (oneIn: number): EventSample => {
  if (!(Number.isSafeInteger(oneIn) && oneIn >= 1)) throw new Error(`sample: one in ${oneIn} is not a positive integer`)
  let events: Array<SampledEvent> = []
  return {
    oneIn,
    get events() {
      return events
    },
    record: (event) => {
      if (inSample(event.id, oneIn)) events.push(decode(event.payload))
    },
    clear: () => {
      events = []
    }
  }
}
