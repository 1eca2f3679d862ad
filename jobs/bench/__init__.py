"""The benchmark, `python -m jobs.bench` (see __main__.py): stages alone, pipelines, A/B cases and the report.

Nothing is imported here, so that the processes the benchmark spawns load only the module whose function they run.
"""
