/**
 * One deadline for the whole shutdown. The Sequencer's drain (commit what is queued) and the
 * Publisher's delivery (deliver what was accepted) run one after the other when the scope closes;
 * each with a `shutdownTimeout` of its own, shutdown could take twice as long as promised. The
 * deadline is fixed by the first finalizer that asks, and every later one gets what is left.
 * Optional: a Sequencer or Publisher built alone (tests) keeps its own full timeout.
 */
import { Clock, Context, Effect, Layer } from "effect"

export class ShutdownDeadline extends Context.Service<ShutdownDeadline, {
  /** Milliseconds left until the shutdown deadline, fixed at the first call. */
  readonly remainingMs: Effect.Effect<number>
}>()("durable-emitter/ShutdownDeadline") {
  static readonly layer = (shutdownTimeoutMs: number): Layer.Layer<ShutdownDeadline> =>
    Layer.sync(ShutdownDeadline, () => {
      let deadline: number | undefined
      return ShutdownDeadline.of({
        remainingMs: Effect.map(Clock.currentTimeMillis, (now) => {
          deadline ??= now + shutdownTimeoutMs
          return Math.max(0, deadline - now)
        })
      })
    })
}

/** What a finalizer may still spend: the shared deadline's remainder, or `ownMs` without one. */
export const remainingOr = (ownMs: number): Effect.Effect<number> =>
  Effect.flatMap(Effect.serviceOption(ShutdownDeadline), (deadline) =>
    deadline._tag === "Some" ? deadline.value.remainingMs : Effect.succeed(ownMs))
