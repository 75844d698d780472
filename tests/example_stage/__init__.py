"""A stage written as a user would add one, to prove that a stage is one folder plus one line (test_stage_units)."""
