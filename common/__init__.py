"""What every layer shares: the expected failures and their exit codes."""
