"""Run bookkeeping: the files a run writes and reads back (files, machine, timing, validation
curves), the console it prints to, sweeps merged into ablation rows and their comparison, and
the hyper-parameter search's machinery (tuning). Import the modules themselves; nothing is
re-exported here, so that importing one does not pull in the others' dependencies."""
