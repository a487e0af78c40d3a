"""Benchmarks: proxy overhead against direct (``bench.overhead``), routing quality (``bench.routing_sim``)."""
