/**
 * What becomes of a request's items: pure functions over data, so the whole delivery policy can be
 * read (and tested as a table) without a clock, a transport or a store. The sender does what they
 * say; how long a Retry waits is the retry Schedule's call (retrySchedule.ts).
 */
import type { EventResult, TransportError } from "../Transport.ts"

/** Per-event codes that cannot succeed on retry (ingest-wire.md); others (UNKNOWN) are retried. */
export const permanentCodes: ReadonlySet<string> = new Set([
  "VALIDATION_FAILED", "SCHEMA_MISSING", "ENCODE_ERROR", "DOMAIN_MISCONFIGURATION"
])

/** How one request ended. */
export type RequestResult =
  | { readonly _tag: "Answered"; readonly results: ReadonlyArray<EventResult> }
  | { readonly _tag: "Failed"; readonly error: TransportError }
  /** A defect in the transport: treated as retryable, the rows are safe in the table. */
  | { readonly _tag: "Defect" }

export interface Rejected<A> {
  readonly item: A
  readonly code: string
  readonly reason: string
}

export type Decision<A> =
  /** Nothing left to send: the delivered are acknowledged, the rejected dead-lettered. */
  | { readonly _tag: "Done"; readonly delivered: ReadonlyArray<A>; readonly rejected: ReadonlyArray<Rejected<A>> }
  /** As Done for `delivered` and `rejected`; `items` are sent again after a delay no shorter than `retryAfterMs`. */
  | {
    readonly _tag: "Retry"
    readonly delivered: ReadonlyArray<A>
    readonly rejected: ReadonlyArray<Rejected<A>>
    readonly items: ReadonlyArray<A>
    readonly retryAfterMs: number | undefined
  }
  /** The server refuses the request for one of its events: send each half on its own to isolate it. */
  | { readonly _tag: "Bisect"; readonly halves: readonly [ReadonlyArray<A>, ReadonlyArray<A>] }
  /** The server refuses this one event for good. */
  | { readonly _tag: "DeadLetter"; readonly items: ReadonlyArray<A>; readonly code: string; readonly reason: string }
  /** Retrying cannot help now: the rows are left to the retransmitter. */
  | { readonly _tag: "GiveUp"; readonly items: ReadonlyArray<A>; readonly why: string }

const none: ReadonlyArray<never> = []

/** Decides what becomes of `items` after the request that sent them ended with `result`. */
export const decide = <A>(items: ReadonlyArray<A>, result: RequestResult): Decision<A> => {
  switch (result._tag) {
    case "Answered":
      return sortResults(items, result.results)
    case "Defect":
      return { _tag: "Retry", delivered: none, rejected: none, items, retryAfterMs: undefined }
    case "Failed": {
      const e = result.error
      if (e.kind === "config") return { _tag: "GiveUp", items, why: e.message }
      if (e.kind === "permanent") {
        if (items.length === 1) return { _tag: "DeadLetter", items, code: e.code, reason: e.reason }
        const half = Math.ceil(items.length / 2)
        return { _tag: "Bisect", halves: [items.slice(0, half), items.slice(half)] }
      }
      if (e.doNotRetry === true) return { _tag: "GiveUp", items, why: "the server asked not to retry" }
      return { _tag: "Retry", delivered: none, rejected: none, items, retryAfterMs: e.retryAfterMs }
    }
  }
}

/** Sorts one response into delivered, permanently rejected, and retryable events. */
const sortResults = <A>(items: ReadonlyArray<A>, results: ReadonlyArray<EventResult>): Decision<A> => {
  const delivered: Array<A> = []
  const rejected: Array<Rejected<A>> = []
  const retry: Array<A> = []
  for (let i = 0; i < items.length; i++) {
    const result = results[i]!
    if (result._tag === "Delivered") delivered.push(items[i]!)
    else if (permanentCodes.has(result.code)) rejected.push({ item: items[i]!, code: result.code, reason: result.reason })
    else retry.push(items[i]!)
  }
  return retry.length === 0
    ? { _tag: "Done", delivered, rejected }
    : { _tag: "Retry", delivered, rejected, items: retry, retryAfterMs: undefined }
}

/**
 * Before each attempt: the items whose lease ends before `deadline` (now plus the longest a request
 * may take) have lapsed. Once a lease ends another claimer may take the row, and two processes
 * would send it at once, so no request may start for them.
 */
export const byLease = <A extends { readonly event: { readonly leaseUntil: number } }>(
  items: ReadonlyArray<A>,
  deadline: number
): { readonly live: ReadonlyArray<A>; readonly lapsed: ReadonlyArray<A> } => {
  let lapsedAny = false
  for (const item of items) {
    if (item.event.leaseUntil < deadline) {
      lapsedAny = true
      break
    }
  }
  if (!lapsedAny) return { live: items, lapsed: none }
  const live: Array<A> = []
  const lapsed: Array<A> = []
  for (const item of items) (item.event.leaseUntil < deadline ? lapsed : live).push(item)
  return { live, lapsed }
}

/** Groups rejections by code: one dead-letter outcome (metric, log) per code. */
export const byCode = <A>(rejected: ReadonlyArray<Rejected<A>>): Map<string, Array<Rejected<A>>> => {
  const groups = new Map<string, Array<Rejected<A>>>()
  for (const r of rejected) {
    const group = groups.get(r.code)
    if (group === undefined) groups.set(r.code, [r])
    else group.push(r)
  }
  return groups
}
