"""Batch scoring of every customer: segments, recommendations, churn/value and the next send time.

`job.score_all` prepares the customers and loads the champions (models.py), then hands the
partitions to the local engine (local.py) or the Spark engine (spark.py); both run
`scoring.score_partition` and write the layout of output.py (`output.read_output` reads it back).
`cli.score_all` is the `personalizer score all` verb. Nothing is imported here, so the command
line starts fast.
"""
