"""core: what every layer stands on - configuration (params.yaml, validated), user-facing errors, atomic file
I/O and hashing, timestamps, the audit trail, alerts, and the workspace contract (every path the project reads or
writes, named once, and the production record's reader).

May import: nothing of selfheal outside core. Imports of heavy libraries (pandas, sklearn, dvc, mlflow,
evidently) are not allowed here: every command loads core.
"""
