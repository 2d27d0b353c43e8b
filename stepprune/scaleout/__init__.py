"""Scale-out: the generate and score stages (and bench's generation) on a Ray cluster.

``options`` holds the executor settings the stage configs share, ``cluster`` connects to Ray,
``pool`` runs a Ray Data actor pool in which every actor writes its own tagged shards, and
``workers`` holds the per-actor engines (a generate backend, a rescorer). Ray is the optional
extra ``stepprune[ray]`` and is imported only when ``--executor ray`` is asked for.
"""
