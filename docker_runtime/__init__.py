"""docker_runtime: the Docker, Compose and subprocess layer, and the HTTP probe of what runs.

The one place that runs the pipeline's commands (commands.py; deploy_cli's supervisor and demo
start deployhook's own processes), calls `docker compose` for an environment (compose.py), keeps
its project directory (projectdir.py), lists a project's containers and probes an app's health URL.
"""
