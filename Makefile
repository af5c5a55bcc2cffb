# Shortcuts; the README's two commands are scripts/up and scripts/test (they need only Python).
.PHONY: up test bench lint clean postgis chromium

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

# The peer of the nearest-unit benchmark (PostGIS KNN) and the browser of the console tests,
# from Debian's packages; .ci/run installs chromium by itself.
postgis:
	apt-get install -y postgresql-15 postgresql-15-postgis-3

chromium:
	apt-get install -y chromium
