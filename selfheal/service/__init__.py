"""service: the prediction service (FastAPI + uvicorn), its process (pid file, detached start, sure stop), and
the small client the rest of selfheal uses to talk to it (health, reload).

May import: core and the model artifact of pipeline (selfheal.pipeline.artifact). Never mlflow, evidently or
dvc, nor versions, healing, recovery or ops. Importing this package is cheap: the web stack and the model
libraries load only in the modules that need them (`app`, `server`), so `selfheal.service.client` costs little.
"""
