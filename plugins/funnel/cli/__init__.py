"""The command line: ``python -m funnel.cli``."""
