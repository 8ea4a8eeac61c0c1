"""`python -m sae_tutorial ...`: the command line (sae_tutorial/cli/)."""
from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
