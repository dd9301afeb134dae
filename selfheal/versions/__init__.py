"""versions: model versions in git + DVC - git/DVC plumbing, the registry (GTO-format tags), checking a
revision's stage outputs out of the DVC cache (md5-verified, directory outputs too), promotion and rollback -
for our pipeline and, through selfheal.yaml, for any configured DVC project (configured.py).

May import: core, pipeline. Never the service: promote and rollback take a `reload` callback (the service
client provides one) to tell a running service that production's bytes changed.
"""
