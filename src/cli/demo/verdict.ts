/**
 * The demo's verdict, as a pure function: every receipt is delivered or dead-lettered, or it is
 * lost. With the demo's own ingest server, delivery is what the server received; with the
 * user's (`--ingest-url`), only the emitter's table can tell, so what is still in it is lost.
 */

export interface VerdictInput {
  /** Event ids of every receipt (committed events). */
  readonly receipts: ReadonlyArray<string>
  /** Ids the demo's ingest server received; undefined with the user's server. */
  readonly received: ReadonlySet<string> | undefined
  /** Ids in the dead-letter table (of this run). */
  readonly deadLettered: ReadonlySet<string>
  /** Rows still in the events table at the end. */
  readonly remaining: number
}

export interface Verdict {
  readonly delivered: number
  readonly deadLettered: number
  /** Committed events neither delivered nor dead-lettered. */
  readonly lost: number
}

export const verdict = ({ deadLettered, received, receipts, remaining }: VerdictInput): Verdict => {
  let delivered = 0
  let dead = 0
  let lost = 0
  for (const id of receipts) {
    const wasDeadLettered = deadLettered.has(id)
    if (wasDeadLettered) dead++
    if (received === undefined) continue
    const wasDelivered = received.has(id)
    if (wasDelivered) delivered++
    if (!wasDelivered && !wasDeadLettered) lost++
  }
  if (received === undefined) return { delivered: Math.max(0, receipts.length - dead - remaining), deadLettered: dead, lost: remaining }
  return { delivered, deadLettered: dead, lost }
}

/** The largest backlog seen so far, and whether every sighting that made it was an exact count. */
export interface PeakBacklog {
  readonly rows: number
  readonly exact: boolean
}

export const noBacklog: PeakBacklog = { rows: 0, exact: true }

/**
 * The peak after one reading of the table's stats. An estimate (the planner's, on a table too
 * large to count) can run far past the truth on a table that is never vacuumed or analyzed (seen:
 * 586 027 for 200 000 events), so it is capped by what the table can hold: the events committed
 * so far plus those still committing (at most one per producer). The peak stays marked an
 * estimate once an estimate set it.
 */
export const nextPeakBacklog = (
  peak: PeakBacklog,
  seen: { readonly backlog: number; readonly exact: boolean },
  bound: { readonly committed: number; readonly producers: number }
): PeakBacklog => {
  const rows = seen.exact ? seen.backlog : Math.min(seen.backlog, bound.committed + bound.producers)
  return rows > peak.rows ? { rows, exact: seen.exact } : peak
}
