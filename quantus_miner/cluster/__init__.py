"""Scale-out on a Dask distributed cluster: chunk tasks run on workers, a trio-side executor feeds them.

`tasks` runs on the Dask workers (the engine and each job's constants built once per process),
`worker` is the `quantus-miner worker` process, `executor` is the service side that keeps every
worker thread busy with chunks and turns their results into the runtime's `Progress` reports.
"""
