"""docker_runtime: the Docker, Compose and subprocess layer, and the HTTP probe of what runs.

The one place that starts subprocesses (commands.py), calls `docker compose` for an
environment (compose.py), lists a project's containers and probes an app's health URL.
"""
