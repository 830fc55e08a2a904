#!/usr/bin/env node
// The `durable-emitter` command (package.json "bin"). Plain JavaScript, so it runs anywhere:
// - in a clone of the repository it runs the TypeScript sources (./main.ts; Node >= 22.18 strips
//   types), so there is nothing to build and nothing stale;
// - installed from npm (under node_modules, where Node does not strip types) or on a Node without
//   type stripping, it runs the build (../../dist/cli/main.js, made by `npm run build`).
import { existsSync, realpathSync } from "node:fs"
import { fileURLToPath, pathToFileURL } from "node:url"

const here = realpathSync(fileURLToPath(import.meta.url))
const source = new URL("./main.ts", pathToFileURL(here))
const built = new URL("../../dist/cli/main.js", pathToFileURL(here))
const canStripTypes = Boolean(process.features.typescript)
const underNodeModules = here.split(/[\\/]/).includes("node_modules")

if (canStripTypes && !underNodeModules && existsSync(source)) {
  await import(source.href)
} else if (existsSync(built)) {
  await import(built.href)
} else {
  process.stderr.write(
    `durable-emitter: cannot start: ${fileURLToPath(built)} is missing (run \`npm run build\`)` +
      (canStripTypes ? "\n" : `, and this Node.js (${process.version}) cannot run the TypeScript sources (Node >= 22.18 can)\n`)
  )
  process.exitCode = 1
}
