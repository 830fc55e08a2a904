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
