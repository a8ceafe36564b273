"""`python -m vidcls ...` runs the command line (and `torchrun -m vidcls ...` trains distributed)."""

from .cli import main

main()
