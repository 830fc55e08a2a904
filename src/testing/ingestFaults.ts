/**
 * Fault injection for the reference ingest server, in one place: the live state, the setters
 * that change it (`IngestFaults`, in process, or `apply` with the JSON form of
 * ./ingestFaultConfig.ts through the control endpoint), and the consumers the request handler
 * calls (which failure, reset or rejection this request or event gets; holding hung requests).
 * Every change applies to the next request.
 */
import { Code } from "@connectrpc/connect"
import {
  defaultLimitStatus,
  type DownMode,
  type FailureSpec,
  type FaultConfig,
  type MaxRequestBytes,
  type RejectRule,
  type ResetSpec,
  type ResultsMode,
  type StatusInput
} from "./ingestFaultConfig.ts"
import { type ReceivedEvent, type Rejection, validateEvent } from "./ingestModel.ts"

export * from "./ingestFaultConfig.ts"
export type { PublishErrorCodeName } from "./ingestModel.ts"

export type RejectPredicate = (event: ReceivedEvent) => Rejection | undefined

/** The current state, as the server reads it on every request. */
export interface FaultState {
  latencyMs: number
  failNext: { readonly count: number; readonly failure: FailureSpec } | undefined
  failFraction: { readonly fraction: number; readonly failure: FailureSpec } | undefined
  rejectRules: Array<RejectRule>
  rejectPredicates: Array<RejectPredicate>
  hang: boolean
  reset: ResetSpec | undefined
  down: DownMode | undefined
  maxRequestBytes: MaxRequestBytes | undefined
  results: ResultsMode
  requireAuthorization: string | undefined
}

export const healthy = (): FaultState => ({
  latencyMs: 0,
  failNext: undefined,
  failFraction: undefined,
  rejectRules: [],
  rejectPredicates: [],
  hang: false,
  reset: undefined,
  down: undefined,
  maxRequestBytes: undefined,
  results: "full",
  requireAuthorization: undefined
})

/** The in-process control object. Every change applies to the next request. */
export interface IngestFaults {
  /** The current state (live; do not mutate). */
  readonly state: Readonly<FaultState>
  /** Applies a serializable configuration on top of the current state. */
  readonly apply: (config: FaultConfig) => Promise<void>
  /** Back to a healthy server: no faults, listening, no rejection rules. */
  readonly clear: () => Promise<void>
  readonly latency: (ms: number) => void
  /** Fails the next `count` requests (PublishBatch and Publish; Ping is never failed). */
  readonly failNext: (count: number, failure: FailureSpec) => void
  /** Fails each request with probability `fraction` (0 disables). */
  readonly failFraction: (fraction: number, failure?: FailureSpec) => void
  /** Adds a per-event rejection rule or predicate. */
  readonly reject: (rule: RejectRule | RejectPredicate) => void
  readonly clearRejections: () => void
  /** Holds every request unanswered until `hang(false)` or the client gives up. */
  readonly hang: (on?: boolean) => void
  /** Resets the next `count` requests (default 1). */
  readonly resetConnections: (count?: number, options?: Partial<Omit<ResetSpec, "count">>) => void
  /** "refuse" closes the listener and drops open connections; "unavailable" answers UNAVAILABLE. */
  readonly down: (mode?: DownMode) => Promise<void>
  readonly up: () => Promise<void>
  /** Rejects requests whose message exceeds `limit` bytes (default status RESOURCE_EXHAUSTED). */
  readonly maxRequestBytes: (limit: number | undefined, status?: StatusInput) => void
  readonly results: (mode: ResultsMode) => void
  readonly requireAuthorization: (value: string | undefined) => void
}

/** What the handler asks of the faults, request by request. */
export interface FaultConsumers {
  readonly state: Readonly<FaultState>
  /** Ping and requests alike: down ("unavailable") or unauthenticated. */
  readonly refusal: (authorization: string | null) => { readonly code: Code; readonly message: string } | undefined
  /** The failure this request gets, if any; counts down `failNext`. */
  readonly takeFailure: () => FailureSpec | undefined
  /** The reset this request gets at this point, if any; counts it down. */
  readonly takeReset: (when: ResetSpec["when"]) => ResetSpec | undefined
  /** Why this event is not produced, if it is not: validation, then rules, then predicates. */
  readonly rejectionOf: (event: ReceivedEvent) => Rejection | undefined
  /**
   * Waits while the server hangs; answers false when the client gave up (or `stopped()` became
   * true) first, true once the hang was lifted.
   */
  readonly holdWhileHanging: (signal: AbortSignal, stopped: () => boolean) => Promise<boolean>
  /** Releases every held request to re-check the state (on close). */
  readonly releaseHeld: () => void
}

/** The listener, which "refuse" closes and reopens. */
export interface Listener {
  readonly stop: () => Promise<void>
  readonly start: () => Promise<void>
}

const normalizeReset = (reset: NonNullable<FaultConfig["reset"]>): ResetSpec => ({
  count: reset.count ?? 1,
  when: reset.when ?? "before",
  how: reset.how ?? "socket"
})

const normalizeLimit = (limit: NonNullable<FaultConfig["maxRequestBytes"]>): MaxRequestBytes =>
  typeof limit === "number" ? { limit, status: defaultLimitStatus } : { limit: limit.limit, status: limit.status ?? defaultLimitStatus }

