"""The dashboard's data: views (plain data for the pages), figures (pure Plotly builders), tables, the handout."""
