/**
 * What a delivery run is judged by, as pure functions over ids and seqnums (test/bench-verify.test.ts):
 * - loss by id: every id the emitter gave a receipt for must be among the ids the ingest server
 *   produced; a surplus of other ids does not hide a missing one;
 * - duplicates by id, and which of them no failed send explains;
 * - seqnums gap-free and unrepeated per (source, type);
 * - whole events (a sample, or all) equal to what was emitted.
 */

/** At most this many example ids are kept per kind of problem. */
const examples = 10

export interface DeliveryInput {
  /** Ids the emitter gave receipts for (or wrote, for a backlog). */
  readonly expected: Iterable<string>
  /** Distinct ids the ingest server produced. */
  readonly received: Iterable<string>
  /** Copies the server produced beyond the first copy of each id, in all (its duplicate count). */
  readonly duplicates: number
  /** Copies beyond the first per id, where the server's record says which ids (the whole-event sample). */
  readonly duplicatesById: ReadonlyMap<string, number>
  /**
   * Per id, how many times the emitter sent it without hearing "delivered" (a failed request, a
   * result other than delivered): each such send may legitimately be followed by another copy.
   */
  readonly unacknowledgedSends: ReadonlyMap<string, number>
}

export interface DeliveryCheck {
  readonly expected: number
  readonly received: number
  /** Expected ids the server never produced. */
  readonly lost: number
  readonly lostIds: ReadonlyArray<string>
  /** Produced ids nobody expected (another run's, a warm-up's): reported, never netted against `lost`. */
  readonly unexpected: number
  readonly duplicates: number
  /**
   * Copies no unacknowledged send accounts for: the emitter re-sent something already delivered
   * (a lease that ran out while the first send was still in flight counts here too: legal
   * at-least-once, but a cost worth seeing), or the server recorded one send twice.
   */
  readonly unexplainedDuplicates: number
  readonly unexplainedIds: ReadonlyArray<string>
}

export const checkDelivery = (input: DeliveryInput): DeliveryCheck => {
  const received = input.received instanceof Set ? (input.received as ReadonlySet<string>) : new Set(input.received)
  const expected = new Set<string>()
  const lostIds: Array<string> = []
  let lost = 0
  for (const id of input.expected) {
    if (expected.has(id)) continue
    expected.add(id)
    if (!received.has(id)) {
      lost++
      if (lostIds.length < examples) lostIds.push(id)
    }
  }
  let unexpected = 0
  for (const id of received) if (!expected.has(id)) unexpected++

  // By id where the record says which ids; in all, against every unacknowledged send.
  const unexplainedIds: Array<string> = []
  let unexplainedById = 0
  for (const [id, copies] of input.duplicatesById) {
    const extra = copies - (input.unacknowledgedSends.get(id) ?? 0)
    if (extra > 0) {
      unexplainedById += extra
      if (unexplainedIds.length < examples) unexplainedIds.push(id)
    }
  }
  let unacknowledged = 0
  for (const sends of input.unacknowledgedSends.values()) unacknowledged += sends
  const unexplainedInAll = Math.max(0, input.duplicates - unacknowledged)

  return {
    expected: expected.size,
    received: received.size,
    lost,
    lostIds,
    unexpected,
    duplicates: input.duplicates,
    unexplainedDuplicates: Math.max(unexplainedById, unexplainedInAll),
    unexplainedIds
  }
}

/** One (source, type, seqnum) to check. */
export interface Sequenced {
  readonly source: string
  readonly type: string
  readonly seq: bigint
}

export interface SequenceCheck {
  readonly keys: number
  readonly events: number
  /** Seqnums missing between each key's lowest and highest. */
  readonly gaps: number
  /** Seqnums seen more than once. */
  readonly repeats: number
  /** "bench/bench.event: 12 missing between 1001 and 1100 (first 1050)". */
  readonly problems: ReadonlyArray<string>
}

/** Whether each key's seqnums form one run without holes or repeats. */
export const checkSequences = (entries: Iterable<Sequenced>): SequenceCheck => {
  const byKey = new Map<string, Array<bigint>>()
  let events = 0
  for (const e of entries) {
    events++
    const key = `${e.source}/${e.type}`
    let seqs = byKey.get(key)
    if (seqs === undefined) byKey.set(key, seqs = [])
    seqs.push(e.seq)
  }
  let gaps = 0
  let repeats = 0
  const problems: Array<string> = []
  for (const [key, seqs] of byKey) {
    seqs.sort((a, b) => (a < b ? -1 : a > b ? 1 : 0))
    let unique = 1
    let firstMissing: bigint | undefined
    let firstRepeat: bigint | undefined
    for (let i = 1; i < seqs.length; i++) {
      const step = seqs[i]! - seqs[i - 1]!
      if (step === 0n) firstRepeat ??= seqs[i]!
      else {
        unique++
        if (step > 1n) firstMissing ??= seqs[i - 1]! + 1n
      }
    }
    const lowest = seqs[0]!
    const highest = seqs[seqs.length - 1]!
    const missing = Number(highest - lowest + 1n) - unique
    const repeated = seqs.length - unique
    gaps += missing
    repeats += repeated
    if (missing > 0 && problems.length < examples) problems.push(`${key}: ${missing} missing between ${lowest} and ${highest} (first ${firstMissing})`)
    if (repeated > 0 && problems.length < examples) problems.push(`${key}: ${repeated} repeated (first ${firstRepeat})`)
  }
  return { keys: byKey.size, events, gaps, repeats, problems }
}

