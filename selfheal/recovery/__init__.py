"""recovery: keeping the prediction service up - the recovery ladder (cache -> config -> process ->
docker), restarts with a warm standby, and the watch loop.

May import: core, pipeline, service. Never healing or ops (heal calls the ladder, not the other way round).
"""
