"""`python -m charlstm` runs the command line, as the `charlstm` script does; so does
`torchrun ... -m charlstm train ...`, once in each process it starts."""

from .cli import main

if __name__ == "__main__":
    main()