const matches = (rule: RejectRule, event: ReceivedEvent) =>
  (rule.type === undefined || rule.type === event.type) &&
  (rule.source === undefined || rule.source === event.source) &&
  (rule.id === undefined || rule.id === event.id)

export const makeFaults = (
  listener: Listener,
  random: () => number = Math.random
): { readonly control: IngestFaults; readonly consumers: FaultConsumers } => {
  const state = healthy()

  // ---- held requests (hang): each waits on a release, called when the state may have changed
  const held = new Set<() => void>()
  const releaseHeld = () => {
    for (const release of [...held]) release()
  }
  const holdWhileHanging = async (signal: AbortSignal, stopped: () => boolean) => {
    while (state.hang && !signal.aborted && !stopped()) {
      await new Promise<void>((resolve) => {
        const release = () => {
          held.delete(release)
          signal.removeEventListener("abort", release)
          resolve()
        }
        held.add(release)
        signal.addEventListener("abort", release)
      })
    }
    return !(signal.aborted || stopped())
  }
  const setHang = (on: boolean) => {
    state.hang = on
    releaseHeld()
  }

  const setDown = async (mode: DownMode | undefined) => {
    const was = state.down
    state.down = mode
    if (was !== "refuse" && mode === "refuse") await listener.stop()
    if (was === "refuse" && mode !== "refuse") await listener.start()
  }

  // ---- setters
  const control: IngestFaults = {
    state,
    apply: async (config) => {
      if (config.latencyMs !== undefined) state.latencyMs = config.latencyMs ?? 0
      if (config.failNext !== undefined) state.failNext = config.failNext ?? undefined
      if (config.failFraction !== undefined) state.failFraction = config.failFraction ?? undefined
      if (config.rejectRules !== undefined) state.rejectRules = [...(config.rejectRules ?? [])]
      if (config.hang !== undefined) setHang(config.hang === true)
      if (config.reset !== undefined) state.reset = config.reset === null ? undefined : normalizeReset(config.reset)
      if (config.maxRequestBytes !== undefined) {
        state.maxRequestBytes = config.maxRequestBytes === null ? undefined : normalizeLimit(config.maxRequestBytes)
      }
      if (config.results !== undefined) state.results = config.results ?? "full"
      if (config.requireAuthorization !== undefined) state.requireAuthorization = config.requireAuthorization ?? undefined
      if (config.down !== undefined) await setDown(config.down ?? undefined)
    },
    clear: async () => {
      Object.assign(state, healthy(), { down: state.down })
      releaseHeld()
      await setDown(undefined)
    },
    latency: (ms) => {
      state.latencyMs = ms
    },
    failNext: (count, failure) => {
      state.failNext = count > 0 ? { count, failure } : undefined
    },
    failFraction: (fraction, failure = { status: Code.Unavailable }) => {
      state.failFraction = fraction > 0 ? { fraction, failure } : undefined
    },
    reject: (rule) => {
      if (typeof rule === "function") state.rejectPredicates.push(rule)
      else state.rejectRules.push(rule)
    },
    clearRejections: () => {
      state.rejectRules = []
      state.rejectPredicates = []
    },
    hang: (on = true) => setHang(on),
    resetConnections: (count = 1, options = {}) => {
      state.reset = count > 0 ? normalizeReset({ ...options, count }) : undefined
    },
    down: (mode = "refuse") => setDown(mode),
    up: () => setDown(undefined),
    maxRequestBytes: (limit, status = defaultLimitStatus) => {
      state.maxRequestBytes = limit === undefined ? undefined : { limit, status }
    },
    results: (mode) => {
      state.results = mode
    },
    requireAuthorization: (value) => {
      state.requireAuthorization = value
    }
  }

  // ---- consumers
  const consumers: FaultConsumers = {
    state,
    refusal: (authorization) => {
      if (state.down === "unavailable") return { code: Code.Unavailable, message: "ingest is down" }
      const required = state.requireAuthorization
      if (required !== undefined && authorization !== required) {
        return { code: Code.Unauthenticated, message: "missing or invalid credentials" }
      }
      return undefined
    },
    takeFailure: () => {
      const next = state.failNext
      if (next !== undefined && next.count > 0) {
        state.failNext = next.count > 1 ? { ...next, count: next.count - 1 } : undefined
        return next.failure
      }
      const fraction = state.failFraction
      if (fraction !== undefined && random() < fraction.fraction) return fraction.failure
      return undefined
    },
    takeReset: (when) => {
      const reset = state.reset
      if (reset === undefined || reset.when !== when || reset.count <= 0) return undefined
      if (reset.count !== Infinity) state.reset = reset.count > 1 ? { ...reset, count: reset.count - 1 } : undefined
      return reset
    },
    rejectionOf: (event) => {
      const invalid = validateEvent(event)
      if (invalid !== undefined) return invalid
      for (const rule of state.rejectRules) {
        if (matches(rule, event)) return { code: rule.code, reason: rule.reason ?? `rejected by rule (${rule.code})` }
      }
      for (const predicate of state.rejectPredicates) {
        const rejection = predicate(event)
        if (rejection !== undefined) return rejection
      }
      return undefined
    },
    holdWhileHanging,
    releaseHeld
  }
  return { control, consumers }
}
