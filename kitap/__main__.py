"""``python -m kitap``: the same as the ``kitap`` command."""
from kitap.cli import main

main()
