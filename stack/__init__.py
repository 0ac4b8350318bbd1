"""The library: config, targets, health, lifecycle, display. Never imports tasks/."""
