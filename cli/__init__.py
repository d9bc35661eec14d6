"""Command-line entry points of mamol."""
