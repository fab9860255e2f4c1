"""Lead scoring with scikit-learn on Ray tasks (see service.py)."""
