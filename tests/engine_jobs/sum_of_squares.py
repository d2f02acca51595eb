"""A small PySpark job for the local Spark cluster's tests: the sum of the squares of 1..N, computed by
the worker's executors; prints "RESULT <sum>"."""
import sys

from pyspark.sql import SparkSession

spark = SparkSession.builder.appName("toonbeam-check").getOrCreate()
n = int(sys.argv[1])
print("RESULT", spark.sparkContext.parallelize(range(1, n + 1), 4).map(lambda x: x * x).sum())
spark.stop()
