"""`python -m deploy_cli`: how `deployhook up` starts its worker and poller processes."""

from . import main

main()
