.PHONY: setup up down status test lint bench bench-shards bench-domain bench-import bench-suite

VENV := .venv/bin

setup:
	scripts/setup.sh

up: setup
	$(VENV)/nextflow up

down:
	$(VENV)/nextflow down

status:
	$(VENV)/nextflow status

test: setup
	$(VENV)/python -m pytest -q

lint:
	$(VENV)/ruff check .
	$(VENV)/mypy

bench:
	$(VENV)/python bench/get_customer.py

bench-shards:
	$(VENV)/python bench/shard_moves.py

bench-domain:
	$(VENV)/python bench/domain.py

bench-import:
	$(VENV)/python bench/import_customers.py

bench-suite:
	bench/run
