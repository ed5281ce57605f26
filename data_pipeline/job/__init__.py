"""The render job behind `make render` (`python -m data_pipeline.job`): its config, the driver
(run), the Ray actors' render workers (worker), the state in OUT (ledger), the summary and the
data-quality report (quality, quality_html)."""
