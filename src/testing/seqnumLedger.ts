/**
 * Exact duplicate and gap detection in bounded memory, for the ingest server's `record: "seqnums"`.
 *
 * The emitter stamps every event with a durable `seqnum`, monotonic and gap-free per
 * (source, type) in commit order (the store assigns it in the insert's transaction). So instead
 * of every id (an 8-million-event soak kept 930 MB of them), the server keeps per key the set of
 * seqnums seen as sorted, disjoint, non-adjacent intervals: a run delivered in order is one
 * interval whatever its length; out-of-order arrival opens an interval that closes when the gap
 * fills. Memory is O(keys + open gaps), duplicates are counted exactly, and what is missing
 * (lost, or not delivered yet) is listed by seqnum.
 *
 * The number of intervals is capped (`maxRanges`): beyond it, seqnums that would open a new
 * interval are not tracked (counted as new, and `overflowed` says how many), so memory stays
 * bounded even for a client whose seqnums are all gaps.
 */

/** The seqnums seen for one (source, type). */
export class SeqnumRanges {
  // Interval i is [starts[i], ends[i]] (inclusive); starts[i + 1] > ends[i] + 1.
  private readonly starts: Array<number> = []
  private readonly ends: Array<number> = []
  /** How many distinct seqnums were added. */
  distinct = 0

  get ranges(): number {
    return this.starts.length
  }

  get lowest(): number | undefined {
    return this.starts[0]
  }

  get highest(): number | undefined {
    return this.ends[this.ends.length - 1]
  }

  /** Index of the last interval starting at or below `seq`, or -1. */
  private floor(seq: number): number {
    let lo = 0
    let hi = this.starts.length - 1
    let found = -1
    while (lo <= hi) {
      const mid = (lo + hi) >>> 1
      if (this.starts[mid]! <= seq) {
        found = mid
        lo = mid + 1
      } else hi = mid - 1
    }
    return found
  }

  has(seq: number): boolean {
    const i = this.floor(seq)
    return i >= 0 && seq <= this.ends[i]!
  }

  /**
   * Adds `seq`: "new", "duplicate", or "full" when it would need a new interval while
   * `mayOpen` is false (then nothing changed).
   */
  add(seq: number, mayOpen = true): "new" | "duplicate" | "full" {
    const n = this.starts.length
    const lastEnd = n === 0 ? undefined : this.ends[n - 1]!
    // The common case: the next seqnum of the newest run.
    if (lastEnd !== undefined && seq === lastEnd + 1) {
      this.ends[n - 1] = seq
      this.distinct++
      return "new"
    }
    const i = lastEnd !== undefined && seq > lastEnd ? n - 1 : this.floor(seq)
    if (i >= 0 && seq <= this.ends[i]!) return "duplicate"
    const joinsLeft = i >= 0 && this.ends[i] === seq - 1
    const joinsRight = i + 1 < n && this.starts[i + 1] === seq + 1
    if (joinsLeft && joinsRight) {
      this.ends[i] = this.ends[i + 1]!
      this.starts.splice(i + 1, 1)
      this.ends.splice(i + 1, 1)
    } else if (joinsLeft) this.ends[i] = seq
    else if (joinsRight) this.starts[i + 1] = seq
    else {
      if (!mayOpen) return "full"
      this.starts.splice(i + 1, 0, seq)
      this.ends.splice(i + 1, 0, seq)
    }
    this.distinct++
    return "new"
  }

  /** The seqnums missing between the lowest and the highest seen: how many, and the first `limit` gaps. */
  gaps(limit = 10): { readonly missing: number; readonly first: ReadonlyArray<readonly [from: number, to: number]> } {
    let missing = 0
    const first: Array<readonly [number, number]> = []
    for (let i = 1; i < this.starts.length; i++) {
      const from = this.ends[i - 1]! + 1
      const to = this.starts[i]! - 1
      missing += to - from + 1
      if (first.length < limit) first.push([from, to])
    }
    return { missing, first }
  }
}

/** What the ledger knows about one (source, type). */
export interface SequenceSummary {
  readonly source: string
  readonly type: string
  readonly distinct: number
  readonly lowest: number | undefined
  readonly highest: number | undefined
  /** Seqnums missing between lowest and highest (not delivered, or lost). */
  readonly missing: number
  /** The first gaps, as inclusive [from, to]. */
  readonly gaps: ReadonlyArray<readonly [from: number, to: number]>
}

/** A seqnum as a safe integer, or undefined (not a plain decimal, or beyond 2^53). */
export const seqnumValue = (text: string): number | undefined => {
  if (text.length === 0 || text.length > 15) return undefined
  let n = 0
  for (let i = 0; i < text.length; i++) {
    const digit = text.charCodeAt(i) - 48
    if (digit < 0 || digit > 9) return undefined
    n = n * 10 + digit
  }
  return n
}

export class SeqnumLedger {
  private readonly keys = new Map<string, Map<string, SeqnumRanges>>()
  private ranges = 0
  /** Distinct (source, type, seqnum) added. */
  distinct = 0
  /** Seqnums not tracked because the interval budget was spent (each counted as new). */
  overflowed = 0

  readonly maxRanges: number

  constructor(maxRanges = 1_000_000) {
    this.maxRanges = maxRanges
  }

  /** Adds one event's seqnum; true when it was new (or could not be checked: see `overflowed`). */
  add(source: string, type: string, seq: number): boolean {
    let types = this.keys.get(source)
    if (types === undefined) this.keys.set(source, types = new Map())
    let set = types.get(type)
    if (set === undefined) types.set(type, set = new SeqnumRanges())
    const before = set.ranges
    const outcome = set.add(seq, this.ranges < this.maxRanges)
    this.ranges += set.ranges - before
    if (outcome === "duplicate") return false
    if (outcome === "full") this.overflowed++
    else this.distinct++
    return true
  }

  has(source: string, type: string, seq: number): boolean {
    return this.keys.get(source)?.get(type)?.has(seq) ?? false
  }

  /** Intervals held across all keys (the memory this ledger uses is proportional to it). */
  get rangeCount(): number {
    return this.ranges
  }

  summary(gapLimit = 10): ReadonlyArray<SequenceSummary> {
    const out: Array<SequenceSummary> = []
    for (const [source, types] of this.keys) {
      for (const [type, set] of types) {
        const gaps = set.gaps(gapLimit)
        out.push({ source, type, distinct: set.distinct, lowest: set.lowest, highest: set.highest, missing: gaps.missing, gaps: gaps.first })
      }
    }
    return out
  }
}
