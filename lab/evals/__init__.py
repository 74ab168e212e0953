"""Task evals: JSONL suites, scorers, grammar / JSON-schema constraints, the runner and its
statistics. Importing this package loads nothing heavy (no llama.cpp, no numpy)."""