/** An event as the ingest server kept it whole. */
export interface KeptEvent {
  readonly id: string
  readonly source: string
  readonly type: string
  readonly seqnum: string | undefined
  readonly data: Uint8Array | undefined
}

/** What the emitter was given and answered for one id. */
export interface Emitted {
  readonly source: string
  readonly type: string
  readonly seq: bigint | undefined
  readonly data: Uint8Array
}

export interface SampleCheck {
  /** Expected ids in the sample. */
  readonly sampled: number
  /** Kept events compared. */
  readonly checked: number
  /** Sampled ids the server kept no whole event for. */
  readonly missing: number
  /** Kept events that differ from what was emitted (or that nobody emitted). */
  readonly corrupted: number
  readonly problems: ReadonlyArray<string>
}

const sameBytes = (a: Uint8Array | undefined, b: Uint8Array) => {
  if (a === undefined || a.byteLength !== b.byteLength) return false
  for (let i = 0; i < b.byteLength; i++) if (a[i] !== b[i]) return false
  return true
}

/** What differs between a kept event and what was emitted under its id; undefined when nothing does. */
export const differenceOf = (kept: KeptEvent, emitted: Emitted): string | undefined => {
  if (kept.source !== emitted.source) return `source ${JSON.stringify(kept.source)}, emitted ${JSON.stringify(emitted.source)}`
  if (kept.type !== emitted.type) return `type ${JSON.stringify(kept.type)}, emitted ${JSON.stringify(emitted.type)}`
  if (emitted.seq !== undefined && kept.seqnum !== String(emitted.seq)) return `seqnum ${kept.seqnum}, receipt ${emitted.seq}`
  if (!sameBytes(kept.data, emitted.data)) return `data of ${kept.data?.byteLength ?? "no"} bytes differs from the ${emitted.data.byteLength} emitted`
  return undefined
}

/**
 * Compares every kept event with what was emitted under its id, and counts sampled ids with no
 * kept event. `inSample` is the rule the server kept events by.
 */
export const checkSample = (
  kept: ReadonlyArray<KeptEvent>,
  emitted: ReadonlyMap<string, Emitted>,
  inSample: (id: string) => boolean
): SampleCheck => {
  const problems: Array<string> = []
  const keptIds = new Set<string>()
  let corrupted = 0
  for (const event of kept) {
    keptIds.add(event.id)
    const source = emitted.get(event.id)
    const difference = source === undefined ? "nobody emitted this id" : differenceOf(event, source)
    if (difference === undefined) continue
    corrupted++
    if (problems.length < examples) problems.push(`${event.id}: ${difference}`)
  }
  let sampled = 0
  let missing = 0
  for (const id of emitted.keys()) {
    if (!inSample(id)) continue
    sampled++
    if (!keptIds.has(id)) missing++
  }
  return { sampled, checked: kept.length, missing, corrupted, problems }
}

/** Copies beyond the first per id among kept events (the server keeps every copy of a sampled id). */
export const repeatsOf = (kept: ReadonlyArray<{ readonly id: string }>): ReadonlyMap<string, number> => {
  const seen = new Map<string, number>()
  for (const event of kept) seen.set(event.id, (seen.get(event.id) ?? 0) + 1)
  const repeats = new Map<string, number>()
  for (const [id, copies] of seen) if (copies > 1) repeats.set(id, copies - 1)
  return repeats
}

// ---- one verdict over a run ---------------------------------------------------------------------

export interface VerificationInput {
  /** Per expected id, what was emitted (receipts, or the rows written for a backlog). */
  readonly emitted: ReadonlyMap<string, Emitted>
  /** Distinct ids the server produced. */
  readonly received: ReadonlyArray<string>
  /** The server's duplicate count (copies beyond the first of an id). */
  readonly duplicates: number
  readonly unacknowledgedSends: ReadonlyMap<string, number>
  /** The events the server kept whole, every copy. */
  readonly kept: ReadonlyArray<KeptEvent>
  /** The server kept one event in `sampleOneIn` (1: all) by `inSample`. */
  readonly sampleOneIn: number
  readonly inSample: (id: string) => boolean
}

export interface Verification {
  readonly delivery: DeliveryCheck
  /** The seqnums the emitter answered (receipts): one run per key. */
  readonly emittedSequences: SequenceCheck
  /** The seqnums the server received, one copy per id; only when it kept every event. */
  readonly receivedSequences: SequenceCheck | undefined
  readonly sample: SampleCheck
  readonly sampleOneIn: number
}

