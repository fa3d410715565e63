"""Federated training with Flower: a server and one client per site, as real processes.

A federated run is a training strategy of the engine, usable by any family that
provides a site trainer (:class:`casebook.engine.federated.client.SiteTrainer`): the
family says how one site trains its model for some epochs and scores it on its own
validation patients; this package does the rest.

- :mod:`.sites`: which patients belong to which site (the manifest's site column, or
  a seeded Dirichlet label-skew split), each site keeping its own train, validation
  and test patients.
- :mod:`.strategy`: FedAvg, FedProx and FedAdam from Flower, optionally with
  client-side differential privacy, inside a wrapper that checks every update's
  shapes and checkpoints every round.
- :mod:`.server` and :mod:`.client`: the two process entry points
  (``python -m casebook.engine.federated.server JOB``, ``... .client JOB SITE``).
- :mod:`.launch`: starts the server and the clients on 127.0.0.1, restarts a killed
  server from its last round, and ends every process it started, and only those.
- :mod:`.privacy`: the (epsilon, delta) of the Gaussian mechanism over the rounds.

Flower's deployment engine (SuperLink, SuperNodes and ``flwr run``) installs the
training code as a packaged app per run; the compatibility API used here
(``flwr.server.start_server`` and ``flwr.compat.client.app.start_client``, gRPC
bidirectional streaming) runs the project's own code in its own processes, which is
what a Snakemake job and a SLURM step can start, watch and stop. See CONTRIBUTING.md.
"""
