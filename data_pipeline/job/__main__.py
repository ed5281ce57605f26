"""`python -m data_pipeline.job ...`: the render job (data_pipeline.job.run)."""

from data_pipeline.job.config import register_configs
from data_pipeline.job.run import main

register_configs()
main()
