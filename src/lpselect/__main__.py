"""``python -m lpselect``: the same app as the ``lpselect`` command."""

from lpselect.cli import main

if __name__ == "__main__":
    main()
