/**
 * What the reference ingest server remembers: the counters, the recent requests, and the produced
 * events in one of four record modes, plus any extra `Recorder`s (a JSON lines file, a sample).
 * The handler reports to it; tests, the control endpoint and the CLI read `IngestReceived`.
 *
 * Record modes, from most to least memory:
 * - "events": every event, whole (attributes, data, payload); for tests.
 * - "ids": every distinct id (exact duplicates, `ids.has(id)` for loss checks); grows with the run.
 * - "seqnums": per (source, type) the intervals of seqnums seen (./seqnumLedger.ts): exact
 *   duplicates and gaps in memory bounded by the open gaps, for soaks. Events without a usable
 *   seqnum fall back to their id.
 * - "counts": counters only.
 */
import * as fs from "node:fs"
import type { IngestStats, ReceivedEvent, RequestRecord } from "./ingestModel.ts"
import { decodeReceived, receivedEventJson } from "./ingestModel.ts"
import { SeqnumLedger, seqnumValue, type SequenceSummary } from "./seqnumLedger.ts"

export type RecordMode = "events" | "ids" | "seqnums" | "counts"

/**
 * Something that keeps what the server produced, called once per produced (accepted) event in
 * arrival order, after the server's own recording. Pass extra ones as `IngestServerOptions.recorders`.
 */
export interface Recorder {
  /**
   * Whether `record` reads attributes or data. When no recorder (and no rejection predicate) does,
   * the server decodes only the envelope: id, source, type, spec version and seqnum.
   */
  readonly wholeEvents: boolean
  readonly record: (event: ReceivedEvent) => void
  /** Forgets what it kept (`received.clear()`, POST /clear). */
  readonly clear?: () => void
  /** Flushes and releases what it holds; called once when the server closes. */
  readonly close?: () => Promise<void>
}

/** The seqnum view of what was produced (record "seqnums"). */
export interface ReceivedSequences {
  /** Whether this (source, type, seqnum) was produced. */
  readonly has: (source: string, type: string, seqnum: number | bigint | string) => boolean
  /** Per (source, type): distinct seqnums, lowest, highest, how many are missing between, the first gaps. */
  readonly summary: (gapLimit?: number) => ReadonlyArray<SequenceSummary>
  /** Intervals held (memory is proportional to it) and seqnums left unchecked past the interval budget. */
  readonly footprint: () => { readonly ranges: number; readonly overflowed: number }
}

export interface IngestReceived {
  /** Produced events in arrival order (only when `record` is "events"). */
  readonly events: ReadonlyArray<ReceivedEvent>
  readonly stats: IngestStats
  /** Distinct produced ids ("events" and "ids"; with "seqnums" only those of events without a seqnum). */
  readonly ids: ReadonlySet<string>
  /** Produced seqnums (filled only when `record` is "seqnums"). */
  readonly sequences: ReceivedSequences
  readonly requests: ReadonlyArray<RequestRecord>
  /**
   * Resolves once `predicate(stats)` holds, re-checked whenever a request arrives, an event is
   * recorded or a connection closes; rejects after `timeoutMs` (default 5 s).
   */
  readonly waitFor: (predicate: (stats: IngestStats) => boolean, timeoutMs?: number) => Promise<IngestStats>
  /** Resolves once at least `count` events were produced. */
  readonly waitForEvents: (count: number, timeoutMs?: number) => Promise<IngestStats>
  /** Forgets everything received so far (faults stay). */
  readonly clear: () => void
}

/** The recorder's side facing the handler. */
export interface IngestRecorder {
  readonly received: IngestReceived
  /** Whether some recorder reads whole events. */
  readonly wholeEvents: boolean
  /** Whether the envelope must carry the seqnum. */
  readonly needsSeqnum: boolean
  readonly request: (record: RequestRecord) => void
  readonly failedRequest: () => void
  readonly abandonedRequest: () => void
  readonly produced: (accepted: ReadonlyArray<ReceivedEvent>, rejected: number) => void
  /** Re-checks the waiters (a connection closed, a request failed). */
  readonly changed: () => void
  readonly close: () => Promise<void>
}

/** Appends every produced event to `path` as one JSON line. */
export const jsonLinesRecorder = (path: string): Recorder => {
  const out = fs.createWriteStream(path, { flags: "a" })
  return {
    wholeEvents: true,
    record: (event) => {
      out.write(JSON.stringify(receivedEventJson(event)) + "\n")
    },
    close: () => new Promise<void>((resolve) => out.end(() => resolve()))
  }
}

/** A bounded sample of the produced events, decoded whole only when read. */
export interface SampleRecorder extends Recorder {
  /** The sampled events, oldest first, every attribute decoded. */
  readonly events: () => ReadonlyArray<ReceivedEvent>
}

/**
 * Keeps every `every`-th produced event (the 1st, the `every + 1`-th, …), the last `keep` of them,
 * for checking full events in a long run without keeping them all. It holds the bytes as they
 * arrived and decodes them when read, so it does not make the server decode every event.
 */
