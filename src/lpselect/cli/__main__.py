"""``python -m lpselect.cli`` (what torchrun and accelerate launch run): the ``lpselect`` command."""

from lpselect.cli import main

if __name__ == "__main__":
    main()
