"""``python -m planner.cli``: the same as the ``specplan`` console script."""
from planner.cli import main

main()
