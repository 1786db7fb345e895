"""`python -m mlp_cli` runs the CLI, which is how torchrun starts one process per rank."""

from mlp_cli.cli import main

if __name__ == "__main__":
    main()
