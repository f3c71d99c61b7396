"""Online prediction: federated serving per party and the enclave serving cluster.

* :mod:`~atoll.serving.protocol`: joint scoring (guest and host roles, protection levels);
* :mod:`~atoll.serving.replicas`: replicas of a party, client-side balancing and failover;
* :mod:`~atoll.serving.canary`: canary release by request id, promotion and rollback;
* :mod:`~atoll.serving.models`: the one adapter from algorithm names to load / partial / combine;
* :mod:`~atoll.serving.parts`, :mod:`~atoll.serving.features`: model parts and feature sources;
* :mod:`~atoll.serving.http`: the guest's predict API (HTTP/JSON) and Prometheus metrics;
* :mod:`~atoll.serving.cluster`: the enclave serving cluster (ClusterManager, heartbeats, key sync).
"""
