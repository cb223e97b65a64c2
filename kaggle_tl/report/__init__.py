"""Reports for people: the local leaderboard, tables and figures."""
