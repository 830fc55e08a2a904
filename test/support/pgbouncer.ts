/**
 * A real PgBouncer in front of the test database, in transaction pooling: each transaction (and
 * each statement outside one) may run on another server connection, as in production behind it.
 * Started from the installed binary into a temporary directory, on a port of its own; stopped and
 * removed when the scope closes. `pgbouncerBinary` is undefined when none is installed (Debian's
 * package `pgbouncer`; CI installs it).
 */
import { Effect } from "effect"
import { spawn } from "node:child_process"
import { chmodSync, existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs"
import { createConnection, createServer } from "node:net"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { databaseUrl } from "./pg.ts"

export const pgbouncerBinary: string | undefined = [
  process.env.PGBOUNCER,
  "/usr/sbin/pgbouncer",
  "/usr/bin/pgbouncer",
  "/usr/local/bin/pgbouncer"
].find((candidate): candidate is string => candidate !== undefined && existsSync(candidate))

export interface PgBouncer {
  /** The test database's URL with PgBouncer's host and port. */
  readonly url: string
}

const freePort = () =>
  new Promise<number>((resolve, reject) => {
    const server = createServer()
    server.once("error", reject)
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address() as { port: number }
      server.close(() => resolve(port))
    })
  })

const accepts = (port: number) =>
  new Promise<boolean>((resolve) => {
    const socket = createConnection({ host: "127.0.0.1", port })
    socket.once("connect", () => (socket.destroy(), resolve(true)))
    socket.once("error", () => resolve(false))
  })

/**
 * PgBouncer with `poolSize` server connections per database and user: fewer than the client's
 * pool, so consecutive statements of one client connection land on different server connections.
 */
export const pgbouncer = (poolSize: number) =>
  Effect.acquireRelease(
    Effect.promise(async () => {
      const upstream = new URL(databaseUrl)
      const user = decodeURIComponent(upstream.username || "postgres")
      const dir = mkdtempSync(join(tmpdir(), "pgbouncer-"))
      // PgBouncer refuses to run as root; as root it is started as the database's user, which
      // must read its files.
      chmodSync(dir, 0o755)
      const port = await freePort()
      const ini = join(dir, "pgbouncer.ini")
      writeFileSync(join(dir, "users.txt"), `"${user}" ""\n`)
      writeFileSync(
        ini,
        [
          "[databases]",
          `* = host=${upstream.hostname} port=${upstream.port || 5432}`,
          "[pgbouncer]",
          "listen_addr = 127.0.0.1",
          `listen_port = ${port}`,
          "unix_socket_dir =",
          "auth_type = trust",
          `auth_file = ${join(dir, "users.txt")}`,
          "pool_mode = transaction",
          `default_pool_size = ${poolSize}`,
          "max_client_conn = 100"
        ].join("\n") + "\n"
      )
      chmodSync(ini, 0o644)
      chmodSync(join(dir, "users.txt"), 0o644)
      const asRoot = process.getuid?.() === 0
      const child = spawn(pgbouncerBinary!, [...(asRoot ? ["-u", user] : []), ini], { stdio: ["ignore", "ignore", "pipe"] })
      let output = ""
      child.stderr.on("data", (chunk: Buffer) => void (output += chunk.toString()))
      const deadline = Date.now() + 10_000
      while (!(await accepts(port))) {
        if (child.exitCode !== null || Date.now() > deadline) {
          child.kill("SIGKILL")
          rmSync(dir, { recursive: true, force: true })
          throw new Error(`pgbouncer did not start: ${output.slice(-2_000)}`)
        }
        await new Promise((r) => setTimeout(r, 50))
      }
      const url = new URL(databaseUrl)
      url.hostname = "127.0.0.1"
      url.port = String(port)
      return { handle: { url: url.toString() } satisfies PgBouncer, child, dir }
    }),
    ({ child, dir }) =>
      Effect.promise(() =>
        new Promise<void>((resolve) => {
          const done = () => (rmSync(dir, { recursive: true, force: true }), resolve())
          if (child.exitCode !== null) return done()
          child.once("exit", done)
          child.kill("SIGINT")
        })
      )
  ).pipe(Effect.map(({ handle }) => handle))