/** The first copy of each id (a duplicate delivery is not a repeated seqnum). */
const firstCopies = (kept: ReadonlyArray<KeptEvent>) => {
  const seen = new Set<string>()
  const out: Array<KeptEvent> = []
  for (const e of kept) {
    if (seen.has(e.id)) continue
    seen.add(e.id)
    out.push(e)
  }
  return out
}

const parsedSeq = (seqnum: string | undefined): bigint | undefined => {
  if (seqnum === undefined || !/^\d+$/.test(seqnum)) return undefined
  return BigInt(seqnum)
}

export const verify = (input: VerificationInput): Verification => {
  const emittedSeqs: Array<Sequenced> = []
  for (const e of input.emitted.values()) if (e.seq !== undefined) emittedSeqs.push({ source: e.source, type: e.type, seq: e.seq })
  const receivedSequences = input.sampleOneIn === 1
    ? checkSequences(firstCopies(input.kept).map((e) => ({ source: e.source, type: e.type, seq: parsedSeq(e.seqnum) ?? -1n })))
    : undefined
  return {
    delivery: checkDelivery({
      expected: input.emitted.keys(),
      received: input.received,
      duplicates: input.duplicates,
      duplicatesById: repeatsOf(input.kept),
      unacknowledgedSends: input.unacknowledgedSends
    }),
    emittedSequences: checkSequences(emittedSeqs),
    receivedSequences,
    sample: checkSample(input.kept, input.emitted, input.inSample),
    sampleOneIn: input.sampleOneIn
  }
}

/** Why the run must not pass: anything lost, a kept event unlike what was emitted, a sampled event not kept, a seqnum hole or repeat. */
export const failures = (v: Verification): ReadonlyArray<string> => [
  ...(v.delivery.lost > 0 ? [`${v.delivery.lost} events lost (e.g. ${v.delivery.lostIds.slice(0, 3).join(", ")})`] : []),
  ...(v.sample.corrupted > 0 ? [`${v.sample.corrupted} events received unlike what was emitted: ${v.sample.problems.slice(0, 3).join("; ")}`] : []),
  ...(v.sample.missing > 0 ? [`${v.sample.missing} sampled events not kept by the server`] : []),
  ...[v.emittedSequences, v.receivedSequences].flatMap((s, i) =>
    s !== undefined && s.gaps + s.repeats > 0 ? [`${i === 0 ? "receipts" : "received events"}: ${s.problems.slice(0, 3).join("; ")}`] : []
  )
]

const plural = (n: number, what: string) => `${n.toLocaleString("en-US")} ${what}${n === 1 ? "" : "s"}`

export const verificationLines = (v: Verification): ReadonlyArray<string> => {
  const d = v.delivery
  const seqs = (s: SequenceCheck) => s.gaps + s.repeats === 0 ? `gap-free over ${plural(s.keys, "key")}` : s.problems.join("; ")
  return [
    `  delivery by id: ${plural(d.expected, "id")} expected, ${plural(d.received, "distinct id")} received; lost ${d.lost}` +
    `${d.lost > 0 ? ` (e.g. ${d.lostIds.slice(0, 3).join(", ")})` : ""}; unexpected ${d.unexpected}; duplicates ${d.duplicates}` +
    ` (unexplained ${d.unexplainedDuplicates}${d.unexplainedIds.length > 0 ? `, e.g. ${d.unexplainedIds.slice(0, 3).join(", ")}` : ""})`,
    `  whole events: ${v.sampleOneIn === 1 ? "all" : `one in ${v.sampleOneIn}`} kept, ${plural(v.sample.checked, "event")} compared with what was emitted` +
    ` (${plural(v.sample.sampled, "sampled id")}): corrupted ${v.sample.corrupted}, missing ${v.sample.missing}` +
    `${v.sample.problems.length > 0 ? ` (${v.sample.problems.slice(0, 3).join("; ")})` : ""}`,
    `  seqnums: receipts ${seqs(v.emittedSequences)}` +
    (v.receivedSequences === undefined ? "; received: checked against the receipts on the sample" : `; received ${seqs(v.receivedSequences)}`)
  ]
}

export const verificationJson = (v: Verification) => ({
  lost: v.delivery.lost,
  duplicates: v.delivery.duplicates,
  unexplainedDuplicates: v.delivery.unexplainedDuplicates,
  unexpectedIds: v.delivery.unexpected,
  verifiedEvents: v.sample.checked,
  verifiedOneIn: v.sampleOneIn,
  corruptedEvents: v.sample.corrupted,
  sampleMissing: v.sample.missing,
  seqnumGaps: v.emittedSequences.gaps + (v.receivedSequences?.gaps ?? 0),
  seqnumRepeats: v.emittedSequences.repeats + (v.receivedSequences?.repeats ?? 0)
})
