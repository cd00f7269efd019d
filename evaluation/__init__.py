"""Retrieval and answer evaluation: labelled questions, IR metrics, and the data sets that feed them."""
