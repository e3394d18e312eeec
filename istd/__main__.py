"""`python -m istd` runs the CLI (also what `torchrun -m istd` calls)."""

from istd.cli import main

if __name__ == "__main__":
    main()
