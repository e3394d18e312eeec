"""CLI commands (placeholder until the owning issue lands)."""

import typer


def register(app: typer.Typer) -> None:
    """Add this module's commands to the root app."""
