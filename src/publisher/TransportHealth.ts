/**
 * What the publisher knows about the ingest service, for `Emitter.health`: when a request last
 * succeeded, how many failed since, the last error, and whether that error was a configuration
 * fault. Every sender records each request's end here; the state is one Ref.
 */
import { Clock, Effect, Ref } from "effect"
import type { TransportError } from "../Transport.ts"

export interface TransportState {
  readonly lastSuccessAt: number | undefined
  readonly consecutiveFailures: number
  readonly lastError: string | undefined
  /** The last failure was a configuration fault (UNAUTHENTICATED, PERMISSION_DENIED, UNIMPLEMENTED). */
  readonly misconfigured: boolean
}

export const initial: TransportState = { lastSuccessAt: undefined, consecutiveFailures: 0, lastError: undefined, misconfigured: false }

export const afterSuccess = (now: number): TransportState => ({ ...initial, lastSuccessAt: now })

export const afterFailure = (state: TransportState, error: TransportError): TransportState => ({
  ...state,
  consecutiveFailures: state.consecutiveFailures + 1,
  lastError: error.message,
  misconfigured: error.kind === "config"
})

export interface TransportHealth {
  readonly success: Effect.Effect<void>
  readonly failure: (error: TransportError) => Effect.Effect<void>
  readonly state: Effect.Effect<TransportState>
}

export const make: Effect.Effect<TransportHealth> = Effect.map(Ref.make(initial), (ref) => ({
  success: Effect.flatMap(Clock.currentTimeMillis, (now) => Ref.set(ref, afterSuccess(now))),
  failure: (error) => Ref.update(ref, (state) => afterFailure(state, error)),
  state: Ref.get(ref)
}))
