"""pipeline: what the DVC stages compute - data checks and schema inference, data fixes, training, evaluation
(the gate's verdict), drift, MLflow tracking, the model artifact (save / load / verify), the synthetic data;
for data larger than memory, mergeable profiles (profiles), drift from them (profile_drift), the engines that run
partitions (engine: local or dask) and the partitioned fix (partitioned); the warm interpreter the stages fork
from (preload).

May import: core. Never versions, healing, recovery, service or ops: a stage's result must not depend on the
state of the registry or of a running service. The stages (stages/*.py) import only core and pipeline, and
dvc.yaml declares both folders as their deps, so editing any module here reruns the stages that run it.
"""
