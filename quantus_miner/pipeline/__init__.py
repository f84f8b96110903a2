"""The one job pipeline: `runtime` owns jobs, an `executor.Executor` mines them, slots run `executor.run_slot`.

    request ──> MinerRuntime.submit ──> JobFeed(serial, Frontier, flag) ──> Executor.run_job
                    ^                                                            │ one run_slot per device slot:
                    │ Progress(serial, slot, tested, found)                      │ take chunk ─> Device.search
                    └──────────── actor: Job.apply ─> JobTable.end  <────────────┘ report, resize (ChunkSizer)
"""
