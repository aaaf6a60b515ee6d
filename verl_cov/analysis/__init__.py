"""``verl-cov fit`` / ``compare``: read verl runs' logs, pair entropy with validation scores, fit the
entropy–performance law and forecast the ceiling. numpy only (matplotlib for plots); never verl or torch."""
