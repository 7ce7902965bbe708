"""`python -m charrnn`: the `charrnn` command, for where the console script is not on the PATH."""
# Kept by hand, not exported: nbdev 2.4.14 exports a cell to a second module (`#| export __main__`) by
# appending it to that file, so every nbdev_export would add another copy (nbdev issue #742).
# nbs/17_cli.ipynb checks this file.
from charrnn.cli import main

if __name__ == '__main__': main()
