/**
 * An in-memory Transport for unit tests. Each `publishBatch` call takes the next step of a script
 * (deliver, reject some events, fail, delay, hang, or a custom answer); when the script is empty
 * the default step answers (deliver everything, unless changed). Delays use Effect.sleep, so
 * TestClock drives them. Everything sent is kept for inspection, with Clock timestamps.
 *
 * ```ts
 * const program = Effect.gen(function*() {
 *   const script = yield* ScriptedTransport
 *   yield* script.push(Script.unavailable(500), Script.reject([2], "VALIDATION_FAILED"))
 *   // … run the Publisher …
 *   const calls = yield* script.calls
 * }).pipe(Effect.provide(ScriptedTransport.layer()))
 * ```
 */
import { fromBinary } from "@bufbuild/protobuf"
import { Clock, Context, Deferred, Duration, Effect, Exit, Layer } from "effect"
import { type CloudEvent, CloudEventSchema } from "../gen/io/cloudevents/v1/cloudevent_pb.js"
import { delivered, type EventResult, Transport, TransportError } from "../Transport.ts"

/** A sent event, decoded on demand. Bytes that are not a CloudEvent decode to empty fields. */
export interface SentEvent {
  readonly payload: Uint8Array
  readonly cloudEvent: CloudEvent | undefined
  readonly id: string
  readonly source: string
  readonly type: string
  /** The `seqnum` attribute, if any. */
  readonly seqnum: string | undefined
}

export type CallOutcome =
  | { readonly _tag: "Pending" }
  | { readonly _tag: "Answered"; readonly results: ReadonlyArray<EventResult> }
  | { readonly _tag: "Failed"; readonly error: TransportError }
  | { readonly _tag: "Interrupted" }

/** One `publishBatch` call. */
export interface SentBatch {
  /** 0-based call number. */
  readonly index: number
  /** Clock time at which the call started (TestClock time in tests). */
  readonly at: number
  readonly payloads: ReadonlyArray<Uint8Array>
  /** The payloads decoded as CloudEvents (computed on first access). */
  readonly events: ReadonlyArray<SentEvent>
  /** Clock time at which the call settled, if it did. */
  readonly settledAt: number | undefined
  readonly outcome: CallOutcome
}

/** How one call is answered. */
export type ScriptStep =
  | { readonly _tag: "Deliver" }
  | { readonly _tag: "Reject"; readonly rejections: ReadonlyMap<number, { readonly code: string; readonly reason: string }> }
  | { readonly _tag: "Fail"; readonly error: TransportError }
  | { readonly _tag: "Delay"; readonly duration: Duration.Input; readonly then: ScriptStep }
  | { readonly _tag: "Hang" }
  | {
    readonly _tag: "Respond"
    readonly respond: (batch: SentBatch) => Effect.Effect<ReadonlyArray<EventResult>, TransportError>
  }

/** Step constructors. */
export const Script = {
  deliver: { _tag: "Deliver" } as ScriptStep,
  /**
   * Rejects events by position (permanent, per event); the others are delivered. Either a list of
   * indices sharing one code, or per index a code or `{ code, reason }`:
   * `Script.reject([1, 3])`, `Script.reject({ 0: "SCHEMA_MISSING", 2: { code: "ENCODE_ERROR", reason: "bad" } })`.
   */
  reject: (
    which: ReadonlyArray<number> | Readonly<Record<number, string | { readonly code: string; readonly reason: string }>>,
    code = "VALIDATION_FAILED",
    reason = "rejected by script"
  ): ScriptStep => ({
    _tag: "Reject",
    rejections: new Map(
      Array.isArray(which)
        ? which.map((i) => [i, { code, reason }] as const)
        : Object.entries(which).map(([i, r]) => [Number(i), typeof r === "string" ? { code: r, reason } : r] as const)
    )
  }),
  fail: (error: TransportError): ScriptStep => ({ _tag: "Fail", error }),
  /** UNAVAILABLE, retryable, with an optional server push-back. */
  unavailable: (retryAfterMs?: number): ScriptStep => ({
    _tag: "Fail",
    error: new TransportError(
      retryAfterMs === undefined
        ? { kind: "retryable", code: "unavailable", reason: "scripted" }
        : { kind: "retryable", code: "unavailable", reason: "scripted", retryAfterMs }
    )
  }),
  /** A whole-request permanent failure (INVALID_ARGUMENT by default). */
  permanent: (code = "invalid_argument"): ScriptStep => ({
    _tag: "Fail",
    error: new TransportError({ kind: "permanent", code, reason: "scripted" })
  }),
  /** A configuration fault (UNAUTHENTICATED by default). */
  config: (code = "unauthenticated"): ScriptStep => ({
    _tag: "Fail",
    error: new TransportError({ kind: "config", code, reason: "scripted" })
  }),
  /** A request timeout, as GrpcTransport reports it. */
  timeout: { _tag: "Fail", error: new TransportError({ kind: "retryable", code: "timeout", reason: "scripted" }) } as ScriptStep,
  /** Waits `duration` on the Clock, then answers with `then` (default: deliver). */
  delay: (duration: Duration.Input, then: ScriptStep = { _tag: "Deliver" }): ScriptStep => ({ _tag: "Delay", duration, then }),
  /** Never answers (the caller's timeout or interruption ends the call). */
  hang: { _tag: "Hang" } as ScriptStep,
  respond: (respond: (batch: SentBatch) => Effect.Effect<ReadonlyArray<EventResult>, TransportError>): ScriptStep => ({
    _tag: "Respond",
    respond
  })
} as const

