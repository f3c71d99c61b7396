"""Trusted execution: the TEE route (enclaves, attestation, sealed data, the Data Lab flow).

    from atoll.tee import datalab
    from atoll.tee.simulated import SimulatedBackend, SimulatedPlatform
    enclave = SimulatedBackend().launch("tee-ml", workdir="enclave/")   # SIMULATED: NO HARDWARE PROTECTION
    policy = SimulatedPlatform().policy([enclave.measurement])
    target, attested = datalab.attest_enclave(enclave.address, policy)   # then datalab.encrypt_table, run_job

Modules: :mod:`~atoll.tee.base` (interface, policy, backend registry), :mod:`~atoll.tee.measure`
(workloads and measurements), :mod:`~atoll.tee.simulated`, :mod:`~atoll.tee.dcap` (real SGX/TDX
quotes), :mod:`~atoll.tee.gramine` (SGX launch path), :mod:`~atoll.tee.channel` (RA-TLS),
:mod:`~atoll.tee.envelope` (encrypted data files), :mod:`~atoll.tee.authorisation`,
:mod:`~atoll.tee.keyrelease`, :mod:`~atoll.tee.training` (inside the enclave),
:mod:`~atoll.tee.datalab` (host side), :mod:`~atoll.tee.cli` (``atoll tee``).

This package imports nothing at load time: the enclave image holds only the files its
workload lists (:data:`atoll.tee.measure.WORKLOADS`).
"""
