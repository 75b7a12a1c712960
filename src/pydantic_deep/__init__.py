"""pydantic-deep."""
