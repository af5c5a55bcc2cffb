# Shortcuts; the README's two commands are scripts/up and scripts/test (they need only Python).
.PHONY: up test bench lint clean

up:
	./scripts/up

test:
	./scripts/test

bench:
	.venv/bin/python -m benchmarks

lint:
	.venv/bin/ruff check . && .venv/bin/mypy

clean:
	rm -rf .venv .pytest_cache .mypy_cache .ruff_cache
