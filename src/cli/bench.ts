/**
 * `durable-emitter bench [args…]`: runs the project's benchmark (bench/main.ts) in a child process
 * with the remaining arguments, and exits with its exit code.
 */
import { spawn } from "node:child_process"
import * as fs from "node:fs"
import { fileURLToPath } from "node:url"
import { Effect, Runtime, Schema } from "effect"
import { Argument, CliError, Command } from "effect/cli"
import { CommandFailed, userFacing } from "./errors.ts"

/** The child's exit code becomes ours; its own output already said what went wrong. */
class ChildFailed extends Schema.TaggedError<ChildFailed>()("ChildFailed", {
  what: Schema.String,
  code: Schema.Number
}) {
  override get message() {
    return `${this.what} exited with code ${this.code}`
  }
  override get [CliError.userMessage]() {
    return this.message
  }
  override get [Runtime.errorExitCode]() {
    return this.code
  }
}

/** bench/main.ts of the repository this file belongs to (src/cli or dist/cli, two levels down). */
const benchMain = () => fileURLToPath(new URL("../../bench/main.ts", import.meta.url))

/** The benchmark ships with the source repository, not with the npm package: no command without it. */
export const benchInstalled = (): boolean => fs.existsSync(benchMain())

const run = (script: string, args: ReadonlyArray<string>) =>
  Effect.callback<number>((resume) => {
    const child = spawn(process.execPath, [script, ...args], { stdio: "inherit" })
    child.once("error", (error) => resume(Effect.die(error)))
    child.once("exit", (code, signal) => resume(Effect.succeed(code ?? (signal === null ? 1 : 128 + signalNumber(signal)))))
    return Effect.sync(() => {
      child.kill("SIGTERM")
    })
  })

const signalNumber = (signal: NodeJS.Signals): number => {
  const n = (fs.constants as unknown as { readonly signals?: Record<string, number> }).signals?.[signal]
  return typeof n === "number" ? n : 1
}

export const benchCommand = Command.make("bench", {
  args: Argument.String("args").pipe(
    Argument.withDescription("passed to the benchmark as they are, e.g. `e2e --quick --json`"),
    Argument.variadic()
  )
}, ({ args }) =>
  Effect.gen(function*() {
    const script = benchMain()
    if (!fs.existsSync(script)) {
      return yield* new CommandFailed({
        reason: `the benchmark is not installed (${script}): it ships with the source repository; run it from a clone`
      }).pipe(userFacing)
    }
    const code = yield* run(script, args)
    if (code !== 0) return yield* new ChildFailed({ what: "the benchmark", code })
  })).pipe(
  Command.withShortDescription("run the benchmark (bench/main.ts) with the remaining arguments"),
  Command.withDescription(
    "Run the benchmark scenarios (bench/main.ts in the source repository) against DATABASE_URL: write path, end to end, " +
      "backlog drain, each with a raw-PostgreSQL baseline. Every argument is passed on; `durable-emitter bench -- --help` shows the benchmark's own options."
  ),
  Command.withExamples([
    { command: "durable-emitter bench", description: "every scenario" },
    { command: "durable-emitter bench e2e --quick --json" },
    { command: "durable-emitter bench -- --help", description: "the benchmark's own options" }
  ])
)

/**
 * Everything after `bench` belongs to the benchmark, flags included: this inserts the `--` that
 * tells the parser so (except for a lone --help, which shows this command's help).
 */
const globalFlagsWithValue = new Set(["--log-level", "--completions"])

export const passBenchArgs = (argv: ReadonlyArray<string>): ReadonlyArray<string> => {
  const at = argv.findIndex((arg, i) => !arg.startsWith("-") && !globalFlagsWithValue.has(argv[i - 1] ?? ""))
  if (at === -1 || argv[at] !== "bench") return argv
  const rest = argv.slice(at + 1)
  if (rest.length === 0 || rest[0] === "--") return argv
  if (rest.length === 1 && (rest[0] === "--help" || rest[0] === "-h")) return argv
  return [...argv.slice(0, at + 1), "--", ...rest]
}
