/**
 * Expected failures become one readable line on stderr and a non-zero exit code (effect/cli renders
 * a `CliError.UserError` that way); only defects, i.e. bugs, keep their stack traces.
 */
import { Effect, Schema } from "effect"
import { CliError } from "effect/cli"
import { oneLine } from "./format.ts"

/** A failure of a command that is not a bug: bad input, a refused action, a failed check. */
export class CommandFailed extends Schema.TaggedError<CommandFailed>()("CommandFailed", {
  reason: Schema.String
}) {
  override get message() {
    return this.reason
  }
}

/** The underlying error's message, when it says more (e.g. "connect ECONNREFUSED 127.0.0.1:5432"). */
const underlying = (error: object): string | undefined => {
  const reason = (error as { readonly reason?: unknown }).reason
  const cause = (typeof reason === "object" && reason !== null ? (reason as { readonly cause?: unknown }).cause : undefined) ??
    (error as { readonly cause?: unknown }).cause
  return cause instanceof Error && cause.message !== "" ? cause.message : undefined
}

const describe = (error: unknown): string => {
  if (typeof error === "object" && error !== null) {
    const tag = (error as { readonly _tag?: unknown })._tag
    const message = (error as { readonly message?: unknown }).message
    if (tag === "ConfigError" && typeof message === "string") return `invalid environment: ${oneLine(message, 300)}`
    if (typeof message === "string" && message !== "") {
      const more = underlying(error)
      return oneLine(more === undefined || message.includes(more) ? message : `${message}: ${more}`, 500)
    }
    if (typeof tag === "string") return tag
  }
  return oneLine(String(error), 500)
}

/** Maps every typed failure of a handler to a UserError carrying its message. */
export const userFacing = <A, E, R>(self: Effect.Effect<A, E, R>): Effect.Effect<A, CliError.UserError, R> =>
  Effect.mapError(self, (error) =>
    error instanceof CliError.UserError ? error : new CliError.UserError({ cause: error, userMessage: describe(error) }))
