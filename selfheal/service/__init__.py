"""The prediction service (FastAPI + uvicorn) and the small client the rest of selfheal uses to talk to it.

Importing this package is cheap: the web stack and the model libraries load only in the modules that need them
(`app`, `server`), so `selfheal.service.client` can be used by recovery and rollback without that cost.
"""
