"""Benchmarks that jaxprov builds and scores itself (`jaxprov bench ...`)."""
