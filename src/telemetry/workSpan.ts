/**
 * Spans of background work, made only when the work did something: a retransmit tick that claimed
 * rows, an expiry that removed some. An idle emitter polls every second; a span per poll would
 * start a root trace every second and bury the ones that matter.
 */
import { Clock, Context, Effect, Exit, Option, Tracer } from "effect"

/**
 * Runs `self` with the tracer off (no span for it or for the store and driver calls in it) and,
 * when `attributesOf` finds that it did something, records one root span for it afterwards,
 * dated from its start.
 */
export const spanIfWorked = <A>(name: string, attributesOf: (result: A) => Record<string, unknown> | undefined) =>
<E, R>(self: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> =>
  Effect.withFiber((fiber) => {
    const tracer = fiber.getRef(Tracer.Tracer)
    const clock = fiber.getRef(Clock.Clock)
    const startTime = clock.currentTimeNanosUnsafe()
    return Effect.tap(Effect.withTracerEnabled(self, false), (result) =>
      Effect.sync(() => {
        const attributes = attributesOf(result)
        if (attributes === undefined) return
        const span = tracer.span({
          name, parent: Option.none(), annotations: Context.empty(), links: [], startTime, kind: "internal", root: true, sampled: true
        })
        for (const [key, value] of Object.entries(attributes)) span.attribute(key, value)
        span.end(clock.currentTimeNanosUnsafe(), Exit.void)
      }))
  })
