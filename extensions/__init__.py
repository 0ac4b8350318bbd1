"""Extensions (MCP servers behind mcpo): filled in by the extensions issue."""
