"""The render job behind `make render` (`python -m data_pipeline.job`): its config, the driver
(run) and what it plans and records (state), the Ray actors' render workers (worker) and their
work folders (locks), the state in OUT (ledger), the summary and the data-quality report
(quality reads it, quality_report holds it, quality_html draws it)."""
