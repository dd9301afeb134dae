"""One thin entry module per DVC stage, run as `python -m stages.<name>` from the project root."""
