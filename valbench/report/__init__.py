"""Reports derived from the results store: tables (and later figures, leaderboards)."""