/** A standing per-event rejection, applied to every delivered answer. */
export type RejectRule = (event: SentEvent, index: number) => { readonly code: string; readonly reason: string } | undefined

export interface ScriptedTransportControl {
  /** Appends steps; each call takes the next one. */
  readonly push: (...steps: ReadonlyArray<ScriptStep>) => Effect.Effect<void>
  /** The answer once the script is used up (initially `Script.deliver`). */
  readonly setDefault: (step: ScriptStep) => Effect.Effect<void>
  /** Adds a standing rule: matching events are rejected whenever a call would deliver them. */
  readonly rejectWhere: (rule: RejectRule) => Effect.Effect<void>
  /** Ping's answer from now on. */
  readonly setPing: (answer: Effect.Effect<string, TransportError>) => Effect.Effect<void>
  /** Steps not yet consumed. */
  readonly remaining: Effect.Effect<number>
  readonly calls: Effect.Effect<ReadonlyArray<SentBatch>>
  readonly callCount: Effect.Effect<number>
  /** Every event of every call, in call order (retries appear again). */
  readonly sentEvents: Effect.Effect<ReadonlyArray<SentEvent>>
  /** Events answered `Delivered`, in call order. */
  readonly deliveredEvents: Effect.Effect<ReadonlyArray<SentEvent>>
  /** Calls in progress now, and the most there ever were at once. */
  readonly inFlight: Effect.Effect<number>
  readonly maxInFlight: Effect.Effect<number>
  /** Waits until at least `count` calls have started. */
  readonly awaitCalls: (count: number) => Effect.Effect<void>
  /** Forgets calls and steps; the default and rules go back to their initial state. */
  readonly reset: Effect.Effect<void>
}

const decode = (payload: Uint8Array): SentEvent => {
  let cloudEvent: CloudEvent | undefined
  try {
    cloudEvent = fromBinary(CloudEventSchema, payload)
  } catch {
    cloudEvent = undefined
  }
  const seq = cloudEvent?.attributes["seqnum"]?.attr
  return {
    payload,
    cloudEvent,
    id: cloudEvent?.id ?? "",
    source: cloudEvent?.source ?? "",
    type: cloudEvent?.type ?? "",
    seqnum: seq === undefined || seq.case === undefined ? undefined : String(seq.value)
  }
}

const outcomeOf = (exit: Exit.Exit<ReadonlyArray<EventResult>, TransportError>): CallOutcome => {
  if (Exit.isSuccess(exit)) return { _tag: "Answered", results: exit.value }
  const error = Exit.findErrorOption(exit)
  return error._tag === "Some" ? { _tag: "Failed", error: error.value } : { _tag: "Interrupted" }
}

const deliveredOf = (call: SentBatch): ReadonlyArray<SentEvent> => {
  const outcome = call.outcome
  if (outcome._tag !== "Answered") return []
  return call.events.filter((_, i) => outcome.results[i]?._tag === "Delivered")
}

