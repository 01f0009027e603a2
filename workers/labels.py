"""The labels that mark a container as Airlock's. Nothing else is ever touched."""

MANAGED = "org.airlock.managed"
FLEET = "org.airlock.fleet"
ROLE = "org.airlock.role"
JOB = "org.airlock.job"
ATTEMPT = "org.airlock.attempt"
HOST = "org.airlock.host"
DEADLINE = "org.airlock.deadline"
CREATED = "org.airlock.created"
NAME = "org.airlock.name"
OWNER = "org.airlock.owner"  # "<host>:<pid of the worker's main process>": pool containers, holders

ROLE_JOB = "job"
ROLE_POOL = "pool"
ROLE_HOLDER = "holder"
