"""One test module per Redis script (deploy_state/scripts), each on a real Redis server."""
