"""deploy_text: how deployhook writes for people, one way everywhere: short shas, durations, sizes, masked secrets."""
