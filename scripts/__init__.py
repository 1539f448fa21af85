"""Developer scripts: generators for docs and completions (importable by the tests)."""