export const sampleRecorder = (options: { readonly every: number; readonly keep?: number }): SampleRecorder => {
  const every = Math.max(1, Math.floor(options.every))
  const keep = Math.max(1, Math.floor(options.keep ?? 1_000))
  const sample = { seen: 0, events: [] as Array<ReceivedEvent> }
  return {
    wholeEvents: false,
    record: (event) => {
      if (sample.seen++ % every !== 0) return
      // A copy: the payload may be a view into the whole request's buffer, which would stay alive.
      sample.events.push({ ...event, payload: event.payload.slice() })
      if (sample.events.length > 2 * keep) sample.events = sample.events.slice(-keep)
    },
    clear: () => {
      sample.seen = 0
      sample.events = []
    },
    events: () => sample.events.slice(-keep).map((event) => decodeReceived(event.payload, event.receivedAt))
  }
}

const zeroCounters = () => ({ requests: 0, failedRequests: 0, abandonedRequests: 0, events: 0, rejectedEvents: 0, duplicates: 0, bytes: 0 })

export const makeRecorder = (options: {
  readonly mode: RecordMode
  readonly requestLogSize: number
  readonly recorders: ReadonlyArray<Recorder>
  /** The interval budget of record "seqnums". */
  readonly maxSeqnumRanges?: number
}): IngestRecorder => {
  const { mode, requestLogSize, recorders } = options
  // One small object holds everything that is replaced on clear().
  const kept = {
    counters: zeroCounters(),
    events: [] as Array<ReceivedEvent>,
    ids: new Set<string>(),
    ledger: new SeqnumLedger(options.maxSeqnumRanges),
    requests: [] as Array<RequestRecord>
  }
  const stats = (): IngestStats => ({
    ...kept.counters,
    uniqueIds: mode === "counts" ? null : kept.ids.size + kept.ledger.distinct + kept.ledger.overflowed,
    duplicates: mode === "counts" ? null : kept.counters.duplicates
  })

  const waiters = new Set<() => void>()
  const changed = () => {
    for (const check of [...waiters]) check()
  }

  /** Whether the event was produced before; remembers it. */
  const seenBefore = (event: ReceivedEvent): boolean => {
    if (mode === "seqnums") {
      const seq = event.seqnum === undefined ? undefined : seqnumValue(event.seqnum)
      if (seq !== undefined) return !kept.ledger.add(event.source, event.type, seq)
    }
    if (kept.ids.has(event.id)) return true
    kept.ids.add(event.id)
    return false
  }

  const record = (event: ReceivedEvent) => {
    const counters = kept.counters
    counters.events++
    counters.bytes += event.payload.byteLength
    if (mode !== "counts" && seenBefore(event)) counters.duplicates++
    if (mode === "events") kept.events.push(event)
    for (const recorder of recorders) recorder.record(event)
  }

  const received: IngestReceived = {
    get events() {
      return kept.events
    },
    get stats() {
      return stats()
    },
    get ids() {
      return kept.ids
    },
    sequences: {
      has: (source, type, seqnum) => {
        const seq = seqnumValue(String(seqnum))
        return seq !== undefined && kept.ledger.has(source, type, seq)
      },
      summary: (gapLimit) => kept.ledger.summary(gapLimit),
      footprint: () => ({ ranges: kept.ledger.rangeCount, overflowed: kept.ledger.overflowed })
    },
    get requests() {
      return kept.requests
    },
    waitFor: (predicate, timeoutMs = 5_000) =>
      new Promise((resolve, reject) => {
        const check = () => {
          const s = stats()
          if (!predicate(s)) return
          waiters.delete(check)
          clearTimeout(timer)
          resolve(s)
        }
        const timer = setTimeout(() => {
          waiters.delete(check)
          reject(new Error(`ingest server: condition not met within ${timeoutMs} ms; stats ${JSON.stringify(stats())}`))
        }, timeoutMs)
        waiters.add(check)
        check()
      }),
    waitForEvents: (count, timeoutMs) => received.waitFor((s) => s.events >= count, timeoutMs),
    clear: () => {
      Object.assign(kept, {
        counters: zeroCounters(),
        events: [],
        ids: new Set(),
        ledger: new SeqnumLedger(options.maxSeqnumRanges),
        requests: []
      })
      for (const recorder of recorders) recorder.clear?.()
    }
  }

  return {
    received,
    wholeEvents: mode === "events" || recorders.some((r) => r.wholeEvents),
    needsSeqnum: mode === "seqnums",
    request: (entry) => {
      kept.counters.requests++
      kept.requests.push(entry)
      if (kept.requests.length > requestLogSize) kept.requests = kept.requests.slice(-requestLogSize)
      changed()
    },
    failedRequest: () => {
      kept.counters.failedRequests++
      changed()
    },
    abandonedRequest: () => {
      kept.counters.abandonedRequests++
      changed()
    },
    produced: (accepted, rejected) => {
      kept.counters.rejectedEvents += rejected
      for (const event of accepted) record(event)
      changed()
    },
    changed,
    close: async () => {
      await Promise.all(recorders.map((r) => r.close?.()))
    }
  }
}
