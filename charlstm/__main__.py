"""`python -m charlstm` runs the command line, as the `charlstm` script does."""

from .cli import main

if __name__ == "__main__":
    main()
