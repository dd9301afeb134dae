"""ops: what people and CI read - GitHub Actions outputs and summaries, the Markdown report and its plots, the
DVC experiment grid, the fault-injection drill, `selfheal init` (selfheal.yaml for a foreign DVC project), and
throwaway projects for tests, benchmarks and the drill (sandbox copies of ours; foreign: one shaped like
example-get-started).

May import: every layer below it. Only the CLI imports ops.
"""
