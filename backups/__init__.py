"""Backups: filled in by the backup issue."""
