"""Generated from proto/nextflow/v1 by `make proto`; do not edit."""
