/**
 * A sample of produced events chosen by id, kept whole: unlike `sampleRecorder` (every Nth
 * arrival, the last 1 000), both sides can tell which ids are in it, so a sampled id the server
 * did not keep is noticed, every copy of a sampled id is kept (duplicates by id), and one in 1 keeps
 * every event. The benchmark compares it with what was emitted. Memory grows with the run (the
 * sampled payloads as they arrived, decoded only when read), like record "ids".
 */
import { decodeReceived, type ReceivedEvent } from "./ingestModel.ts"
import type { SampleRecorder } from "./ingestRecorder.ts"

/**
 * Whether `id` is in a one-in-`oneIn` sample: its last four characters read as hex, modulo
 * `oneIn` (random for UUIDs; one in 16 is "ends in 0"). `oneIn` 1 takes every id; an id not
 * ending in hex is sampled only then.
 */
export const inSample = (id: string, oneIn: number): boolean => {
  if (oneIn <= 1) return true
  const tail = id.slice(-4)
  if (!/^[0-9a-fA-F]{1,4}$/.test(tail)) return false
  return Number.parseInt(tail, 16) % oneIn === 0
}

/** Keeps whole every produced event whose id is in a one-in-`oneIn` sample (`inSample`). */
export const idSampleRecorder = (oneIn: number): SampleRecorder => {
  if (!(Number.isSafeInteger(oneIn) && oneIn >= 1)) throw new Error(`sample: one in ${oneIn} is not a positive integer`)
  let kept: Array<{ readonly payload: Uint8Array; readonly receivedAt: number }> = []
  return {
    wholeEvents: false,
    record: (event: ReceivedEvent) => {
      // A copy: the payload may be a view into the whole request's buffer, which would stay alive.
      if (inSample(event.id, oneIn)) kept.push({ payload: event.payload.slice(), receivedAt: event.receivedAt })
    },
    clear: () => {
      kept = []
    },
    events: () => kept.map((e) => decodeReceived(e.payload, e.receivedAt))
  }
}
