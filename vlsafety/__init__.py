"""vlsafety: build, update and run safety benchmarks for vision-language models.

Implements VLSafetyBencher (four agents: preprocessing, generation, augmentation,
selection) and the ELITE evaluator on Spark, with Delta Lake tables and MLflow runs.
"""

__version__ = "0.1.0"
