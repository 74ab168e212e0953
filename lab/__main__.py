"""``python -m lab`` is the ``rightsizer`` command."""

from lab.cli import main

if __name__ == "__main__":
    main()