class Call implements SentBatch {
  readonly index: number
  readonly at: number
  readonly payloads: ReadonlyArray<Uint8Array>
  settledAt: number | undefined = undefined
  outcome: CallOutcome = { _tag: "Pending" }
  #events: ReadonlyArray<SentEvent> | undefined
  constructor(index: number, at: number, payloads: ReadonlyArray<Uint8Array>) {
    this.index = index
    this.at = at
    this.payloads = payloads
  }
  get events(): ReadonlyArray<SentEvent> {
    return (this.#events ??= this.payloads.map(decode))
  }
}

/** Builds the transport and its control, sharing one state. */
export const make = (script: ReadonlyArray<ScriptStep> = []) =>
  Effect.sync(() => {
    let steps: Array<ScriptStep> = [...script]
    let defaultStep: ScriptStep = Script.deliver
    let rules: Array<RejectRule> = []
    let pingAnswer: Effect.Effect<string, TransportError> = Effect.succeed("pong")
    let calls: Array<Call> = []
    let inFlight = 0
    let maxInFlight = 0
    let waiters: Array<{ readonly count: number; readonly deferred: Deferred.Deferred<void> }> = []

    const applyRules = (call: Call, results: Array<EventResult>): ReadonlyArray<EventResult> => {
      if (rules.length === 0) return results
      return results.map((result, i) => {
        if (result._tag !== "Delivered") return result
        for (const rule of rules) {
          const rejection = rule(call.events[i]!, i)
          if (rejection !== undefined) return { _tag: "Rejected", ...rejection }
        }
        return result
      })
    }

    const answer = (step: ScriptStep, call: Call): Effect.Effect<ReadonlyArray<EventResult>, TransportError> => {
      switch (step._tag) {
        case "Deliver":
          return Effect.sync(() => applyRules(call, new Array<EventResult>(call.payloads.length).fill(delivered)))
        case "Reject":
          return Effect.sync(() =>
            applyRules(
              call,
              call.payloads.map((_, i): EventResult => {
                const rejection = step.rejections.get(i)
                return rejection === undefined ? delivered : { _tag: "Rejected", ...rejection }
              })
            )
          )
        case "Fail":
          return Effect.fail(step.error)
        case "Delay":
          return Effect.andThen(Effect.sleep(step.duration), answer(step.then, call))
        case "Hang":
          return Effect.never
        case "Respond":
          return step.respond(call)
      }
    }

    const publishBatch = Effect.fn("ScriptedTransport.publishBatch")(function*(events: ReadonlyArray<Uint8Array>) {
      const call = new Call(calls.length, yield* Clock.currentTimeMillis, events)
      calls.push(call)
      const step = steps.shift() ?? defaultStep
      inFlight++
      maxInFlight = Math.max(maxInFlight, inFlight)
      const ready = waiters.filter((w) => calls.length >= w.count)
      waiters = waiters.filter((w) => calls.length < w.count)
      for (const w of ready) yield* Deferred.succeed(w.deferred, undefined)
      return yield* answer(step, call).pipe(
        Effect.onExit((exit) =>
          Effect.map(Clock.currentTimeMillis, (now) => {
            inFlight--
            call.settledAt = now
            call.outcome = outcomeOf(exit)
          })
        )
      )
    })

    const transport = Transport.of({ publishBatch, ping: Effect.suspend(() => pingAnswer) })

    const control: ScriptedTransportControl = {
      push: (...more) => Effect.sync(() => void steps.push(...more)),
      setDefault: (step) => Effect.sync(() => void (defaultStep = step)),
      rejectWhere: (rule) => Effect.sync(() => void rules.push(rule)),
      setPing: (answer) => Effect.sync(() => void (pingAnswer = answer)),
      remaining: Effect.sync(() => steps.length),
      calls: Effect.sync(() => [...calls]),
      callCount: Effect.sync(() => calls.length),
      sentEvents: Effect.sync(() => calls.flatMap((c) => c.events)),
      deliveredEvents: Effect.sync(() => calls.flatMap(deliveredOf)),
      inFlight: Effect.sync(() => inFlight),
      maxInFlight: Effect.sync(() => maxInFlight),
      awaitCalls: (count) =>
        Effect.suspend(() => {
          if (calls.length >= count) return Effect.void
          const deferred = Deferred.makeUnsafe<void>()
          waiters.push({ count, deferred })
          return Deferred.await(deferred)
        }),
      reset: Effect.sync(() => {
        steps = []
        defaultStep = Script.deliver
        rules = []
        pingAnswer = Effect.succeed("pong")
        calls = []
        maxInFlight = inFlight
      })
    }
    return { transport, control }
  })

/** The control of the scripted Transport in the same layer. */
export class ScriptedTransport extends Context.Service<ScriptedTransport, ScriptedTransportControl>()(
  "durable-emitter/testing/ScriptedTransport"
) {
  /** Provides `Transport` (scripted) and `ScriptedTransport` (its control). */
  static readonly layer = (script: ReadonlyArray<ScriptStep> = []): Layer.Layer<Transport | ScriptedTransport> =>
    Layer.effectContext(
      Effect.map(make(script), ({ control, transport }) =>
        Context.make(Transport, transport).pipe(Context.add(ScriptedTransport, control)))
    )
}
