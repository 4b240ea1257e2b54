"""The voiceconv bridge benchmark (see ``docs/benchmarks.md``; run ``python -m bench.run``)."""
