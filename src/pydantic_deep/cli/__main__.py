"""`python -m pydantic_deep.cli` runs the `pydantic-deep` command."""

from ._app import main

if __name__ == "__main__":
    main()
