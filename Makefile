.PHONY: setup up down status test lint fuzz-api sdk proto bench bench-shards bench-domain bench-batch bench-custom-fields bench-unique-fields bench-duplicates bench-timeline bench-import bench-suite bench-grpc bench-floor

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
	$(VENV)/python -m pytest -q -p no:cacheprovider tests/unit/test_layers.py

# Schemathesis (every check) against a freshly deployed stack, with many more examples
# per operation than the suite's 3 (tests/e2e/test_api_fuzz.py); it prints the requests
# by status. FUZZ_EXAMPLES=200 for a long one. Figures: docs/api.md.
FUZZ_EXAMPLES ?= 50
fuzz-api:
	NEXTFLOW_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(VENV)/python -m pytest -q -s -p no:cacheprovider tests/e2e/test_api_fuzz.py

# The typed Python client (nextflow_client) from the merged OpenAPI document, into
# sdk/python (scripts/generate_sdk.py; URL=http://... to generate from a running API).
sdk: setup
	$(VENV)/python scripts/generate_sdk.py sdk/python $(if $(URL),--url $(URL))

# The gRPC API's Python code (nextflow/v1, checked in) from proto/nextflow/v1/*.proto.
proto:
	$(VENV)/python -m grpc_tools.protoc -I proto --python_out=. --pyi_out=. \
		--grpc_python_out=. proto/nextflow/v1/*.proto

bench:
	$(VENV)/python bench/get_customer.py

bench-shards:
	$(VENV)/python bench/shard_moves.py

bench-domain:
	$(VENV)/python bench/domain.py

bench-batch:
	$(VENV)/python bench/batch.py

bench-custom-fields:
	$(VENV)/python bench/custom_fields.py

bench-unique-fields:
	$(VENV)/python bench/unique_fields.py

bench-duplicates:
	$(VENV)/python bench/duplicates.py

bench-timeline:
	$(VENV)/python bench/timeline.py

bench-import:
	$(VENV)/python bench/import_customers.py

bench-suite:
	bench/run

bench-grpc:
	$(VENV)/python bench/grpc_customer.py

bench-floor:
	$(VENV)/python bench/hop_floor.py
