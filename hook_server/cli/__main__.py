"""`python -m hook_server.cli`: how `deployhook up` starts its worker and poller processes."""

from . import main

main()
