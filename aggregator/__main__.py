"""`python -m aggregator` is the `aggregator` command."""

from .cli import main

main()
