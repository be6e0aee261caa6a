"""`make bench`: the billing API under load, against the floor of its own debit transaction.

`python -m bench --help` lists the knobs; docs/performance.md holds the method and the last
measured figures (written by the run).
"""
