"""healing: deciding and acting - the pure policy (observations in, decisions out: no I/O, no actions), heal
(observe -> plan -> act), drift retraining, the in-place file fixer, locks and backups, the status metrics, and
guarded.py: heal / retrain / status of a project configured by selfheal.yaml.

May import: core, pipeline, versions, service, recovery. The policy module itself imports only core.clock and
core.config.
"""
