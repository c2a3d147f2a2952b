"""`genre launch`: start a distributed job's scheduler, servers and workers, and stop them all when one dies.

`roles` plans each process (its command and the DMLC_* environment MXNet's own launcher gives it, locally or
over ssh); `supervisor` runs them, streams their output with a role prefix and watches them.
"""
