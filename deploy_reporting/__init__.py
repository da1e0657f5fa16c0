"""deploy_reporting: telling the outside world about deployments (GitHub, Discord, Slack, a generic webhook)."""
