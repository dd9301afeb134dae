"""ops: what people and CI read - GitHub Actions outputs and summaries, the Markdown report and its plots, the
DVC experiment grid, the fault-injection drill, and throwaway sandbox copies of the project (tests,
benchmarks, the drill).

May import: every layer below it. Only the CLI imports ops.
"""
