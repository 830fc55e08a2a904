/**
 * Fault injection for the reference ingest server: a plain mutable state, changed at run time
 * through `IngestFaults` (in process) or as JSON (`FaultConfig`, through the control endpoint of
 * a server running in another process).
 */
import { Code } from "@connectrpc/connect"
import type { ReceivedEvent } from "./IngestServer.ts"

/** A gRPC status: connect's `Code`, or its name in any case (`"unavailable"`, `"RESOURCE_EXHAUSTED"`). */
export type StatusInput = Code | string

export type PublishErrorCodeName =
  | "UNKNOWN"
  | "VALIDATION_FAILED"
  | "SCHEMA_MISSING"
  | "ENCODE_ERROR"
  | "DOMAIN_MISCONFIGURATION"

/** A whole-request failure, optionally with push-back in any of the three forms servers use. */
export interface FailureSpec {
  readonly status: StatusInput
  readonly message?: string
  /** Sent as the `grpc-retry-pushback-ms` trailer. */
  readonly pushbackMs?: number
  /** Sent as a `google.rpc.RetryInfo` status detail. */
  readonly retryInfoMs?: number
  /** Sent as the HTTP `Retry-After` response header: seconds, or an HTTP-date string. */
  readonly retryAfter?: number | string
}

/** Rejects matching events (all given fields must match) with a per-event error. */
export interface RejectRule {
  readonly type?: string
  readonly source?: string
  readonly id?: string
  readonly code: PublishErrorCodeName
  readonly reason?: string
}

export type RejectPredicate = (event: ReceivedEvent) => { readonly code: PublishErrorCodeName; readonly reason: string } | undefined

export interface ResetSpec {
  /** How many requests to reset (each one consumes one); `Infinity` = every request until cleared. */
  readonly count: number
  /** "before": the events are not recorded; "after": recorded, but the answer is lost (duplicates on retry). */
  readonly when: "before" | "after"
  /** "socket": destroy the connection; "stream": RST_STREAM with INTERNAL_ERROR. */
  readonly how: "socket" | "stream"
}

/** How the server shapes a successful answer. */
export type ResultsMode = "full" | "empty" | { readonly count: number }

/** The serializable fault configuration (every field optional; `null` clears a field). */
export interface FaultConfig {
  readonly latencyMs?: number | null
  readonly failNext?: { readonly count: number; readonly failure: FailureSpec } | null
  readonly failFraction?: { readonly fraction: number; readonly failure: FailureSpec } | null
  readonly rejectRules?: ReadonlyArray<RejectRule> | null
  readonly hang?: boolean | null
  readonly reset?: Partial<ResetSpec> | null
  /** "unavailable": answer UNAVAILABLE; "refuse": close the listener (connections are refused). */
  readonly down?: "unavailable" | "refuse" | null
  readonly maxRequestBytes?: { readonly limit: number; readonly status?: StatusInput } | number | null
  readonly results?: ResultsMode | null
  /** Requests without exactly this `authorization` header fail with UNAUTHENTICATED. */
  readonly requireAuthorization?: string | null
}

