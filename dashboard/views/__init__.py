"""One module per tab of the dashboard, each with one ``render(col, index_dir, generation)``."""
