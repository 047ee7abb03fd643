"""Questions asked of many runs: the seed papers' claims, the classroom lessons, task orders."""
