"""Jobs that the engines run (spark-submit, flink run), not tests: pytest does not import them."""
collect_ignore = ["sum_of_squares.py"]
