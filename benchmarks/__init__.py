"""Speed benchmarks of the project: ``python -m benchmarks.run --help``."""