/** The current state, as the server reads it on every request. */
export interface FaultState {
  latencyMs: number
  failNext: { count: number; failure: FailureSpec } | undefined
  failFraction: { fraction: number; failure: FailureSpec } | undefined
  rejectRules: Array<RejectRule>
  rejectPredicates: Array<RejectPredicate>
  hang: boolean
  reset: ResetSpec | undefined
  down: "unavailable" | "refuse" | undefined
  maxRequestBytes: { limit: number; status: StatusInput } | undefined
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

const codeByName: Record<string, Code> = {
  canceled: Code.Canceled,
  cancelled: Code.Canceled,
  unknown: Code.Unknown,
  invalid_argument: Code.InvalidArgument,
  deadline_exceeded: Code.DeadlineExceeded,
  not_found: Code.NotFound,
  already_exists: Code.AlreadyExists,
  permission_denied: Code.PermissionDenied,
  resource_exhausted: Code.ResourceExhausted,
  failed_precondition: Code.FailedPrecondition,
  aborted: Code.Aborted,
  out_of_range: Code.OutOfRange,
  unimplemented: Code.Unimplemented,
  internal: Code.Internal,
  unavailable: Code.Unavailable,
  data_loss: Code.DataLoss,
  unauthenticated: Code.Unauthenticated
}

/** `Code` for a status given as a number or a name; throws on names it does not know. */
export const toCode = (status: StatusInput): Code => {
  if (typeof status === "number") return status
  const code = codeByName[status.toLowerCase()]
  if (code === undefined) throw new Error(`unknown gRPC status: ${status}`)
  return code
}

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
  readonly down: (mode?: "unavailable" | "refuse") => Promise<void>
  readonly up: () => Promise<void>
  /** Rejects requests whose message exceeds `limit` bytes (default status RESOURCE_EXHAUSTED). */
  readonly maxRequestBytes: (limit: number | undefined, status?: StatusInput) => void
  readonly results: (mode: ResultsMode) => void
  readonly requireAuthorization: (value: string | undefined) => void
}

/** What the faults need from the server: the listener ("refuse" mode), and waking held requests. */
export interface ServerHooks {
  readonly stop: () => Promise<void>
  readonly start: () => Promise<void>
  /** Called after `hang` may have been cleared: held requests re-check the state. */
  readonly wake: () => void
}

export const makeFaults = (state: FaultState, hooks: ServerHooks): IngestFaults => {
  const setDown = async (mode: "unavailable" | "refuse" | undefined) => {
    const was = state.down
    state.down = mode
    if (was !== "refuse" && mode === "refuse") await hooks.stop()
    if (was === "refuse" && mode !== "refuse") await hooks.start()
  }
  const faults: IngestFaults = {
    state,
    apply: async (config) => {
      if (config.latencyMs !== undefined) state.latencyMs = config.latencyMs ?? 0
      if (config.failNext !== undefined) state.failNext = config.failNext === null ? undefined : { ...config.failNext }
      if (config.failFraction !== undefined) {
        state.failFraction = config.failFraction === null ? undefined : { ...config.failFraction }
      }
      if (config.rejectRules !== undefined) state.rejectRules = [...(config.rejectRules ?? [])]
      if (config.hang !== undefined) {
        state.hang = config.hang === true
        hooks.wake()
      }
      if (config.reset !== undefined) {
        state.reset = config.reset === null
          ? undefined
          : { count: config.reset.count ?? 1, when: config.reset.when ?? "before", how: config.reset.how ?? "socket" }
      }
      if (config.maxRequestBytes !== undefined) {
        const m = config.maxRequestBytes
        state.maxRequestBytes = m === null
          ? undefined
          : typeof m === "number"
          ? { limit: m, status: Code.ResourceExhausted }
          : { limit: m.limit, status: m.status ?? Code.ResourceExhausted }
      }
      if (config.results !== undefined) state.results = config.results ?? "full"
      if (config.requireAuthorization !== undefined) state.requireAuthorization = config.requireAuthorization ?? undefined
      if (config.down !== undefined) await setDown(config.down ?? undefined)
    },
    clear: async () => {
      const fresh = healthy()
      const down = state.down
      Object.assign(state, fresh, { down })
      hooks.wake()
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
    hang: (on = true) => {
      state.hang = on
      hooks.wake()
    },
    resetConnections: (count = 1, options = {}) => {
      state.reset = count > 0 ? { count, when: options.when ?? "before", how: options.how ?? "socket" } : undefined
    },
    down: (mode = "refuse") => setDown(mode),
    up: () => setDown(undefined),
    maxRequestBytes: (limit, status = Code.ResourceExhausted) => {
      state.maxRequestBytes = limit === undefined ? undefined : { limit, status }
    },
    results: (mode) => {
      state.results = mode
    },
    requireAuthorization: (value) => {
      state.requireAuthorization = value
    }
  }
  return faults
}
