"""`python -m personalizer` runs the command line."""

from personalizer.cli import main

main()
