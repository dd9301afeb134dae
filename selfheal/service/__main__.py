"""`python -m selfheal.service`: the service's own entry point (see server.py)."""

from selfheal.core.errors import run_main
from selfheal.service.server import main

if __name__ == "__main__":
    run_main(main)
